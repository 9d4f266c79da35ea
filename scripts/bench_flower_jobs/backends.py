"""Start anvil (a block per transaction) and js-ipfs for one benchmark; print their URLs; stop at end of input.

Run with fedchain's Python by ``scripts/bench_flower --backends anvil+js-ipfs``: one JSON line
``{"chain": URL, "store": URL, "pids": {"anvil": PID, "js-ipfs": PID}}`` on stdout (the benchmark's
job counts the CPU time those processes spend in each round), then both processes run until this process's standard input
is closed (the benchmark is done) or it is signalled.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fedchain.contracts.anvil import Anvil
from fedchain.ipfs.daemon import JsIpfsDaemon


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        with Anvil() as anvil, JsIpfsDaemon(repo=Path(tmp) / "ipfs-repo", log_file=Path(tmp) / "ipfs.log") as ipfs:
            print(json.dumps({"chain": anvil.url, "store": ipfs.url, "pids": {"anvil": anvil.pid, "js-ipfs": ipfs.pid}}),
                  flush=True)
            sys.stdin.read()


if __name__ == "__main__":
    main()
