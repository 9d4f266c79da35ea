"""The CLI starts without importing what the command does not use.

``fedchain --help`` used to import every command module (torch, Opacus, matplotlib,
TenSEAL, scikit-learn, ...): ~10 s before the help printed, and as long again for every
``fedchain`` command a walkthrough or a hospital's cron job runs. The root group now
lists commands from a table and imports a command's module when it runs; these tests
keep that table true and the heavy imports out of the paths that do not need them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

import fedchain.cli as cli


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def first_paragraph(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


def test_the_command_table_matches_what_the_modules_register():
    registered: dict[str, str] = {}
    for module in sorted({m for m, _ in cli.COMMANDS.values()}):
        for name, command in cli.load_module_commands(module).items():
            assert name not in registered, f"{name} registered by {registered[name]} and {module}"
            registered[name] = module
            assert cli.COMMANDS[name][0] == module, name
            assert " ".join(cli.COMMANDS[name][1].split()) == first_paragraph(command.help), name
    assert set(registered) == set(cli.COMMANDS)


def test_root_help_lists_every_command_without_importing_the_command_modules():
    out = run_python(
        "import sys\n"
        "from fedchain.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'opacus', 'matplotlib', 'tenseal', 'sklearn', 'scipy') if m in sys.modules)\n"
        "mods = sorted(m for m in sys.modules if m.startswith('fedchain.cli.') and m != 'fedchain.cli.common')\n"
        "print('HEAVY', heavy, 'MODS', mods)\n"
    )
    for name in cli.COMMANDS:
        assert f" {name} " in out, name
    assert "HEAVY [] MODS []" in out


@pytest.mark.parametrize(("argv", "absent"), [
    # governance commands need neither Opacus, matplotlib, TenSEAL nor scikit-learn
    (["member", "list"], ("opacus", "matplotlib", "tenseal", "sklearn", "scipy.stats")),
    (["proposal", "show", "1"], ("opacus", "matplotlib", "tenseal", "sklearn", "scipy.stats")),
    # a node that trains without DP-SGD does not load Opacus; the coordinator's report code is not a node's
    (["node", "run", "--help"], ("opacus", "matplotlib")),
])
def test_a_command_imports_only_what_it_uses(tmp_path, argv, absent):
    out = run_python(
        "import sys\n"
        "from fedchain.cli import main\n"
        f"code = main({argv + ['--home', str(tmp_path)] if argv[-1] != '--help' else argv!r})\n"
        f"print('LOADED', sorted(m for m in {list(absent)!r} if m in sys.modules), 'CODE', code)\n"
    )
    assert "LOADED []" in out, out


def test_the_real_command_runs_after_a_lazy_load(capsys):
    # A command's own --help comes from its module (the table only feeds the root listing).
    code = cli.main(["plan", "--help"])
    assert code == 0
    out = capsys.readouterr().out
    assert "standardize" in out and "validate" in out  # 'plan standardize' is added by another module


def test_unknown_command_is_a_named_usage_error(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "No such command 'no-such-command'" in capsys.readouterr().err


def test_the_click_group_is_built_from_the_lazy_class():
    assert isinstance(typer.main.get_command(cli.app), cli.LazyGroup)
