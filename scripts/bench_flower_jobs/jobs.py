"""The jobs both systems run (plain data: imported by the fedchain and the Flower side alike)."""

from __future__ import annotations

#: name -> hospitals in the consortium, rounds, model table changes, local epochs, whether the
#: demo's policies apply (the fourth hospital's excludes the purpose, so it sits out).
JOBS: dict[str, dict] = {
    "demo": {"hospitals": 4, "rounds": 5, "model": None, "local_epochs": 3, "demo_policies": True},
    "mlp": {
        "hospitals": 5, "rounds": 5, "local_epochs": 1, "demo_policies": False,
        "model": {"kind": "mlp", "in_features": 30, "hidden": [2048, 2048], "n_classes": 2},
    },
    **{
        f"h{n}": {"hospitals": n, "rounds": 5, "model": None, "local_epochs": 3, "demo_policies": False}
        for n in (4, 8, 16, 32, 100)
    },
    # per-round time must stay flat as the chain grows
    "r20": {"hospitals": 4, "rounds": 20, "model": None, "local_epochs": 3, "demo_policies": False},
}
