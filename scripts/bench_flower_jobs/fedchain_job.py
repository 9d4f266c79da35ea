"""One fedchain run of a benchmark job, timed and profiled; prints one JSON line.

``--prepare DIR`` instead writes what the Flower side needs to run the same job
(each participating hospital's preprocessed train/validation split, the
initial model, the per-round shuffling seeds, the global test split) without
touching a chain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

T_START = time.perf_counter()

from fedchain import allocator  # noqa: E402

allocator.tune()  # as the fedchain command does before any command runs

from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jobs import JOBS  # noqa: E402
from profiler import Profiler, instrument  # noqa: E402

import torch  # noqa: E402

from fedchain.cli.demo import _policies  # noqa: E402
from fedchain.cli.simulation import Simulation, settled_heap  # noqa: E402
from fedchain.node.dataset import apply_preprocessing, load_dataset, split_for_plan  # noqa: E402
from fedchain.node.train import client_seed, evaluate  # noqa: E402
from fedchain.sample_data import demo_plan, make_demo_data  # noqa: E402
from fedchain.serialize import bytes_to_state_dict  # noqa: E402

T_IMPORTED = time.perf_counter()


def job_plan(job: dict, hospitals, seed: int):
    changes = {"rounds": job["rounds"], "local_epochs": job["local_epochs"]}
    if job["model"]:
        changes["model"] = job["model"]
    return demo_plan(hospitals, seed=seed).with_changes(**changes)


def prepare(job_name: str, out: Path, seed: int) -> None:
    """Write the job's data for the Flower side (see the module docstring)."""
    from safetensors.torch import save_file

    from fedchain.models import initial_state
    from fedchain.plan import train_config

    job = JOBS[job_name]
    data = make_demo_data(out / "csv", n_hospitals=job["hospitals"], seed=seed)
    plan = job_plan(job, data.hospitals, seed)
    names = [h.name for h in data.hospitals]
    if job["demo_policies"]:  # the fourth hospital's policy excludes the purpose: it sits out
        names = [n for i, n in enumerate(names) if i != 3]
    clients = []
    for h in data.hospitals:
        if h.name not in names:
            continue
        train, val = split_for_plan(load_dataset(h.csv_path, h.schema_path), plan, h.name)
        tensors = {
            "x_train": apply_preprocessing(plan, train.features), "y_train": train.labels,
            "x_val": apply_preprocessing(plan, val.features), "y_val": val.labels,
        }
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{h.name}.safetensors"))
        clients.append({"name": h.name, "seeds": [client_seed(plan, r, h.name) for r in range(1, plan.rounds + 1)]})
    test = load_dataset(data.test.csv_path, data.test.schema_path)
    save_file({"x": apply_preprocessing(plan, test.features).contiguous(), "y": test.labels},
              str(out / "test.safetensors"))
    save_file(initial_state(plan.model, plan.seed), str(out / "initial.safetensors"))
    cfg = train_config(plan, 1)
    opt = cfg.optimizer
    (out / "job.json").write_text(json.dumps({
        "job": job_name, "rounds": plan.rounds, "model": plan.model.model_dump(mode="json"),
        "local_epochs": cfg.local_epochs, "batch_size": cfg.batch_size,
        "optimizer": {"lr": opt.lr, "momentum": opt.momentum, "weight_decay": opt.weight_decay},
        "clients": clients, "n_test": test.n_rows,
    }, indent=1))


def backend_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each backend process and its children have used so far."""
    import psutil  # installed with mirakuru, a fedchain dependency

    out = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            out[name] = sum(sum(p.cpu_times()[:2]) for p in (proc, *proc.children(recursive=True)))
        except psutil.Error:
            out[name] = float("nan")
    return out


def run(job_name: str, out: Path, seed: int, chain_url: str, profile: bool, store_url: str | None = None,
        backend_pids: dict[str, int] | None = None) -> dict:
    job = JOBS[job_name]
    prof = Profiler()
    if profile:
        instrument(prof)
    t0 = time.perf_counter()
    store = None
    if store_url:
        from fedchain.ipfs import open_store
        store = open_store(store_url)
    sim = Simulation.create(out, hospitals=job["hospitals"], seed=seed, chain_url=chain_url, store=store)
    policies = _policies(sim.names, sim.members[0].address) if job["demo_policies"] else None
    sim.register_datasets(policies)
    plan = sim.plan(job_plan(job, sim.data.hospitals, seed))
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    t_setup = time.perf_counter() - t0
    rounds = []
    with settled_heap():  # as fedchain demo / simulate do around their rounds
        for r in range(1, plan.rounds + 1):
            before = prof.snapshot()
            back = backend_cpu(backend_pids or {})
            t, cpu = time.perf_counter(), time.process_time()
            done = sim.run_round(pid, r, nodes, coord, start_next=r < plan.rounds)
            if not done.result.closed:
                raise SystemExit(f"round {r} did not close: {done.result.reason}")
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
            after = prof.snapshot()
            back = {k: v - back[k] for k, v in backend_cpu(backend_pids or {}).items()}
            rounds.append({"round": r, "seconds": seconds, "cpu_seconds": cpu, "backend_cpu_seconds": back,
                           "participants": len(done.committed),
                           "validation": done.validation_metric,
                           "breakdown": {c: after[c] - before[c] for c in after}})
    final = bytes_to_state_dict(sim.store.get(done.result.aggregate_cid))
    test = load_dataset(sim.data.test.csv_path, sim.data.test.schema_path)
    accuracy = evaluate(final, plan, test)["accuracy"]
    return {
        "system": "fedchain", "job": job_name, "chain": chain_url, "store": store_url or "embedded",
        "import_seconds": T_IMPORTED - T_START,
        "setup_seconds": t_setup, "rounds": rounds, "test_accuracy": accuracy,
        "in_process_seconds": time.perf_counter() - T_START,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", choices=sorted(JOBS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chain", default="eth-tester://")
    ap.add_argument("--store", default=None, help="a content store URL (default: the embedded store)")
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--backend-pids", default="", help="NAME=PID,...: processes (anvil, js-ipfs) whose CPU time "
                                                          "each round is reported beside fedchain's")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.prepare:
        prepare(args.job, args.out, args.seed)
        return
    pids = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.backend_pids.split(",") if kv)}
    print(json.dumps(run(args.job, args.out, args.seed, args.chain, not args.no_profile, args.store, pids)), flush=True)


if __name__ == "__main__":
    main()
