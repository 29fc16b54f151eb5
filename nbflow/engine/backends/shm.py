"""Large buffers between the run's process and its workers through shared memory.

Pickle protocol 5 lets an object hand its large contiguous buffers (numpy arrays, the
blocks of a pandas DataFrame, Arrow buffers) to a ``buffer_callback`` instead of copying
them into the pickle stream.  Here each such buffer of at least ``threshold`` bytes is
placed in a *segment*, a file in ``/dev/shm`` (memory, not disk), and only its place
``(segment, offset, nbytes)`` travels through the pool's pipe.  The receiving side maps
the segment and rebuilds the object over the mapping, so the data is not copied again:

* a **result** is written into a segment by the worker (one copy), and the run's process
  maps it (shared): the value's arrays *are* the segment (no copy on receipt);
* an **argument** that is such a result goes back out by reference to the same segment
  (no copy at all); any other large argument (a value from the notebook, a cached input
  loaded here, a thread task's result) is copied into a segment of its own **once per
  run** (:class:`Kept`) and every later call that passes it is sent the same segment;
* workers map argument segments **copy-on-write** (``MAP_PRIVATE``): a task may modify
  its input in place without the change reaching the producer's value or another task,
  as with pickles.  In the run's process a result stays an ordinary writable value; a
  change made to it there (by a thread task, or in the notebook) is seen by process
  tasks sent it later, as it would be by pickling it later.  (Changing a value while a
  task that reads it is running is a data race on any backend.)

Lifetimes, so that nothing is left in ``/dev/shm``:

* every segment name starts with ``nbflow-<pid of the run's process>-<backend tag>-``;
* a segment made for one call's arguments is unlinked when the call ends (the worker's
  mapping, if any, outlives the name);
* a kept copy of a value of this process lives until the run ends, or until the kept
  copies together pass their budget (a quarter of ``/dev/shm``): then the least recently
  sent ones that no call in flight still needs are unlinked first;
* a result segment is unlinked when the value built over it is garbage-collected in the
  run's process, and at the latest when the backend closes (values the user still holds
  stay valid: a mapping outlives the name);
* when the backend closes it removes every name with its prefix, which also covers
  segments a killed worker made but never reported; segments of a run's process that
  died (SIGKILL) are removed by the next backend that starts (:func:`sweep_orphans`).

Where ``/dev/shm`` does not exist (macOS, Windows) or is full, values go through the pipe
as before.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import mmap
import os
import pickle
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...core.processes import pid_alive

SHM_DIR = "/dev/shm"
PREFIX = "nbflow-"
ALIGN = 64  # every buffer starts at a multiple of this (alignment for any dtype)
DEFAULT_THRESHOLD = 1 << 20  # buffers smaller than this stay in the pickle stream

Place = tuple[str, int, int]  # (segment name, offset, nbytes)


def available() -> bool:
    """Can segments be made on this machine?"""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK) and hasattr(mmap, "MAP_PRIVATE")


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def unlink(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path(name))


def names(prefix: str) -> list[str]:
    """The segments in ``/dev/shm`` whose name starts with ``prefix``."""
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except OSError:
        return []


def remove_all(prefix: str) -> int:
    """Unlink every segment named ``prefix...``; returns how many there were."""
    found = names(prefix)
    for n in found:
        unlink(n)
    return len(found)




def sweep_orphans() -> int:
    """Unlink segments left by run processes that no longer exist (killed with SIGKILL)."""
    removed = 0
    for n in names(PREFIX):
        pid = n[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            unlink(n)
            removed += 1
    return removed


class SegmentWriter:
    """Appends buffers to one new segment, created on the first buffer."""

    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}{uuid.uuid4().hex[:12]}"
        self._fd: int | None = None
        self.size = 0

    def append(self, view: memoryview) -> Place:
        if self._fd is None:
            self._fd = os.open(_path(self.name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        pad = -self.size % ALIGN
        if pad:
            os.lseek(self._fd, pad, os.SEEK_CUR)
            self.size += pad
        offset = self.size
        view = view.cast("B")
        done = 0
        # os.write, not a writable mapping: a full /dev/shm is then an OSError (ENOSPC),
        # not a SIGBUS that kills the process.
        while done < view.nbytes:
            done += os.write(self._fd, view[done:])
        self.size += view.nbytes
        return self.name, offset, view.nbytes

    @property
    def used(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self.close()
        unlink(self.name)


def _address(view: memoryview) -> int | None:
    """The memory address of a contiguous buffer (None when it cannot be known)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is what makes large buffers
        return None
    try:
        return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
    except (ValueError, TypeError):
        return None


