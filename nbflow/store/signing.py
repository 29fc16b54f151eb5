"""Signatures on stored results, with a key only the user can read.

Loading a cached result can run code: most results are pickles.  A checksum alone does
not stop someone who can write to the store (a shared or world-writable ``NBFLOW_HOME``, a
synced folder, another account) from replacing a result -- they can recompute a checksum.
So every stored result carries an HMAC-SHA256 (stdlib :mod:`hmac`) made with a secret key,
and the signature is checked before a single byte is unpickled.  Rows of the cache index
that say "this cache key has that result, whose content hashes to this" are signed too, so
a row cannot be pointed at another (validly signed) result either.

The key is 32 random bytes in a file private to the user, created on first use:
``$NBFLOW_KEY_FILE`` if set, else ``$XDG_CONFIG_HOME/nbflow/key``, else
``~/.config/nbflow/key``.  It lives outside the store on purpose: whoever can write the
store must not be able to read the key.  Losing the key (a new machine, a deleted file)
costs nothing but recomputation: results signed with another key fail their check and run
again.  A key file readable by others is refused (it would let them sign).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import Any

from .journal import StoreError

KEY_BYTES = 32
MAC_BYTES = 32  # SHA-256
_KEYS: dict[Path, bytes] = {}
_LOCK = threading.Lock()


def key_path() -> Path:
    """Where the signing key of this user is (see the module docstring)."""
    env = os.environ.get("NBFLOW_KEY_FILE")
    if env:
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser().absolute() / "nbflow" / "key"


def _create(path: Path) -> None:
    """Make the key file at ``path`` unless it exists.  The key is written to a private file
    of its own first and linked into place whole: another process (a Dask worker signing a
    result while the notebook makes the key) sees either no key or all of it, never the
    empty file an in-place write would show it for a moment (it would call it damaged).
    Whoever links first wins; the loser reads the winner's key."""
    old = os.umask(0o077)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    finally:
        os.umask(old)
    try:
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # (atomic, and fails if the key is there: no overwrite)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError:  # (a file system without hard links: an exclusive create instead)
            with contextlib.suppress(FileExistsError):
                _write_new(path, Path(tmp).read_bytes())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _write_new(path: Path, data: bytes) -> None:
    old = os.umask(0o077)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    finally:
        os.umask(old)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"the nbflow signing key {path} is not a regular file; remove it "
                             "(a new key is made; stored results are recomputed once)")
        if st.st_mode & 0o077:
            raise StoreError(
                f"the nbflow signing key {path} is readable or writable by other users "
                f"({stat.filemode(st.st_mode)}), so anyone could sign results; run "
                f"`chmod 600 {path}` (or delete it: a new key is made and results are recomputed once)")
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise StoreError(f"the nbflow signing key {path} is damaged ({len(data)} bytes, expected "
                         f"{KEY_BYTES}); delete it (a new key is made; results are recomputed once)")
    return data


_LAST: tuple[str | None, bytes] | None = None


def key() -> bytes:
    """This user's signing key, created on first use (raises StoreError if unusable).

    The hot path (two signatures per cached task) looks at ``$NBFLOW_KEY_FILE`` only: the
    default location (from ``$XDG_CONFIG_HOME`` / ``$HOME``) is resolved once per process.
    """
    global _LAST
    env_file = getattr(_FOR_THREAD, "path", None) or os.environ.get("NBFLOW_KEY_FILE")
    last = _LAST
    if last is not None and last[0] == env_file:
        return last[1]
    k = _load_key()
    _LAST = (env_file, k)
    return k


_FOR_THREAD = threading.local()  # a key file given for this thread (see signing_as)


@contextlib.contextmanager
def signing_as(path: str) -> Any:
    """Sign with the key file ``path`` in this thread (a Dask worker on the user's machine
    writing a result into the user's store signs it as the user's process would)."""
    _FOR_THREAD.path = path
    try:
        yield
    finally:
        _FOR_THREAD.path = None


def _load_key() -> bytes:
    path = Path(_FOR_THREAD.path) if getattr(_FOR_THREAD, "path", None) else key_path()
    k = _KEYS.get(path)
    if k is not None:
        return k
    with _LOCK:
        k = _KEYS.get(path)
        if k is None:
            try:
                if not path.exists():
                    _create(path)
                k = _KEYS[path] = _read(path)
            except OSError as e:
                raise StoreError(f"the nbflow signing key {path} cannot be created or read "
                                 f"({type(e).__name__}: {e}); set NBFLOW_KEY_FILE to a private "
                                 "file path") from e
    return k


def mac(*parts: bytes | memoryview) -> bytes:
    """HMAC-SHA256 of ``parts`` (concatenated) under this user's key."""
    if len(parts) == 1:  # the one-shot C path: a few microseconds for a cache row
        return hmac.digest(key(), parts[0], "sha256")
    if sum(len(p) for p in parts) <= 65536:  # small: one copy is cheaper than a streaming HMAC
        return hmac.digest(key(), b"".join(parts), "sha256")
    h = hmac.new(key(), digestmod="sha256")  # (a name, not a constructor: OpenSSL's HMAC, in C)
    for p in parts:
        h.update(p)
    return h.digest()


# Verified once, known good: the exact signed content (bytes or row), per key.  A MAC is a
# deterministic function of key and content, so content identical to content that verified
# before verifies again; anything that differs in a single byte is not in here and is
# checked in full.  Only small items are kept (a cached re-run checks two per task), and the
# set is emptied when full, so it stays a few megabytes.
MEMO_ITEM_MAX = 1024
MEMO_MAX = 50_000
_MEMO: dict[bytes, set[tuple[Any, ...]]] = {}


def _known(k: bytes, item: tuple[Any, ...]) -> bool:
    memo = _MEMO.get(k)
    return memo is not None and item in memo


def _remember(k: bytes, item: tuple[Any, ...]) -> None:
    memo = _MEMO.setdefault(k, set())
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo.add(item)


def check(expected: bytes | memoryview, *parts: bytes | memoryview) -> bool:
    """True if ``expected`` is the MAC of ``parts`` (compared in constant time)."""
    small = sum(len(p) for p in parts) <= MEMO_ITEM_MAX
    if not small:
        return hmac.compare_digest(bytes(expected), mac(*parts))
    k = key()
    item = (bytes(expected), b"".join(parts))
    if _known(k, item):
        return True
    ok = hmac.compare_digest(item[0], mac(item[1]))
    if ok:
        _remember(k, item)
    return ok


def signed(head: bytes, payload: bytes) -> bytes:
    """The MAC of ``head + payload`` (remembered as good when small: this process made it)."""
    m = mac(head, payload)
    if len(head) + len(payload) <= MEMO_ITEM_MAX:
        _remember(key(), (m, head + payload))
    return m


def row_sig(cache_key: str, blob: str, value_digest: str | None) -> str:
    """The signature of one cache-index row (hex): binds a cache key to its result."""
    sig = mac(f"cache\0{cache_key}\0{blob}\0{value_digest or ''}".encode()).hex()
    _remember(key(), (sig, cache_key, blob, value_digest))
    return sig


def row_ok(sig: str | None, cache_key: str, blob: str, value_digest: str | None) -> bool:
    if not isinstance(sig, str):
        return False
    k = key()
    item = (sig, cache_key, blob, value_digest)
    if _known(k, item):
        return True
    good = mac(f"cache\0{cache_key}\0{blob}\0{value_digest or ''}".encode()).hex()
    ok = hmac.compare_digest(sig, good)
    if ok:
        _remember(k, item)
    return ok
