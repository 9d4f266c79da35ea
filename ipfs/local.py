"""An embedded, daemon-less content store on disk, CID-compatible with ``ipfs add``.

Layout under ``root``::

    blocks/<xy>/<cid>     one dag-pb block per file; <xy> = the CID's next-to-last
                          two characters (the sharding Kubo's flatfs uses)
    pins/<cid>            one small file per recursively pinned root
    tmp/                  files being written (anything left here is debris of a crash)
    lock                  flock: writers (put / pin) share it, gc() takes it exclusively

Every file is written to ``tmp/``, fsynced, then moved into place with
``os.replace`` (atomic), and the directories it landed in are fsynced before a
pin naming it is written: after a crash a block file is either absent or
complete, and a pin never names content that did not reach the disk. Blocks
are immutable, so any number of readers (threads or processes) may read while
others write; every block is hash-checked when read.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .store import BlockCorrupt, ContentNotFound, ContentStore, NotPinned, StoreError
from .unixfs import cid_of_block, iter_blocks, iter_content, iter_links, normalize_cid

_PIN_RECORD = b"recursive\n"
#: Block reads/writes kept in flight at once (file I/O, fsync and sha256 release the GIL).
_IO_WINDOW = 16
#: Blocks at least this large are memory-mapped rather than read into a new buffer.
_MMAP_MIN = 64 * 1024
_IO_THREADS = 4
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _io_pool() -> ThreadPoolExecutor:
    """One shared pool for block I/O (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="fedchain-blocks")
        return _pool


