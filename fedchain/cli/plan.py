"""Plan commands: write a plan from a template, validate it, show it in plain words.

None of them touches the chain or the store: a plan can be written and checked
before anyone submits it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from fedchain.cli.common import console, err_console
from fedchain.errors import ConfigError
from fedchain.plan import PLAN_JSON_SCHEMA, PlanError, load_plan
from fedchain.plandoc import describe, reference_markdown, template

plan_app = typer.Typer(
    help="Write, check and read training plans (offline: never touches the chain).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")


def _write(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path`` whole or not at all (temp file, then rename)."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists (use --force to overwrite it)")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


@plan_app.command("init")
def plan_init(
    model: Annotated[str, typer.Option("--model", "-m", help="Model kind: logreg, mlp or cnn.")] = "logreg",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here (default: print).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """A commented TOML plan for a model kind; it validates as written."""

    text = template(model)
    if output is None:
        typer.echo(text, nl=False)
        return
    _write(output, text, force)
    err_console.print(f"wrote {escape(str(output))}: edit it, then 'fedchain plan validate {escape(str(output))}'")


@plan_app.command("validate")
def plan_validate(
    file: Annotated[Path, typer.Argument(help="Plan file (TOML or JSON).")],
) -> None:
    """Check a plan: prints every problem with its line and exits 1 on any; never touches the chain."""

    try:
        plan = load_plan(file)
    except PlanError as exc:
        for p in exc.problems:
            typer.echo(p.describe(str(file)))
        err_console.print(f"{escape(str(file))}: {len(exc.problems)} problem(s); the plan is not valid")
        raise typer.Exit(1) from None
    console.print(
        f"{escape(str(file))}: valid plan {escape(plan.name)!r} -- {plan.model.kind} model of "
        f"{plan.model.size.parameters:,} parameters, {plan.rounds} round(s), strategy {plan.strategy.name}; "
        f"sha256 {plan.sha256}",
        soft_wrap=True, highlight=False,
    )


@plan_app.command("show")
def plan_show(
    file: Annotated[Path, typer.Argument(help="Plan file (TOML or JSON).")],
) -> None:
    """What the members vote on, in plain words: model and size, data, rounds, strategy, privacy, hash."""

    plan = load_plan(file)
    width = max(len(topic) for topic, _ in describe(plan))
    for topic, words in describe(plan):
        typer.echo(f"{topic:<{width}}  {words}")


@plan_app.command("reference")
def plan_reference(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here (default: print).")] = None,
) -> None:
    """The plan reference page (Markdown), generated from the validator."""

    text = reference_markdown()
    if output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text, force=True)


@plan_app.command("schema")
def plan_schema() -> None:
    """The plan's JSON Schema."""

    typer.echo(json.dumps(PLAN_JSON_SCHEMA, indent=2))
