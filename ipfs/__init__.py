"""Content storage: one interface, an embedded block store and a Kubo-RPC client.

``ipfs.open_store(url)`` picks the backend from a URL; the embedded
:class:`LocalStore` is the default and yields the same CIDs as ``ipfs add``.

* ``local:PATH`` or a plain filesystem path -> :class:`LocalStore` (no daemon);
* a multiaddr (``/ip4/127.0.0.1/tcp/5001``) or ``http(s)://host:port`` ->
  :class:`KuboStore`, talking to Kubo or js-ipfs over the Kubo RPC API.

:class:`JsIpfsDaemon` starts a local js-ipfs daemon; :mod:`ipfs.unixfs` builds
and reads the UnixFS DAGs (``compute_cid`` gives a payload's CID offline).
"""

from __future__ import annotations

# This folder installs as ``fedchain.ipfs`` only: with the repository root on
# sys.path it would also be found as a top-level ``ipfs`` package and shadow (or be
# shadowed by) any other package of that generic name.
if __name__ != "fedchain.ipfs":
    raise ImportError("fedchain's ipfs package is imported as 'fedchain.ipfs', not 'ipfs'")


from pathlib import Path

from .daemon import DaemonError, JsIpfsDaemon, JsIpfsNotFound
from .kubo import KuboStore
from .local import LocalStore
from .store import (
    BlockCorrupt,
    ContentMismatch,
    ContentNotFound,
    ContentStore,
    ContentTooLarge,
    DagSizeMismatch,
    DagTooComplex,
    InvalidCid,
    InvalidDag,
    NotPinned,
    StoreError,
    StoreUnavailable,
)
from .unixfs import compute_cid

__all__ = [
    "BlockCorrupt",
    "ContentMismatch",
    "ContentNotFound",
    "ContentStore",
    "ContentTooLarge",
    "DagSizeMismatch",
    "DagTooComplex",
    "DaemonError",
    "InvalidCid",
    "InvalidDag",
    "JsIpfsDaemon",
    "JsIpfsNotFound",
    "KuboStore",
    "LocalStore",
    "NotPinned",
    "StoreError",
    "StoreUnavailable",
    "compute_cid",
    "open_store",
]


def open_store(url_or_path: str | Path, *, retry=None, **kwargs) -> ContentStore:
    """Open the store a URL names; extra keyword arguments go to the backend's constructor.

    ``local:PATH`` / a plain path -> LocalStore; ``/ip4|ip6|dns…/…/tcp/…`` multiaddr
    or ``http(s)://host:port`` -> KuboStore. ``retry`` (a :class:`~fedchain.retry.RetryPolicy`)
    says how long a daemon that does not answer is waited for; the embedded store has no
    daemon and ignores it.
    """
    if isinstance(url_or_path, Path):
        return LocalStore(url_or_path, **kwargs)
    target = str(url_or_path).strip()
    if not target:
        raise StoreError("empty store URL; use local:PATH, /ip4/HOST/tcp/PORT or http://HOST:PORT")
    if target.startswith("local:"):
        path = target[len("local:"):]
        if path.startswith("//"):  # local:///abs/path
            path = path[2:]
        if not path:
            raise StoreError("local: store URL without a path (use local:PATH)")
        return LocalStore(Path(path), **kwargs)
    if target.startswith(("http://", "https://")) or (
        target.startswith(("/ip4/", "/ip6/", "/dns/", "/dns4/", "/dns6/")) and "/tcp/" in target
    ):
        return KuboStore(target, retry=retry, **kwargs)
    if "://" in target:
        raise StoreError(f"unsupported store URL {target!r}; use local:PATH, /ip4/HOST/tcp/PORT or http://HOST:PORT")
    return LocalStore(Path(target), **kwargs)
