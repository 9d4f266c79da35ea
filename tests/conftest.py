"""Shared pytest fixtures (each area keeps its fixtures in its own module), and the suite's order.

``scripts/test`` runs the tests not marked ``alone`` on every core with pytest-xdist
(``--dist worksteal``: each worker starts with one contiguous slice of the collection and
steals from the others' queues when it runs dry), then the ``alone`` ones one at a time.
The long tests (marked ``slow``, a minute or more each) are put at the head of the
slices, round-robin, so that no worker meets one at the end with nothing left to steal.
"""

import os

# pytest-xdist's workers start with COLUMNS=80 / LINES=24 in their environment; a rich
# console built at import would freeze that width. Tests set the width they need.
for _var in ("COLUMNS", "LINES"):
    os.environ.pop(_var, None)

from fixtures_chain import *  # noqa: E402,F401,F403  (anvil process, chain backends)
from fixtures_ipfs import *  # noqa: E402,F401,F403  (js-ipfs daemon, stores)


def slice_sizes(n: int, workers: int) -> list[int]:
    """How many tests xdist's worksteal scheduler first hands each worker (its even split)."""
    sizes, remaining = [], n
    for i in range(workers):
        sizes.append(remaining // (workers - i))
        remaining -= sizes[-1]
    return sizes


def pytest_collection_modifyitems(config, items):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # set in xdist's workers only
    if workers < 2:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    ordered = []
    for k, size in enumerate(slice_sizes(len(items), workers)):
        head = slow[k::workers]
        ordered += head + fast[:size - len(head)]
        del fast[:size - len(head)]
    ordered += fast
    assert len(ordered) == len(items)
    items[:] = ordered
