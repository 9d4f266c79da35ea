"""IPFS fixtures (js-ipfs daemon, LocalStore)."""
