"""The one progress event of every long job (index, scan, dupes, train, calibrate, apply, undo):
the library emits `Progress`, the CLI draws it with rich bars and the TUI on its progress screen,
so each stage reports the same way wherever it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Progress:
    """Where a job stands: `done` of `total` in `stage` (total None: not known yet). `item` is the
    file (or step) just finished and `error` its one-line error; `loss` is set while training,
    `info` is a short note to show beside the bar, `unit` what `done` counts when not files."""

    stage: str
    done: int
    total: int | None
    item: str = ""
    error: str | None = None
    loss: float | None = None
    info: str = ""
    unit: str = ""


OnProgress = Callable[[Progress], None]
ShouldStop = Callable[[], bool]


def quiet(progress: Progress) -> None:
    """An `OnProgress` that shows nothing."""


def never() -> bool:
    """A `ShouldStop` that never asks to stop."""
    return False
