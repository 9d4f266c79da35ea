"""Statistics without pooling: ``dataset moments`` and ``plan standardize``.

A hospital runs ``fedchain dataset moments`` on its own CSV and shares the JSON
file it writes (row count, per-feature sums and sums of squares; no row). Anyone
with every hospital's file runs ``fedchain plan standardize`` to get the pooled
mean/std as the plan's ``[preprocessing]`` table -- the same numbers pooling the
rows would give (:mod:`fedchain.moments`). Neither command touches the chain
or the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from fedchain.cli.common import err_console
from fedchain.cli.governance import dataset_app
from fedchain.cli.outputs import check_target
from fedchain.cli.plan import plan_app
from fedchain.errors import ConfigError
from fedchain.moments import (
    MIN_ROWS,
    combine_moments,
    moments_document,
    preprocessing_toml,
    read_moments,
    set_preprocessing,
)
from fedchain.node.dataset import feature_moments, load_dataset
from fedchain.plan import MAX_PLAN_BYTES, PlanError
from fedchain.schema import load_schema
from fedchain.usecases.models import write_atomically


def register(app: typer.Typer) -> None:  # noqa: ARG001 - the commands join existing groups
    dataset_app.command("moments")(dataset_moments)
    plan_app.command("standardize")(plan_standardize)


def dataset_moments(
    csv: Annotated[Path, typer.Option(help="Your dataset CSV (read here; nothing is uploaded).")],
    schema: Annotated[Path, typer.Option(help="Its schema JSON.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Moments file to write (JSON), to share.")],
    min_rows: Annotated[int, typer.Option(help="Refuse datasets with fewer rows: the sums of a few rows come close to "
                                               "the rows themselves.")] = MIN_ROWS,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write your dataset's shareable moments: row count, per-feature sums and sums of squares (no rows).

    Give the file to whoever prepares the plan; 'fedchain plan standardize' combines
    every hospital's file into the pooled mean/std.
    """
    if min_rows < 1:
        raise ConfigError("--min-rows must be at least 1")
    check_target(output, force)
    sch = load_schema(schema)
    data = load_dataset(csv, sch)
    fm = feature_moments(data)
    doc = moments_document(sch.feature_names, fm.n, fm.sums, fm.sums_sq, min_rows=min_rows)
    write_atomically(output, doc.to_json().encode("utf-8"))
    err_console.print(f"wrote {escape(str(output))}: {doc.n} rows, {len(doc.features)} features "
                      "(count, sums and sums of squares only)")


def plan_standardize(
    moments: Annotated[list[Path], typer.Argument(help="Every hospital's moments file ('fedchain dataset moments').")],
    into: Annotated[Optional[Path], typer.Option(
        "--into", help="Write the table into this TOML plan (replacing its [preprocessing]); default: print it.")] = None,
) -> None:
    """Combine hospitals' moments files into the plan's [preprocessing] table (pooled mean/std; no data pooled)."""
    docs = [read_moments(p) for p in moments]
    std = combine_moments(docs, [str(p) for p in moments])
    table = preprocessing_toml(std)
    if into is None:
        typer.echo(table, nl=False)
        return
    try:
        with into.open("rb") as f:
            raw = f.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read plan {into}: {exc.strerror or exc}") from None
    if len(raw) > MAX_PLAN_BYTES or into.suffix.lower() == ".json":
        raise ConfigError(f"{into}: --into edits TOML plans (of at most {MAX_PLAN_BYTES} bytes); "
                          "for another plan print the table and paste it")
    try:
        text = set_preprocessing(raw.decode("utf-8"), table, source=str(into))
    except UnicodeDecodeError:
        raise ConfigError(f"{into}: not UTF-8 text") from None
    except PlanError as exc:
        for p in exc.problems:
            typer.echo(p.describe(str(into)))
        raise ConfigError(f"{into} was left unchanged: with these values it would not be a valid plan "
                          f"({len(exc.problems)} problem(s) above)") from None
    write_atomically(into, text.encode("utf-8"))
    err_console.print(f"{escape(str(into))}: [preprocessing] now holds the pooled mean/std of {len(std.features)} "
                      f"feature(s) over {std.n_rows} rows from {std.n_documents} file(s)")
