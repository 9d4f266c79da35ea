"""Shared pytest fixtures: each area keeps its fixtures in its own module."""

from fixtures_chain import *  # noqa: F401,F403  (anvil process, chain backends)
from fixtures_ipfs import *  # noqa: F401,F403  (js-ipfs daemon, stores)
