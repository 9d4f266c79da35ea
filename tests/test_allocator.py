"""fedchain.allocator: the fedchain command tunes glibc's allocator so model-sized buffers are reused.

Each check runs in a fresh interpreter: ``mallopt`` settings are process-wide and cannot be undone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# A round's pattern in small: worker threads (a fresh pool each round, as a simulated round has)
# make model-sized buffers (an update and a copy of it); the caller drops them. Prints the
# minor page faults per round.
WORKLOAD = textwrap.dedent("""
    import json, resource, sys
    from concurrent.futures import ThreadPoolExecutor
    from fedchain import allocator
    if sys.argv[1] == "tuned":
        allocator.tune()
    N = 17_000_000
    def work(i):
        update = bytes([i + 1]) * N
        return update[1:] + b"x"
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):  # warm up: the heaps reach their working size
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(work, range(5)))
    start = faults()
    for _ in range(5):
        with ThreadPoolExecutor(2) as pool:
            outs = list(pool.map(work, range(5)))
        assert all(len(o) == N for o in outs)
        del outs
    print(json.dumps({"faults_per_round": (faults() - start) / 5, "applied": allocator.applied()}))
""")


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    full.update(env or {})
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=full, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_tuned_process_reuses_model_sized_buffers_instead_of_faulting_fresh_pages():
    plain = json.loads(_python(WORKLOAD, "plain"))
    tuned = json.loads(_python(WORKLOAD, "tuned"))
    pages_per_buffer = 17_000_000 // 4096
    assert plain["applied"] is None and tuned["applied"]
    # Without tuning most of the 10 buffers a round makes are fresh pages (glibc: ~9 of 10).
    assert plain["faults_per_round"] > 6 * pages_per_buffer, plain
    # Tuned, the heaps keep and reuse them (glibc 2.36: 2 faults a round against ~37,000).
    assert tuned["faults_per_round"] < plain["faults_per_round"] / 10, (plain, tuned)


def test_tune_sets_each_parameter_once_and_leaves_what_the_environment_sets():
    code = "import json; from fedchain import allocator; a = allocator.tune(); print(json.dumps([a, allocator.tune()]))"
    first, again = json.loads(_python(code))
    assert first == again  # the second call sets nothing new
    assert first == {"MALLOC_ARENA_MAX": max(2, os.cpu_count() or 2), "MALLOC_MMAP_THRESHOLD_": 32 << 20,
                     "MALLOC_TRIM_THRESHOLD_": 256 << 20, "MALLOC_TOP_PAD_": 64 << 20}
    mine, _ = json.loads(_python(code, env={"MALLOC_ARENA_MAX": "8"}))
    assert "MALLOC_ARENA_MAX" not in mine and "MALLOC_TRIM_THRESHOLD_" in mine
    tunables, _ = json.loads(_python(code, env={"GLIBC_TUNABLES": "glibc.malloc.arena_max=8"}))
    assert tunables == {}


def test_the_fedchain_command_tunes_before_any_command_runs_and_an_import_does_not():
    code = textwrap.dedent("""
        import json, contextlib, io
        from fedchain import allocator
        import fedchain.cli as cli
        before = allocator.applied()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["plan", "--help"])
        print(json.dumps([before, allocator.applied(), code]))
    """)
    before, after, code = json.loads(_python(code))
    assert code == 0
    assert before is None  # importing fedchain (and its CLI) changes nothing
    assert after and after["MALLOC_MMAP_THRESHOLD_"] == 32 << 20
