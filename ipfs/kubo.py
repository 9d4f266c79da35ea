"""A ContentStore over the Kubo RPC API (``/api/v0``): a user's Kubo, or js-ipfs.

Talks through ``ipfshttpclient.Client(addr)`` -- never ``ipfshttpclient.connect()``,
which refuses daemons newer than 0.8 -- and trusts the daemon for nothing:

* ``put`` streams the payload (multipart, chunked) and computes the CID locally
  from the very bytes it sends; a daemon answering another CID is an error.
* ``get`` / ``get_to`` stream ``cat`` and recompute the CID of what arrived. If
  it differs (content added with non-default settings, or a lying daemon) the
  DAG is re-read block by block (``block/get``), every block hash-checked, and
  the bytes compared by sha256; only then is the content accepted.
* With ``max_size`` (content another party pinned), the root block is fetched and
  hash-checked first and a root declaring more is refused before ``cat`` starts;
  the ``cat`` stream is then counted and cut off (:class:`ContentTooLarge`) before
  a byte past ``max_size`` is written, whatever the daemon sends.

Daemon quirks handled here (js-ipfs 0.66 / RPC 0.18):

* js-ipfs ignores ``offline=true``: asking an offline js-ipfs for a block it
  lacks waits forever. Every lookup therefore carries the daemon-side
  ``timeout`` option (both Kubo and js-ipfs honour it); an expired lookup is
  reported as :class:`ContentNotFound`. (``refs`` reports the expiry inside a
  200 answer, ``{"Ref": "", "Err": "Want for … aborted"}``, which :meth:`has` reads.)
* js-ipfs answers a malformed CID with "Invalid request query input"; CIDs are
  validated locally first so callers get :class:`InvalidCid`.

Connection failures (refused, reset, a stream broken mid-way) are retried as
the store's :class:`~fedchain.retry.RetryPolicy` says — by default for a
couple of seconds; a role process passes its configured policy (minutes), so
a restarted daemon is waited for — each wait logged; then they are raised as
:class:`StoreUnavailable` naming the address and how to start a daemon. A
retry starts the call over: an upload is sent again from its start (a
one-shot stream that cannot be rewound is not retried) and a download is
written again from where it began. Timeouts and the daemon's answers are
never retried.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import warnings
from typing import BinaryIO, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_exc
import requests
import urllib3.exceptions

from fedchain.retry import RetryPolicy

from .store import (
    ContentMismatch,
    ContentNotFound,
    ContentStore,
    ContentTooLarge,
    NotPinned,
    StoreError,
    StoreUnavailable,
)
from .unixfs import (
    CHUNK_SIZE,
    DagBuilder,
    check_max_size,
    decode_file_node,
    iter_content,
    node_size,
    normalize_cid,
    verify_block,
)

T = TypeVar("T")

# ipfshttpclient 0.7 passes urllib3 a parameter urllib3 2.x deprecates; harmless.
warnings.filterwarnings("ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning)

DEFAULT_ADDR = "/ip4/127.0.0.1/tcp/5001"

#: The daemon did not answer: refused, reset, or gone in the middle of an answer (retried).
_TRANSIENT: tuple[type[BaseException], ...] = (
    ipfs_exc.ConnectionError,
    ipfs_exc.ProtocolError,  # ipfshttpclient's name for "connection aborted" mid-request
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    ConnectionError,
)

_HOW_TO_START = (
    "start one with `fedchain ipfs up` (js-ipfs), `ipfs daemon` (Kubo) or "
    "`jsipfs daemon --offline`, or use the embedded store (local:PATH)"
)


def to_multiaddr(addr: str) -> str:
    """``http://host:port`` / ``https://…`` / multiaddr -> the multiaddr ipfshttpclient takes."""
    addr = addr.strip()
    if addr.startswith("/"):
        return addr.rstrip("/")
    parts = urlsplit(addr if "://" in addr else f"http://{addr}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"not an IPFS API address: {addr!r} (use /ip4/HOST/tcp/PORT or http://HOST:PORT)")
    if parts.path not in ("", "/", "/api/v0", "/api/v0/"):
        raise StoreError(f"unexpected path in IPFS API URL {addr!r}; give only scheme, host and port")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 5001)
    try:
        ip = ipaddress.ip_address(host)
        proto = "ip4" if ip.version == 4 else "ip6"
    except ValueError:
        proto = "dns"
    ma = f"/{proto}/{host}/tcp/{port}"
    return ma + "/https" if parts.scheme == "https" else ma


def to_url(multiaddr: str) -> str:
    """Best-effort ``http://host:port`` for messages."""
    p = multiaddr.strip("/").split("/")
    if len(p) >= 4 and p[2] == "tcp":
        scheme = "https" if p[-1] == "https" else "http"
        host = f"[{p[1]}]" if p[0] == "ip6" else p[1]
        return f"{scheme}://{host}:{p[3]}"
    return multiaddr


class _TeeReader:
    """Feeds a DagBuilder with exactly the bytes handed to the HTTP body."""

    def __init__(self, data: bytes | bytearray | memoryview | BinaryIO) -> None:
        self.data = data
        self.builder = DagBuilder()
        self.sent = 0
        self._start: int | None = None
        if not isinstance(data, (bytes, bytearray, memoryview)):
            try:
                self._start = data.tell() if data.seekable() else None
            except (AttributeError, OSError, ValueError):
                self._start = None

    def replayable(self) -> bool:
        return isinstance(self.data, (bytes, bytearray, memoryview)) or self._start is not None or self.sent == 0

    def rewind(self) -> None:
        if self.sent and self._start is not None:
            self.data.seek(self._start)  # type: ignore[union-attr]
        self.builder = DagBuilder()
        self.sent = 0

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.data, (bytes, bytearray, memoryview)):
            view = memoryview(self.data).cast("B")
            for pos in range(0, len(view), CHUNK_SIZE):
                piece = view[pos:pos + CHUNK_SIZE]
                self.builder.update(piece)
                self.sent += len(piece)
                yield bytes(piece)
            return
        while True:
            piece = self.data.read(CHUNK_SIZE)
            if not piece:
                return
            if isinstance(piece, str):
                raise TypeError("the stream must be opened in binary mode")
            self.builder.update(piece)
            self.sent += len(piece)
            yield bytes(piece)