class Registry:
    """The result segments mapped in the run's process: address range -> segment name.

    A buffer that lies inside one of them is sent to a worker by reference (no copy).  An
    entry disappears when its mapping is garbage-collected (the segment is unlinked then).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._entries: dict[int, tuple[int, str]] = {}  # start -> (end, name)

    def add(self, start: int, end: int, name: str) -> None:
        with self._lock:
            bisect.insort(self._starts, start)
            self._entries[start] = (end, name)

    def forget(self, start: int, name: str) -> None:
        with self._lock:
            entry = self._entries.get(start)
            if entry is not None and entry[1] == name:
                del self._entries[start]
                self._starts.remove(start)
        unlink(name)

    def find(self, address: int, nbytes: int) -> Place | None:
        with self._lock:
            k = bisect.bisect_right(self._starts, address) - 1
            if k < 0:
                return None
            start = self._starts[k]
            end, name = self._entries[start]
        if address + nbytes <= end:
            return name, address - start, nbytes
        return None

    def clear(self) -> None:
        with self._lock:
            self._starts.clear()
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._starts)


SAMPLES = 4096  # bytes of a kept value compared before its copy is sent again


def _sample(view: memoryview) -> bytes:
    """A few thousand bytes spread evenly over ``view`` (and its last 64): cheap to read
    even for a value of gigabytes, and different after most changes made in place."""
    import numpy as np

    flat = np.frombuffer(view, dtype=np.uint8)
    step = max(1, flat.size // SAMPLES)
    return flat[::step][:SAMPLES].tobytes() + flat[-64:].tobytes()


def _budget() -> int:
    """How many bytes the kept copies of one backend may hold: a quarter of ``/dev/shm``."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 1 << 30
    return max(DEFAULT_THRESHOLD, st.f_blocks * st.f_frsize // 4)


@dataclass(slots=True)
class _Copy:
    name: str
    nbytes: int
    source: Any  # the object whose memory was copied: kept alive, so its address stays its own
    sample: bytes
    pins: int = 0  # calls in flight that were sent this segment
    live: bool = True  # still in the table (else unlinked when the last pin goes)


class Kept:
    """Copies in shared memory of large buffers of the run's process, one per buffer.

    A value the notebook passes to many process tasks (a constant argument, a bound
    variable, a cached input loaded here) would otherwise be copied into a new segment
    for every call.  Here a buffer is found by its address and length: the object that
    owns the memory is held, so no other object can take that address while the copy
    exists, and two calls sending the same object (or views of the same memory) get the
    same segment.  A value changed in place between two calls (by a thread task, say)
    must not be sent stale: before a copy is reused a sample of its bytes is compared
    with the memory it was copied from, and a difference makes a fresh copy.  (A change
    of a single byte between samples can go unseen; changing a value that tasks of the
    running run read is a data race on every backend anyway.)

    A copy sent to a call is *pinned* until the call ends (its worker may not have
    mapped it yet); unpinned copies are unlinked, least recently sent first, when the
    copies pass ``budget`` bytes, and all of them when the backend closes.
    """

    def __init__(self, prefix: str, budget: int | None = None) -> None:
        self.prefix = prefix
        self.budget = _budget() if budget is None else budget
        self._lock = threading.Lock()
        self._copies: OrderedDict[tuple[int, int], _Copy] = OrderedDict()
        self._gone: list[_Copy] = []  # out of the table, still pinned by a call in flight
        self.total = 0  # bytes held by the copies in the table
        self.made = 0  # segments made so far

    def get(self, address: int, view: memoryview) -> tuple[Place, bool]:
        """The place of ``view``'s copy (made now if needed) and whether it was made now.
        The copy is pinned: :meth:`release` its name when the call ends."""
        key = (address, view.nbytes)
        with self._lock:
            c = self._copies.get(key)
            if c is not None and c.sample == _sample(view):
                self._copies.move_to_end(key)
                c.pins += 1
                return (c.name, 0, c.nbytes), False
            if c is not None:  # changed in place since it was copied: copy it again
                self._drop(key)
        writer = SegmentWriter(self.prefix)
        try:
            place = writer.append(view)
        except BaseException:
            writer.discard()
            raise
        writer.close()
        new = _Copy(writer.name, view.nbytes, view.obj, _sample(view), pins=1)
        with self._lock:
            if key in self._copies:  # (another thread copied it meanwhile)
                self._drop(key)
            self._copies[key] = new
            self.total += new.nbytes
            self.made += 1
            self._shrink()
        return place, True

    def release(self, names: list[str]) -> None:
        """The call that was sent these copies ended: unpin them."""
        if not names:
            return
        with self._lock:
            for c in [*self._copies.values(), *self._gone]:
                for _ in range(min(c.pins, names.count(c.name))):
                    c.pins -= 1
                if c.pins == 0 and not c.live:
                    unlink(c.name)
            self._shrink()

    def _drop(self, key: tuple[int, int]) -> None:
        c = self._copies.pop(key)
        self.total -= c.nbytes
        c.live = False
        c.source = None
        if c.pins == 0:
            unlink(c.name)
        else:
            self._gone.append(c)

    def _shrink(self) -> None:
        self._gone = [c for c in self._gone if c.pins > 0]
        for key in [k for k, c in self._copies.items() if c.pins == 0]:
            if self.total <= self.budget:
                break
            self._drop(key)

    def clear(self) -> None:
        """Unlink every copy (the run ended; values still mapped by someone stay valid)."""
        with self._lock:
            for c in [*self._copies.values(), *self._gone]:
                unlink(c.name)
            self._copies.clear()
            self._gone = []
            self.total = 0

    def __len__(self) -> int:
        return len(self._copies)


class Packer:
    """``buffer_callback`` of one pickling: large buffers go out of band.

    Each large buffer is either found in ``registry`` (sent by reference), or given its
    run-long copy by ``kept`` (made on its first call, sent by reference after), or, with
    no ``kept`` (a worker sending its result), appended to this packer's own segment.
    ``places`` lists where each out-of-band buffer went, in pickling order (the order
    ``pickle.loads(..., buffers=...)`` wants them back).
    """

    def __init__(self, prefix: str, threshold: int, registry: Registry | None = None,
                 kept: Kept | None = None) -> None:
        self.writer = SegmentWriter(prefix)
        self.threshold = threshold
        self.registry = registry
        self.kept = kept
        self.pinned: list[str] = []  # kept copies this call was sent (released when it ends)
        self.places: list[Place] = []
        self.copied = 0  # bytes written into this packer's segment
        self.shared = 0  # bytes sent by reference to an existing segment
        self.full = False  # /dev/shm ran out of space: the rest goes in band

    def __call__(self, buf: pickle.PickleBuffer) -> bool:
        if self.full:
            return True
        try:
            view = buf.raw()
        except BufferError:  # not contiguous: in band
            return True
        if view.nbytes < self.threshold:
            return True  # small: in the pickle stream (True means "serialise in band")
        addr = _address(view) if self.registry is not None or self.kept is not None else None
        if self.registry is not None and len(self.registry) and addr is not None:
            place = self.registry.find(addr, view.nbytes)
            if place is not None:
                self.places.append(place)
                self.shared += view.nbytes
                return False
        try:
            if self.kept is not None and addr is not None:
                place, made = self.kept.get(addr, view)
                self.pinned.append(place[0])
                self.places.append(place)
                if made:
                    self.copied += view.nbytes
                else:
                    self.shared += view.nbytes
                return False
            self.places.append(self.writer.append(view))
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                raise
            self.full = True
            return True
        self.copied += view.nbytes
        return False

    @property
    def oob_bytes(self) -> int:
        return sum(n for _, _, n in self.places)


def open_views(places: list[Place], private: bool,
               on_map: Callable[[mmap.mmap, str], None] | None = None,
               maps: dict[str, memoryview] | None = None) -> list[memoryview]:
    """The buffers at ``places``, each segment mapped once (per ``maps``, when given).

    ``private``: copy-on-write (writes stay in this process); else shared (writes change
    the segment).
    ``on_map(mapping, name)`` is called for each new mapping."""
    if maps is None:
        maps = {}
    out: list[memoryview] = []
    for name, offset, nbytes in places:
        whole = maps.get(name)
        if whole is None:
            fd = os.open(_path(name), os.O_RDONLY if private else os.O_RDWR)
            try:
                flags = mmap.MAP_PRIVATE if private else mmap.MAP_SHARED
                m = mmap.mmap(fd, 0, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
            if on_map is not None:
                on_map(m, name)
            whole = maps[name] = memoryview(m)
        out.append(whole[offset:offset + nbytes])
    return out


def register_mapping(registry: Registry, mapping: mmap.mmap, name: str) -> None:
    """Remember a result mapping so its buffers can be sent on by reference;
    when the mapping is garbage-collected the entry goes and the segment is unlinked."""
    start = _address(memoryview(mapping))
    if start is None:
        return
    registry.add(start, start + len(mapping), name)
    weakref.finalize(mapping, registry.forget, start, name)


def dumps(obj: Any, dump: Callable[..., bytes], packer: Packer | None) -> tuple[bytes, list[Place], float]:
    """``(pickle bytes, out-of-band places, seconds)`` of ``obj`` (protocol 5)."""
    t0 = time.perf_counter()
    if packer is None:
        return dump(obj, protocol=5), [], time.perf_counter() - t0
    first = len(packer.places)
    data = dump(obj, protocol=5, buffer_callback=packer)
    return data, packer.places[first:], time.perf_counter() - t0
