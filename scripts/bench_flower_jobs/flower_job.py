"""One Flower 1.42 run of a benchmark job (Message API, simulation engine); prints one JSON line.

Runs in the benchmark's own Flower environment (not fedchain's): it reads the
job written by ``fedchain_job.py --prepare`` (each hospital's preprocessed
split, the initial model, the shuffling seeds, the test split) and trains the
same model the same way as a fedchain node does -- SGD with momentum and
weight decay, cross-entropy, minibatches in a ``torch.randperm`` order from the
same per-round seed, one intra-op thread, deterministic algorithms -- with
Flower's own FedAvg on the server. Round times come from the server-side
``evaluate_fn``, which Flower calls after every round.
"""

from __future__ import annotations

import argparse
import json
import time

T_START = time.perf_counter()

from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

T_IMPORTED = time.perf_counter()
JOB_DIR = Path()
JOB: dict = {}


class LogReg(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.linear = nn.Linear(spec["in_features"], spec["n_classes"])

    def forward(self, x):
        return self.linear(x)


class MLP(nn.Module):
    def __init__(self, spec):
        super().__init__()
        widths = [spec["in_features"], *spec["hidden"]]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(widths[-1], spec["n_classes"])

    def forward(self, x):
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)


def new_model(state):
    spec = JOB["model"]
    model = (LogReg if spec["kind"] == "logreg" else MLP)(spec)
    model.load_state_dict(state)
    return model


_data: dict[int, dict] = {}


def client_data(pid: int) -> dict:
    if pid not in _data:
        _data[pid] = load_file(str(JOB_DIR / f"{JOB['clients'][pid]['name']}.safetensors"))
    return _data[pid]


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    d = client_data(pid)
    rnd = int(msg.content["config"]["server-round"])
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = new_model(msg.content["arrays"].to_torch_state_dict())
    model.train()
    o = JOB["optimizer"]
    opt = torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    gen = torch.Generator().manual_seed(JOB["clients"][pid]["seeds"][rnd - 1])
    x, y, n, bs = d["x_train"], d["y_train"], d["x_train"].shape[0], JOB["batch_size"]
    for _ in range(JOB["local_epochs"]):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": n})})
    return Message(content=content, reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    d = client_data(int(context.node_config["partition-id"]))
    model = new_model(msg.content["arrays"].to_torch_state_dict())
    acc = accuracy(model, d["x_val"], d["y_val"])
    metrics = MetricRecord({"accuracy": acc, "num-examples": int(d["x_val"].shape[0])})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


server = ServerApp()
MARKS: list[float] = []
RESULT: dict = {}


@server.main()
def main_server(grid: Grid, context: Context) -> None:
    n = len(JOB["clients"])
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n, min_evaluate_nodes=n,
                      min_available_nodes=n)
    initial = ArrayRecord(load_file(str(JOB_DIR / "initial.safetensors")))

    def central(server_round: int, arrays: ArrayRecord):
        MARKS.append(time.perf_counter())
        if server_round == JOB["rounds"]:
            test = load_file(str(JOB_DIR / "test.safetensors"))
            RESULT["test_accuracy"] = accuracy(new_model(arrays.to_torch_state_dict()), test["x"], test["y"])
        return None

    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=JOB["rounds"], evaluate_fn=central)
    RESULT["validation"] = {int(r): float(m["accuracy"]) for r, m in result.evaluate_metrics_clientapp.items()}


def main() -> None:
    global JOB_DIR, JOB
    ap = argparse.ArgumentParser()
    ap.add_argument("job_dir", type=Path)
    ap.add_argument("--cpus-per-client", type=float, default=1.0)
    args = ap.parse_args()
    JOB_DIR = args.job_dir
    JOB = json.loads((JOB_DIR / "job.json").read_text())
    t0 = time.perf_counter()
    run_simulation(server_app=server, client_app=client, num_supernodes=len(JOB["clients"]),
                   backend_config={"client_resources": {"num_cpus": args.cpus_per_client, "num_gpus": 0.0}})
    rounds = [{"round": r, "seconds": MARKS[r] - MARKS[r - 1], "participants": len(JOB["clients"]),
               "validation": RESULT.get("validation", {}).get(r)} for r in range(1, len(MARKS))]
    print(json.dumps({
        "system": "flower", "job": JOB["job"], "import_seconds": T_IMPORTED - T_START,
        "setup_seconds": (MARKS[0] - t0) if MARKS else None, "rounds": rounds,
        "test_accuracy": RESULT.get("test_accuracy"), "in_process_seconds": time.perf_counter() - T_START,
    }), flush=True)


if __name__ == "__main__":
    main()
