"""The progress screen: one long job (index, scan, find duplicates, train) from tagmatch.jobs, run
in a thread worker while the UI stays live.

It shows the stage, a bar with done/total, rate and ETA, the file in hand, each file's error, and
while training a loss sparkline. Escape asks the job to stop after the current item: the jobs
save what is done atomically, so a stop never leaves a half-written store or model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Log, ProgressBar, Sparkline, Static
from textual.worker import Worker, WorkerState

from tagmatch.errors import TagmatchError
from tagmatch.progress import OnProgress, Progress, ShouldStop

Job = Callable[[OnProgress, ShouldStop], Any]
LOSS_POINTS = 120  # the sparkline shows the last this many training steps


def eta_text(done: int, total: int | None, elapsed: float, unit: str) -> str:
    """'12.3 files/s, ETA 0:42' (blank until there is something to measure)."""
    if done <= 0 or elapsed <= 0:
        return ""
    rate = done / elapsed
    text = f"{rate:.1f} {unit}/s" if rate < 10 else f"{rate:.0f} {unit}/s"
    if total:
        left = max(0, total - done) / rate
        text += f", ETA {int(left // 60)}:{int(left % 60):02d}"
    return text


class JobScreen(Screen):
    """Run `job(on_progress, should_stop)` in a worker; when it ends, `then(result)` gives a one-line
    summary (and may act: open the review of a finished scan). Enter or Esc closes then."""

    BINDINGS = [
        Binding("escape", "stop_or_close", "Stop", id="job.stop"),
        Binding("enter", "close", "Close", show=False, id="job.close"),
    ]

    def __init__(self, title: str, job: Job, then: Callable[[Any], str] | None = None, *,
                 unit: str = "files", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.title_text, self.job, self.then, self.unit, self.clock = title, job, then, unit, clock
        self.stop_event = threading.Event()
        self.stage = ""
        self.stage_t0 = 0.0
        self.losses: list[float] = []
        self.errors = 0
        self.finished = False
        self.result: Any = None

    def compose(self) -> ComposeResult:
        with Vertical(id="job"):
            yield Static(self.title_text, id="job-title", markup=False)
            yield Static("starting...", id="job-stage", markup=False)
            yield ProgressBar(id="job-bar", show_eta=False)
            yield Static("", id="job-rate", markup=False)
            yield Static("", id="job-item", markup=False)
            yield Sparkline([], id="job-loss")
            yield Static("", id="job-loss-label", markup=False)
            yield Log(id="job-errors", max_lines=500)
            yield Static("", id="job-summary", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#job-loss").display = False
        self.query_one("#job-errors").display = False
        self.run_job()

    def on_unmount(self) -> None:
        self.stop_event.set()  # quitting mid-job stops it as Esc does: what is done gets saved

    @work(thread=True, exclusive=True, exit_on_error=False, name="job")
    def run_job(self) -> Any:
        def on_progress(step: Progress) -> None:
            self.app.call_from_thread(self.show_step, step)

        return self.job(on_progress, self.stop_event.is_set)

    # ---- what the job reports --------------------------------------------------------------
    def show_step(self, step: Progress) -> None:
        now = self.clock()
        if step.stage != self.stage:
            self.stage, self.stage_t0 = step.stage, now
        self.query_one("#job-stage", Static).update(
            step.stage + (" (stopping after the current item...)" if self.stop_event.is_set() else ""))
        self.query_one("#job-bar", ProgressBar).update(total=step.total, progress=step.done)
        unit = step.unit or ("steps" if step.loss is not None else self.unit)
        rate = eta_text(step.done, step.total, now - self.stage_t0, unit)
        self.query_one("#job-rate", Static).update(
            f"{step.done}" + (f" / {step.total}" if step.total else "") + (f"   {rate}" if rate else ""))
        self.query_one("#job-item", Static).update(step.info or (Path(step.item).name if step.item else ""))
        if step.error:
            self.errors += 1
            log = self.query_one("#job-errors", Log)
            log.display, log.border_title = True, f"errors: {self.errors}"
            log.write_line(f"{step.item}: {step.error}")
        if step.loss is not None:
            self.losses.append(step.loss)
            spark = self.query_one("#job-loss", Sparkline)
            spark.display = True
            spark.data = self.losses[-LOSS_POINTS:]
            self.query_one("#job-loss-label", Static).update(
                f"loss {self.losses[0]:.3f} -> {step.loss:.3f} (last {min(len(self.losses), LOSS_POINTS)} steps)")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "job" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        self.finished = True
        if event.state == WorkerState.ERROR:
            err = event.worker.error
            text = str(err) if isinstance(err, TagmatchError) else f"failed: {type(err).__name__}: {err}"
            severity = "error"
        else:
            self.result = event.worker.result
            try:
                text = self.then(self.result) if self.then else "done"
            except TagmatchError as exc:
                text, severity = str(exc), "error"
            else:
                severity = "warning" if self.stop_event.is_set() else "information"
        if self.errors:
            text += f" ({self.errors} file error{'s' if self.errors > 1 else ''} listed above)"
        self.query_one("#job-stage", Static).update(
            ("stopped: " if self.stop_event.is_set() else "finished: ") + self.stage)
        self.query_one("#job-summary", Static).update(text + "\nEnter or Esc: back")
        self.notify(text, severity=severity)
        self.refresh_bindings()

    # ---- keys --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "close":
            return self.finished
        return True

    def action_stop_or_close(self) -> None:
        if self.finished:
            self.action_close()
        elif not self.stop_event.is_set():
            self.stop_event.set()
            self.query_one("#job-stage", Static).update(f"{self.stage} (stopping after the current item...)")

    def action_close(self) -> None:
        if self.finished:
            self.dismiss(self.result)
