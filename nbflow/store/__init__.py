"""The run store: a durable journal of runs and a content-addressed result cache.

Every run is recorded in one SQLite journal under ``.nbflow/`` (or ``$NBFLOW_HOME``), and
every cacheable task result is stored by content, so that re-running a workflow after an
edit recomputes only what really changed, and re-running after a crash redoes only the
tasks that had not committed.  Modules, one job each:

* :mod:`.store`       where the store lives; the per-process Store object
* :mod:`.journal`     SQLite schema, migrations, the group-commit writer thread
* :mod:`.recorder`    the event-stream subscriber that writes runs, task runs and events
* :mod:`.blobs`       result files: atomic writes, checksum on every read
* :mod:`.serialize`   results to bytes (npy for arrays, pickle 5 / cloudpickle otherwise)
* :mod:`.hashing`     content hashes of values (the inputs of cache keys)
* :mod:`.fingerprint` code fingerprints (normalised AST, transitive helpers and globals)
* :mod:`.cache`       per-run lookups, commits, reasons and explanations
* :mod:`.history`     ``runs()`` and ``load_run()``
* :mod:`.plan`        ``plan(wf)``: hits and misses predicted without running
* :mod:`.gc`          retention
* :mod:`.signing`     HMAC-SHA256 signatures of stored results (key outside the store)
* :mod:`.guard`       a store failing mid-run degrades the run to "no cache"
* :mod:`.settings`    NBFLOW_COMMIT_WINDOW / NBFLOW_LOCK_TIMEOUT / NBFLOW_LOCK_NOTICE
* :mod:`.privacy`     private modes, the warning for a store open to others
* :mod:`.tidy`        temporary files of killed writers, removed at open
* :mod:`.readonly`    reading the history of a store that cannot be written
* :mod:`.doctor`      ``nbflow doctor``: integrity check and repair
* :mod:`.inuse`       who else writes to a journal (a repair refuses while anyone does)

Importing this package attaches the journal to every run (``nf.on_run``).
"""

from __future__ import annotations

from ..core.errors import StoreIntegrityError
from ..core.explain import Explanation
from . import hooks as _hooks  # noqa: F401  (registers the journal subscriber)
from .gc import GcReport, gc
from .history import StoredError, StoredRun, load_run, runs
from .journal import StoreError
from .plan import plan
from .store import NbflowStoreWarning, Store, get_store, store_home

__all__ = [
    "Explanation",
    "GcReport",
    "NbflowStoreWarning",
    "Store",
    "StoreError",
    "StoreIntegrityError",
    "StoredError",
    "StoredRun",
    "gc",
    "get_store",
    "load_run",
    "plan",
    "runs",
    "store_home",
]
