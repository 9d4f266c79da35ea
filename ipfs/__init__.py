"""Content storage: one interface, an embedded block store and a Kubo-RPC client.

``ipfs.open_store(url)`` picks the backend from a URL; the embedded
:class:`LocalStore` is the default and yields the same CIDs as ``ipfs add``.
"""
