"""An embedded, daemon-less content store on disk, CID-compatible with ``ipfs add``.

Layout under ``root``::

    blocks/<xy>/<cid>     one dag-pb block per file; <xy> = the CID's next-to-last
                          two characters (the sharding Kubo's flatfs uses)
    pins/<cid>            one small file per recursively pinned root
    tmp/                  named temp files, only where O_TMPFILE is unavailable
                          (anything left here is debris of a crash)
    lock                  flock: writers (put / pin) share it, gc() takes it exclusively

Every file is written unnamed in its final directory (``O_TMPFILE``), fsynced,
then linked in under its name (atomic); on file systems without ``O_TMPFILE`` it
is written to ``tmp/`` and moved into place with ``os.replace``. The directories
a put's blocks landed in are fsynced before a pin naming them is written: after a
crash a block file is either absent or complete, and a pin never names content
that did not reach the disk. Blocks are immutable, so any number of readers
(threads or processes) may read while others write; every block is hash-checked
when read. Readers of content another party pinned pass ``max_size``: a DAG
whose root declares more is refused before anything is allocated or written,
and sizes are checked node by node (see :mod:`ipfs.unixfs`). ``put_block``
stores a block built elsewhere, as ``ipfs block put`` does.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import mmap
import os
import secrets
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .store import (
    BlockCorrupt,
    ContentNotFound,
    ContentStore,
    ContentTooLarge,
    DagSizeMismatch,
    DagTooComplex,
    NotPinned,
    StoreError,
)
from .unixfs import (
    DagBuilder,
    Node,
    b58encode,
    block_budget,
    check_max_size,
    cid_of_block,
    cid_of_digest,
    decode_file_node,
    hash_leaf,
    iter_content,
    iter_links,
    leaf_frame,
    normalize_cid,
    split_chunks,
)

_PIN_RECORD = b"recursive\n"
#: Block reads/writes kept in flight at once (file I/O, fsync and sha256 release the GIL).
_IO_WINDOW = 32
#: Blocks at least this large are memory-mapped rather than read into a new buffer.
_MMAP_MIN = 64 * 1024
_IO_THREADS = 8  # most of a writer's time is spent waiting in fsync
#: Largest block :meth:`LocalStore.put_block` accepts (bitswap's limit; ``ipfs add`` makes ~256 KiB).
MAX_BLOCK_SIZE = 2 << 20
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


class _NoTmpfile(Exception):
    """The file system (or a missing /proc) does not allow O_TMPFILE + linkat."""


def _write_all(fd: int, parts: tuple[bytes | memoryview, ...]) -> None:
    """Write ``parts`` in order with as few syscalls as the kernel allows (handles short writes)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _whole_block(fd: int, size: int) -> bytes | memoryview:
    """The block in the open file ``fd`` of ``size`` bytes; large ones mapped, not copied."""
    if size >= _MMAP_MIN:
        # Map instead of copying into a new buffer: the hash check and the
        # caller's one copy of the chunk read the page cache directly. Block
        # files are write-once (linked or renamed into place whole).
        return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
    return os.pread(fd, size + 1, 0)


