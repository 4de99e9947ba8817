"""Options shared by several command groups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def data_dir_option(func: F) -> F:
    """``--data-dir``: the labelled data folder (default ``$VILMO_DATA_DIR`` or ../shared/data)."""
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, envvar="VILMO_DATA_DIR",
                        help="Labelled data folder (default: ../shared/data).")(func)