class KuboStore(ContentStore):
    """Content store backed by a daemon speaking the Kubo RPC API.

    ``addr``: multiaddr (``/ip4/127.0.0.1/tcp/5001``) or URL (``http://127.0.0.1:5001``).
    ``timeout``: seconds to wait for the daemon to send data (per read);
    ``connect_timeout``: seconds to connect; ``fetch_timeout``: daemon-side limit
    for finding content (``cat``/``pin add``; None = unlimited, risky with
    js-ipfs); ``has_timeout``: the same for :meth:`has`; ``retry``: how long to
    ride out an unreachable daemon (default :meth:`RetryPolicy.brief`);
    ``offline``: ask the daemon never to fetch from the network (Kubo honours
    it, js-ipfs ignores it).
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 3.0,
        fetch_timeout: float | None = 60.0,
        has_timeout: float = 2.0,
        retry: RetryPolicy | None = None,
        offline: bool = False,
    ) -> None:
        self.addr = to_multiaddr(addr)
        self.url = to_url(self.addr)
        self.fetch_timeout = fetch_timeout
        self.has_timeout = has_timeout
        self.retry = retry if retry is not None else RetryPolicy.brief()
        self.offline = offline
        try:
            self._client = ipfshttpclient.Client(
                self.addr,
                base="api/v0",
                chunk_size=CHUNK_SIZE,
                timeout=(connect_timeout, timeout),
                offline=offline,
            )
        except ipfs_exc.AddressError as exc:
            raise StoreError(f"not an IPFS API address: {addr!r} ({exc})") from None

    def __repr__(self) -> str:
        return f"KuboStore({self.addr!r})"

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # pragma: no cover - nothing to release
            pass

    # ------------------------------------------------------------------ plumbing

    def _opts(self, limit: float | None) -> dict[str, str]:
        return {"timeout": f"{limit:g}s"} if limit else {}

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        text = str(exc)
        if isinstance(exc, ipfs_exc.TimeoutError):
            why = "timed out"
        elif "refused" in text.lower():
            why = "is not reachable (connection refused)"
        else:
            why = f"is not reachable ({_short(exc)[:160]})"
        return StoreUnavailable(f"IPFS daemon at {self.addr} ({self.url}) {why}; {_HOW_TO_START}")

    def _call(self, what: str, fn: Callable[[], T], *, retry_ok: Callable[[], bool] | None = None,
              before_retry: Callable[[], None] | None = None) -> T:
        """Run ``fn`` under the retry policy (connection failures only); map errors to StoreErrors."""
        try:
            return self.retry.call(fn, transient=_TRANSIENT, what=f"IPFS daemon at {self.addr} ({what})",
                                   can_retry=retry_ok, before_retry=before_retry)
        except _TRANSIENT as exc:
            raise self._unavailable(exc) from None
        except ipfs_exc.TimeoutError as exc:
            raise self._unavailable(exc) from None
        except ipfs_exc.ErrorResponse as exc:
            raise self._error(what, exc) from None
        except ipfs_exc.CommunicationError as exc:  # ProtocolError, StatusError
            raise StoreError(f"IPFS daemon at {self.addr}: {what} failed: {_short(exc)}") from None
        except requests.exceptions.RequestException as exc:  # anything else of the HTTP layer
            raise self._unavailable(exc) from None

    def _error(self, what: str, exc: Exception) -> StoreError:
        msg = _short(exc)
        low = msg.lower()
        if "not pinned" in low:
            return NotPinned(f"{what}: {msg}")
        if any(s in low for s in ("timed out", "timeout", "deadline exceeded", "aborted", "not found", "no link named",
                                  "could not resolve")):
            return ContentNotFound(f"{what}: the daemon at {self.addr} could not find it ({msg})")
        return StoreError(f"IPFS daemon at {self.addr}: {what} failed: {msg}")

    # ------------------------------------------------------------------ ContentStore

    def put(self, data: bytes | BinaryIO, *, pin: bool = True) -> str:
        tee = _TeeReader(data)
        opts = {
            "pin": "true" if pin else "false",
            "cid-version": "0",
            "raw-leaves": "false",
            "chunker": f"size-{CHUNK_SIZE}",
        }
        got = self._call(
            "add",
            lambda: self._client.add_bytes(tee.chunks(), opts=opts),
            retry_ok=tee.replayable,
            before_retry=tee.rewind,
        )
        tee.builder.finish()
        mine = tee.builder.root
        if got != mine:
            raise ContentMismatch(
                f"IPFS daemon at {self.addr} stored {tee.sent} bytes as {got}, but their CID is {mine}"
            )
        return mine

    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        buf = io.BytesIO()
        self.get_to(cid, buf, max_size=max_size)
        return buf.getvalue()

    def get_to(self, cid: str, out: BinaryIO, *, max_size: int | None = None) -> int:
        """Stream ``cid`` into ``out``; on :class:`ContentMismatch` ``out`` holds unverified bytes.

        With ``max_size``, a root declaring more is refused before anything is
        streamed, and the stream is cut off before a byte past ``max_size`` is written.
        """
        cid = normalize_cid(cid)
        check_max_size(max_size)
        if max_size is not None:
            root = self.get_block(cid)
            verify_block(cid, root)
            declared = node_size(decode_file_node(root, cid, cid), cid)
            if declared > max_size:
                raise ContentTooLarge(cid, max_size, declared)
        try:
            start = out.tell() if out.seekable() else None
        except (AttributeError, OSError, ValueError):
            start = None

        def rewind() -> None:  # a retry writes the content again from where it began
            out.seek(start)
            out.truncate()

        builder, digest, n = self._call(
            f"cat {cid}", lambda: self._cat_into(cid, out, max_size),
            retry_ok=lambda: start is not None, before_retry=rewind,
        )
        builder.finish()
        if builder.root != cid:
            self._verify_by_blocks(cid, digest.hexdigest(), n, builder.root, max_size)
        return n

    def _cat_into(self, cid: str, out: BinaryIO, max_size: int | None):
        builder = DagBuilder()
        digest = hashlib.sha256()
        n = 0
        stream = self._client.cat(cid, stream=True, opts=self._opts(self.fetch_timeout))
        try:
            for piece in stream:
                if not piece:
                    continue
                if max_size is not None and n + len(piece) > max_size:
                    raise ContentTooLarge(cid, max_size)
                builder.update(piece)
                digest.update(piece)
                out.write(piece)
                n += len(piece)
        finally:
            _close(stream)
        return builder, digest, n

    def iter_chunks(self, cid: str, *, max_size: int | None = None) -> Iterator[bytes]:
        """The content of ``cid`` block by block, each hash-checked before it is yielded."""
        cid = normalize_cid(cid)
        return iter_content(cid, self.get_block, max_size=max_size)

    def get_block(self, cid: str) -> bytes:
        """One raw block (not verified here; :func:`ipfs.unixfs.iter_content` verifies)."""
        cid = normalize_cid(cid)
        return self._call(f"block/get {cid}", lambda: self._client.block.get(cid, opts=self._opts(self.fetch_timeout)))

    def _verify_by_blocks(self, cid: str, sha_hex: str, size: int, recomputed: str | None,
                          max_size: int | None) -> None:
        digest = hashlib.sha256()
        total = 0
        for piece in iter_content(cid, self.get_block, max_size=max_size):
            digest.update(piece)
            total += len(piece)
        if total != size or digest.hexdigest() != sha_hex:
            raise ContentMismatch(
                f"IPFS daemon at {self.addr} returned {size} bytes for {cid} that do not match its DAG "
                f"(their CID is {recomputed})"
            )

    def has(self, cid: str) -> bool:
        cid = normalize_cid(cid)
        opts = self._opts(self.has_timeout)
        opts["recursive"] = "true"
        try:
            refs = self._call(f"refs {cid}", lambda: self._client.unstable.refs(cid, opts=opts, offline=True))
        except (ContentNotFound, NotPinned):
            return False
        except StoreUnavailable:
            raise
        except StoreError:
            return False
        return not any(_field(r, "Err") for r in refs or [])

    def pin(self, cid: str) -> None:
        cid = normalize_cid(cid)
        self._call(f"pin add {cid}", lambda: self._client.pin.add(cid, opts=self._opts(self.fetch_timeout)))

    def unpin(self, cid: str) -> None:
        cid = normalize_cid(cid)
        self._call(f"pin rm {cid}", lambda: self._client.pin.rm(cid))

    def is_pinned(self, cid: str) -> bool:
        cid = normalize_cid(cid)
        opts = self._opts(self.has_timeout)  # Kubo would otherwise try to fetch an unknown root
        try:
            res = self._call(f"pin ls {cid}", lambda: self._client.pin.ls(cid, type="all", opts=opts, offline=True))
        except (NotPinned, ContentNotFound):
            return False
        entry = (res.get("Keys") or {}).get(cid) or {}
        return entry.get("Type") in ("recursive", "direct")

    def pins(self) -> list[str]:
        res = self._call("pin ls", lambda: self._client.pin.ls(type="recursive"))
        direct = self._call("pin ls", lambda: self._client.pin.ls(type="direct"))
        return sorted(set(res.get("Keys") or {}) | set(direct.get("Keys") or {}))

    def version(self) -> dict:
        """The daemon's ``version`` answer (a cheap liveness check)."""
        return dict(self._call("version", lambda: self._client.version()))


def _field(item: object, key: str) -> object:
    try:
        return item[key]  # type: ignore[index]
    except (KeyError, TypeError, IndexError):
        return None


def _short(exc: Exception) -> str:
    msg = " ".join(str(exc).split())
    return msg[:300] + ("…" if len(msg) > 300 else "")


def _close(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # pragma: no cover
            pass