def _load_block(path: str) -> tuple[bytes | memoryview, bytes] | None:
    """``(block, sha256 digest)`` of a block file, or None when it is missing.

    Runs in the I/O threads: it does little but system calls and hashing, which
    release the GIL, so the threads do not queue behind each other for it.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        block = _whole_block(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return block, hashlib.sha256(block).digest()


class _Irregular(Exception):
    """A DAG the in-place reader does not handle (LocalStore.get then walks it in order)."""


#: What :func:`_read_leaf_into` returns (instead of the block) when the leaf is in place.
_IN_PLACE = memoryview(b"")


def _read_leaf_into(path: str, dest: memoryview) -> tuple[bytes | memoryview, bytes] | None:
    """Read the block at ``path``, expected to be a leaf holding ``len(dest)`` bytes, into ``dest``.

    Returns ``(_IN_PLACE, digest)`` when the file has a leaf's framing around
    exactly ``len(dest)`` bytes (now in ``dest``), else ``(block, digest)`` with
    the whole block (an internal node, or a leaf framed otherwise); None when
    the file is missing. The caller compares the digest with the CID.
    """
    try:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            head, tail = leaf_frame(len(dest))
            size = os.fstat(fd).st_size
            if size == len(head) + len(dest) + len(tail):
                h, t = bytearray(len(head)), bytearray(len(tail))
                if os.readv(fd, [h, dest, t]) == size:
                    digest = hashlib.sha256(h)
                    digest.update(dest)
                    digest.update(t)
                    if h == head and t == tail:
                        return _IN_PLACE, digest.digest()
                    return bytes(h) + bytes(dest) + bytes(t), digest.digest()
            block = _whole_block(fd, size)
        finally:
            os.close(fd)
        return block, hashlib.sha256(block).digest()
    finally:
        dest.release()


def _subtree_size(node: Node, cid: str) -> int:
    """File bytes under an internal node, from its blocksizes (checked against its filesize)."""
    if node.data or len(node.blocksizes) != len(node.links):
        raise _Irregular(cid)
    size = sum(node.blocksizes)
    if node.filesize is not None and node.filesize != size:
        raise DagSizeMismatch(f"block {cid} declares {node.filesize} bytes but its parts add up to {size}")
    return size


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

    def __init__(self, root: Path | str, *, fsync: bool = True, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        if not create and not (self.root / "blocks").is_dir():
            # A reader (an auditor, a report) pointed at the wrong folder must hear so,
            # not get an empty store that makes every artifact look missing.
            raise StoreError(f"no content store at {self.root} (expected a 'blocks' folder there)")
        self.fsync = fsync
        self._blocks = self.root / "blocks"
        self._blocks_dir = str(self._blocks)
        self._pins = self.root / "pins"
        self._tmp = self.root / "tmp"
        self._tmpfile = hasattr(os, "O_TMPFILE")  # cleared if the file system refuses it
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
        return Path(self._block_file(normalize_cid(cid)))

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _write_atomic(self, directory: str, name: str, parts: tuple[bytes | memoryview, ...],
                      dirty_dirs: set[str] | None) -> None:
        """Make ``directory/name`` hold ``b"".join(parts)``, complete or not at all, even across a crash.

        The bytes go into an unnamed file in ``directory`` (``O_TMPFILE``), are
        fsynced, and the file is then linked in under its name; where the file
        system has no ``O_TMPFILE`` a named temp file in tmp/ is renamed instead.
        The directory is fsynced now, or by the caller when ``dirty_dirs`` collects it.
        Store files are write-once (a block's name is its hash, a pin's is its
        content), so a file that appeared meanwhile with the right size is left as it is.
        (Paths are plain strings here: this runs once per block.)
        """
        if self._tmpfile:
            try:
                self._write_linked(directory, name, parts)
            except _NoTmpfile:
                self._tmpfile = False
        if not self._tmpfile:
            self._write_renamed(directory, name, parts)
        if dirty_dirs is not None:
            dirty_dirs.add(directory)
        else:
            self._fsync_dir(directory)

    def _write_linked(self, directory: str, name: str, parts: tuple[bytes | memoryview, ...]) -> None:
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o644)
        except FileNotFoundError:  # shard dir not there yet
            os.makedirs(directory, exist_ok=True)
            return self._write_linked(directory, name, parts)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise _NoTmpfile() from None
            raise
        dest = f"{directory}/{name}"
        try:
            _write_all(fd, parts)
            if self.fsync:
                os.fsync(fd)
            try:
                # linkat(AT_SYMLINK_FOLLOW) through /proc: the documented way to name an
                # O_TMPFILE file without privileges. Passing a dir fd makes os.link call
                # linkat rather than link(2); the kernel ignores it for an absolute path.
                os.link(f"/proc/self/fd/{fd}", dest, src_dir_fd=fd, follow_symlinks=True)
            except FileExistsError:
                if os.stat(dest).st_size != sum(len(p) for p in parts):
                    # A damaged file (e.g. truncated by a lying disk): link under a
                    # temporary name beside it, then rename over it.
                    aside = f"{directory}/.{name}.{secrets.token_hex(6)}"
                    os.link(f"/proc/self/fd/{fd}", aside, src_dir_fd=fd, follow_symlinks=True)
                    os.replace(aside, dest)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES) and not os.path.exists(dest):
                    raise _NoTmpfile() from None  # no /proc here: use named temp files
                raise
        finally:
            os.close(fd)  # an unnamed file that was never linked vanishes with its fd

    def _write_renamed(self, directory: str, name: str, parts: tuple[bytes | memoryview, ...]) -> None:
        tmp = f"{self._tmp}/{name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, parts)
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, f"{directory}/{name}")
        except FileNotFoundError:  # shard dir not there yet
            os.makedirs(directory, exist_ok=True)
            os.replace(tmp, f"{directory}/{name}")

    def _store_block(self, cid: str, parts: tuple[bytes | memoryview, ...], dirty: set[str]) -> None:
        """Write the block ``b"".join(parts)`` under ``cid`` unless it is already stored."""
        directory = self._shard_dir(cid)
        try:
            if os.stat(f"{directory}/{cid}").st_size == sum(len(p) for p in parts):
                return  # already stored (a wrong-sized file gets rewritten)
        except FileNotFoundError:
            pass
        self._write_atomic(directory, cid, parts, dirty)

    def _fsync_dir(self, path: str | Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _shard_dir(self, cid: str) -> str:
        """Directory of block ``cid``: named by the CID's next-to-last two characters."""
        return f"{self._blocks_dir}/{cid[-3:-1]}"

    def _block_file(self, cid: str) -> str:
        """Path of block ``cid`` as a string (cheaper than a Path in hot loops)."""
        return f"{self._shard_dir(cid)}/{cid}"

    def _read_block(self, cid: str, root: str | None = None) -> bytes | memoryview:
        """The verified bytes of block ``cid`` (already normalized); large blocks as a read-only view."""
        return self._checked(cid, root, _load_block(self._block_file(cid)))

    def _checked(self, cid: str, root: str | None,
                 loaded: tuple[bytes | memoryview, bytes] | None) -> bytes | memoryview:
        """The block :func:`_load_block` returned for ``cid``, once its digest matches the CID."""
        if loaded is None:
            if root is None or root == cid:
                raise ContentNotFound(f"{cid} is not in the local store {self.root}")
            raise ContentNotFound(f"block {cid} of {root} is missing from the local store {self.root}")
        block, digest = loaded
        got = cid_of_digest(digest)
        if got != cid:
            raise BlockCorrupt(
                f"block {cid} is corrupt in the local store (file {self._block_file(cid)} hashes to "
                f"{got}); delete that file and put the content again"
            )
        return block

    # ------------------------------------------------------------------ ContentStore

    def put(self, data: bytes | BinaryIO, *, pin: bool = True) -> str:
        try:
            return self._put(data, pin)
        except OSError as exc:
            raise StoreError(f"put into the local store {self.root} failed: {exc}") from exc

    def _put(self, data: bytes | BinaryIO, pin: bool) -> str:
        # The calling thread hashes each leaf straight from the caller's buffer
        # (no copy of the chunk: the block is head + chunk + tail) and links it
        # into the balanced tree; the I/O threads write, fsync and link the
        # block files meanwhile, so hashing overlaps the waits on the disk.
        dirty: set[str] = set()
        builder = DagBuilder()
        writes: deque[Future] = deque()
        pool = _io_pool()
        with self._locked(exclusive=False):
            try:
                for chunk in split_chunks(data):
                    mh, head, tail = hash_leaf(chunk)
                    while len(writes) >= _IO_WINDOW:
                        writes.popleft().result()
                    writes.append(pool.submit(self._store_block, b58encode(mh), (head, chunk, tail), dirty))
                    for cid, block in builder.add_leaf(mh, len(head) + len(chunk) + len(tail), len(chunk)):
                        writes.append(pool.submit(self._store_block, cid, (block,), dirty))
                for cid, block in builder.finish():
                    writes.append(pool.submit(self._store_block, cid, (block,), dirty))
            finally:
                # Never leave a worker writing after the lock is released.
                pending = list(writes)
                futures_wait(pending)
            for f in pending:
                f.result()  # re-raise the first failure
            root = builder.root
            assert root is not None
            for f in [pool.submit(self._fsync_dir, d) for d in dirty]:
                f.result()
            if pin:  # only once every block and its directory entry is durable
                self._write_atomic(str(self._pins), root, (_PIN_RECORD,), None)
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
                    pending[c] = pool.submit(_load_block, self._block_file(c))

        def get_block(c: str) -> bytes | memoryview:
            fut = pending.pop(c, None)
            if fut is None and queued and queued[0] == c:
                queued.popleft()  # asked for before its read-ahead was started
            if fut is not None:
                block = self._checked(c, root, fut.result())
            else:
                block = self._read_block(c, root)
            if block[:1] == b"\x12":  # dag-pb writes Links (field 2) first: an internal node
                queued.extendleft(reversed(iter_links(block, c)))
            top_up()
            return block

        return get_block

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        cid = normalize_cid(cid)
        check_max_size(max_size)
        try:
            return self._get_in_place(cid, max_size)
        except _Irregular:
            # A valid DAG of a shape `ipfs add` does not build (data in an
            # internal node): walk it in order instead.
            return b"".join(iter_content(cid, self._reader(cid), verify=False, max_size=max_size))

    def _get_in_place(self, cid: str, max_size: int | None) -> bytes:
        """Read every leaf straight into its place in the result, in parallel.

        The root's (and each internal node's) ``blocksizes`` give every child's
        byte range, so leaves can be read in any order by the I/O threads with
        ``readv`` into their slice of one zero-filled, not yet touched buffer
        (``bytes(n)`` is calloc'ed; ``BytesIO`` lends it out writable and
        ``getvalue`` returns it without a copy): no per-block buffers, no join.
        A leaf counts only once its bytes hash to its CID and its framing says it
        holds exactly the bytes of its range; the ranges tile the file because
        each node's sizes are checked against its parent's. The root's declared
        size is checked against ``max_size`` before the buffer is allocated, and the
        blocks scheduled against :func:`~ipfs.unixfs.block_budget`.
        """
        node = decode_file_node(self._read_block(cid), cid, cid)
        if not node.links:
            if node.filesize is not None and node.filesize != len(node.data):
                raise DagSizeMismatch(f"{cid} declares {node.filesize} bytes but its DAG holds {len(node.data)}")
            if max_size is not None and len(node.data) > max_size:
                raise ContentTooLarge(cid, max_size, len(node.data))
            return bytes(node.data)
        total = _subtree_size(node, cid)
        if max_size is not None and total > max_size:
            raise ContentTooLarge(cid, max_size, total)
        budget = None if max_size is None else block_budget(max_size)
        scheduled = 1
        out = io.BytesIO(bytes(total))
        pool = _io_pool()
        jobs: deque[tuple[str, int, int, Future]] = deque()
        with out.getbuffer() as view:

            def schedule(parent: Node, offset: int) -> None:
                nonlocal scheduled
                scheduled += len(parent.links)
                if budget is not None and scheduled > budget:
                    raise DagTooComplex(f"{cid} needs more than {budget} blocks for at most {max_size} bytes")
                for link, size in zip(parent.links, parent.blocksizes):
                    job = pool.submit(_read_leaf_into, self._block_file(link.cid), view[offset:offset + size])
                    jobs.append((link.cid, offset, size, job))
                    offset += size

            try:
                schedule(node, 0)
                while jobs:
                    c, offset, size, job = jobs.popleft()
                    block = self._checked(c, cid, job.result())
                    if block is _IN_PLACE:
                        continue  # a leaf holding exactly its range, now in `view`
                    child = decode_file_node(block, c, cid)
                    if child.links:
                        held = _subtree_size(child, c)
                        if held != size:
                            raise DagSizeMismatch(f"block {c} holds {held} bytes; its parent says {size}")
                        schedule(child, offset)
                    else:
                        if len(child.data) != size or child.filesize not in (None, size):
                            raise DagSizeMismatch(f"block {c} holds {len(child.data)} bytes; its parent says {size}")
                        view[offset:offset + size] = child.data
            finally:
                futures_wait([j[3] for j in jobs])  # no thread may still write into `view`
        return out.getvalue()

    def get_to(self, cid: str, out: BinaryIO, *, max_size: int | None = None) -> int:
        cid = normalize_cid(cid)
        n = 0
        for piece in iter_content(cid, self._reader(cid), verify=False, max_size=max_size):
            out.write(piece)
            n += len(piece)
        return n

    def iter_chunks(self, cid: str, *, max_size: int | None = None) -> Iterator[bytes]:
        """The content of ``cid`` as verified chunks (streaming, a bounded read-ahead in memory)."""
        cid = normalize_cid(cid)
        return iter_content(cid, self._reader(cid), verify=False, max_size=max_size)

    def put_block(self, block: bytes) -> str:
        """Store one raw dag-pb block as it is (``ipfs block put``); return its CID. Nothing is pinned.

        For blocks built elsewhere (e.g. received whole). Blocks over
        :data:`MAX_BLOCK_SIZE` are refused, as the IPFS network refuses them.
        """
        block = bytes(block)
        if len(block) > MAX_BLOCK_SIZE:
            raise StoreError(f"a block of {len(block)} bytes is over the {MAX_BLOCK_SIZE}-byte limit")
        cid = cid_of_block(block)
        dirty: set[str] = set()
        try:
            with self._locked(exclusive=False):
                self._store_block(cid, (block,), dirty)
                for d in dirty:
                    self._fsync_dir(d)
        except OSError as exc:
            raise StoreError(f"put into the local store {self.root} failed: {exc}") from exc
        return cid

    def has(self, cid: str) -> bool:
        """All blocks present; internal nodes are read (and verified), leaves only checked for presence.

        Each distinct block is looked at once, however often the DAG links it.
        """
        cid = normalize_cid(cid)
        stack = [cid]
        seen = {cid}
        while stack:
            c = stack.pop()
            path = self._block_file(c)
            try:
                with open(path, "rb") as fh:
                    first = fh.read(1)
            except FileNotFoundError:
                return False
            if first != b"\x12":  # canonical dag-pb puts Links (field 2) first: no 0x12, no links
                continue
            try:
                links = iter_links(self._read_block(c, cid), c)
            except StoreError:
                return False
            for link in links:
                if link not in seen:
                    seen.add(link)
                    stack.append(link)
        return True

    def pin(self, cid: str) -> None:
        cid = normalize_cid(cid)
        with self._locked(exclusive=False):
            if not self.has(cid):
                raise ContentNotFound(f"cannot pin {cid}: it is not (wholly) in the local store {self.root}")
            if not (self._pins / cid).exists():
                self._write_atomic(str(self._pins), cid, (_PIN_RECORD,), None)

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
                    path = self._block_file(c)
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