class LocalStore(ContentStore):
    """Blocks on disk under ``root`` (created if missing); see the module docstring.

    ``fsync=False`` skips the fsync calls (faster, not crash-safe; for throw-away
    stores in benchmarks or tests).
    """

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.fsync = fsync
        self._blocks = self.root / "blocks"
        self._pins = self.root / "pins"
        self._tmp = self.root / "tmp"
        try:
            for d in (self._blocks, self._pins, self._tmp):
                d.mkdir(parents=True, exist_ok=True)
            (self.root / "lock").touch(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the local store at {self.root}: {exc}") from exc

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths & files

    def block_path(self, cid: str) -> Path:
        cid = normalize_cid(cid)
        return self._blocks / cid[-3:-1] / cid

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _write_atomic(self, dest: Path, data: bytes, dirty_dirs: set[Path] | None) -> None:
        """temp file in tmp/ + fsync + os.replace; the destination dir is fsynced now or later."""
        tmp = self._tmp / f"{dest.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            os.replace(tmp, dest)
        except FileNotFoundError:  # shard dir not there yet
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        if dirty_dirs is not None:
            dirty_dirs.add(dest.parent)
        else:
            self._fsync_dir(dest.parent)

    def _fsync_dir(self, path: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_block(self, cid: str, root: str | None = None) -> bytes | memoryview:
        """The verified bytes of block ``cid`` (already normalized); large blocks as a read-only view."""
        path = self._blocks / cid[-3:-1] / cid
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size >= _MMAP_MIN:
                    # Map instead of copying into a new buffer: the hash check and the
                    # caller's one copy of the chunk read the page cache directly. Block
                    # files are only ever replaced whole (os.replace), never rewritten.
                    block = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
                else:
                    block = fh.read()
        except FileNotFoundError:
            if root is None or root == cid:
                raise ContentNotFound(f"{cid} is not in the local store {self.root}") from None
            raise ContentNotFound(
                f"block {cid} of {root} is missing from the local store {self.root}"
            ) from None
        got = cid_of_block(block)
        if got != cid:
            raise BlockCorrupt(
                f"block {cid} is corrupt in the local store (file {path} hashes to {got}); "
                "delete that file and put the content again"
            )
        return block

    # ------------------------------------------------------------------ ContentStore

    def put(self, data: bytes | BinaryIO, *, pin: bool = True) -> str:
        try:
            return self._put(data, pin)
        except OSError as exc:
            raise StoreError(f"put into the local store {self.root} failed: {exc}") from exc

    def _put(self, data: bytes | BinaryIO, pin: bool) -> str:
        dirty: set[Path] = set()
        root = None
        in_flight: deque[Future] = deque()
        pool = _io_pool()
        with self._locked(exclusive=False):
            try:
                for cid, block in iter_blocks(data):
                    root = cid
                    path = self._blocks / cid[-3:-1] / cid
                    try:
                        if path.stat().st_size == len(block):
                            continue  # already stored (a wrong-sized file gets rewritten)
                    except FileNotFoundError:
                        pass
                    # Block files are independent: write (and fsync) several at once.
                    in_flight.append(pool.submit(self._write_atomic, path, block, dirty))
                    if len(in_flight) >= _IO_WINDOW:
                        in_flight.popleft().result()
            finally:
                errors = [f.exception() for f in in_flight]
            for exc in errors:
                if exc is not None:
                    raise exc
            assert root is not None
            for f in [pool.submit(self._fsync_dir, d) for d in dirty]:
                f.result()
            if pin:  # only once every block and its directory entry is durable
                self._write_atomic(self._pins / root, _PIN_RECORD, None)
        return root

    def _reader(self, root: str) -> Callable[[str], bytes]:
        """``get_block`` for :func:`iter_content` that reads ahead.

        When an internal node is read, its children are queued; up to
        ``_IO_WINDOW`` of them are read and hash-checked in worker threads
        while the caller consumes earlier ones, in the order the walk asks.
        """
        pool = _io_pool()
        queued: deque[str] = deque()
        pending: dict[str, Future] = {}

        def top_up() -> None:
            while queued and len(pending) < _IO_WINDOW:
                c = queued.popleft()
                if c not in pending:
                    pending[c] = pool.submit(self._read_block, c, root)

        def get_block(c: str) -> bytes:
            fut = pending.pop(c, None)
            if fut is None and queued and queued[0] == c:
                queued.popleft()  # asked for before its read-ahead was started
            block = fut.result() if fut is not None else self._read_block(c, root)
            if block[:1] == b"\x12":  # dag-pb writes Links (field 2) first: an internal node
                queued.extendleft(reversed(iter_links(block, c)))
            top_up()
            return block

        return get_block

    def get(self, cid: str) -> bytes:
        cid = normalize_cid(cid)
        return b"".join(iter_content(cid, self._reader(cid), verify=False))

    def get_to(self, cid: str, out: BinaryIO) -> int:
        cid = normalize_cid(cid)
        n = 0
        for piece in iter_content(cid, self._reader(cid), verify=False):
            out.write(piece)
            n += len(piece)
        return n

    def iter_chunks(self, cid: str) -> Iterator[bytes]:
        """The content of ``cid`` as verified chunks (streaming, a bounded read-ahead in memory)."""
        cid = normalize_cid(cid)
        return iter_content(cid, self._reader(cid), verify=False)

    def has(self, cid: str) -> bool:
        """All blocks present; internal nodes are read (and verified), leaves only checked for presence."""
        cid = normalize_cid(cid)
        stack = [cid]
        while stack:
            c = stack.pop()
            path = self._blocks / c[-3:-1] / c
            try:
                with open(path, "rb") as fh:
                    first = fh.read(1)
            except FileNotFoundError:
                return False
            if first != b"\x12":  # canonical dag-pb puts Links (field 2) first: no 0x12, no links
                continue
            try:
                stack.extend(iter_links(self._read_block(c, cid), c))
            except StoreError:
                return False
        return True

    def pin(self, cid: str) -> None:
        cid = normalize_cid(cid)
        with self._locked(exclusive=False):
            if not self.has(cid):
                raise ContentNotFound(f"cannot pin {cid}: it is not (wholly) in the local store {self.root}")
            if not (self._pins / cid).exists():
                self._write_atomic(self._pins / cid, _PIN_RECORD, None)

    def unpin(self, cid: str) -> None:
        cid = normalize_cid(cid)
        try:
            os.unlink(self._pins / cid)
        except FileNotFoundError:
            raise NotPinned(f"{cid} is not pinned in the local store {self.root}") from None
        self._fsync_dir(self._pins)

    def is_pinned(self, cid: str) -> bool:
        return (self._pins / normalize_cid(cid)).exists()

    def pins(self) -> list[str]:
        return sorted(p.name for p in self._pins.iterdir() if p.name.startswith("Qm") and len(p.name) == 46)

    # ------------------------------------------------------------------ maintenance

    def gc(self) -> int:
        """Delete blocks no pin reaches and debris of interrupted writes; return blocks removed."""
        with self._locked(exclusive=True):
            keep: set[str] = set()
            for root in self.pins():
                stack = [root]
                while stack:
                    c = stack.pop()
                    if c in keep:
                        continue
                    keep.add(c)
                    path = self._blocks / c[-3:-1] / c
                    try:
                        with open(path, "rb") as fh:
                            block = fh.read()
                    except FileNotFoundError:
                        continue
                    if block[:1] == b"\x12":
                        try:
                            stack.extend(iter_links(block, c))
                        except StoreError:
                            pass
            removed = 0
            for shard in self._blocks.iterdir():
                if not shard.is_dir():
                    continue
                for f in shard.iterdir():
                    if f.name not in keep:
                        f.unlink(missing_ok=True)
                        removed += 1
            for f in self._tmp.iterdir():  # no writer runs while we hold the lock exclusively
                f.unlink(missing_ok=True)
            return removed

    def verify(self, cid: str) -> int:
        """Read and hash-check every block of ``cid``; return the content size."""
        n = 0
        for piece in self.iter_chunks(cid):
            n += len(piece)
        return n

    def block_count(self) -> int:
        return sum(1 for shard in self._blocks.iterdir() if shard.is_dir() for _ in shard.iterdir())

