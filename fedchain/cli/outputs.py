"""Files the CLI writes: refuse to clobber by accident, and check the folder before any work is done."""

from __future__ import annotations

from pathlib import Path

from fedchain.errors import ConfigError


def check_target(path: Path, force: bool) -> None:
    """Raise :class:`ConfigError` unless ``path`` may be written (absent, or ``force``; its folder exists)."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists (use --force to overwrite it)")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {path.parent} does not exist")
