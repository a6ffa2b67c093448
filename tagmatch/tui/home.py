"""The Home screen (`tagmatch` with no arguments): the library and its store, the saved scans with
what waits in them, recent runs, and the actions: index, scan, find duplicates, train, review, undo.

Each action asks for its folder, then runs the same function of tagmatch.jobs as the CLI command
of that name, on a progress screen.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from tagmatch.errors import TagmatchError
from tagmatch.jobs import SavedScan, default_scans_dir, list_scans
from tagmatch.organize.journal import default_runs_dir, list_runs
from tagmatch.store.shards import default_cache_store_path, default_store_path
from tagmatch.tui.common import FormScreen, HelpScreen, run_summary

RECENT = 3
TRAIN_STEPS = 1000  # the form's default: about 20 min on two cores (TrainConfig's 4000 is a full run)

HELP = """\
i      index a reference library (choose its folder)
s      scan a folder: a suggestion for every file
d      find duplicate recordings in a folder
t      train a model on a folder of music
Enter  review the highlighted scan
o      type the path of a scan or duplicates report
r      past runs (undo one)
Esc    leave the path box        q  quit
Long jobs show their progress; Esc stops them after
the current file, keeping what is done."""


def ago(t: float) -> str:
    s = max(0, time.time() - t)
    return "just now" if s < 60 else f"{s / 60:.0f} min ago" if s < 3600 else \
        f"{s / 3600:.0f} h ago" if s < 86400 else f"{s / 86400:.0f} days ago"


class HomeScreen(Screen):
    AUTO_FOCUS = "#scans"
    BINDINGS = [
        Binding("i", "index", "Index", id="home.index"),
        Binding("s", "scan", "Scan", id="home.scan"),
        Binding("d", "dupes", "Dupes", id="home.dupes"),
        Binding("t", "train", "Train", id="home.train"),
        Binding("c", "calibrate", "Calibrate", id="home.calibrate"),
        Binding("l", "learn", "Learn", id="home.learn"),
        Binding("o", "open", "Open", show=False, id="home.open"),  # the box says so itself
        Binding("r", "runs", "Runs", id="home.runs"),
        Binding("question_mark", "help", "Keys", id="home.help"),
        Binding("q", "app.quit", "Quit", id="home.quit"),
        Binding("escape", "blur", "Leave the box", show=False, id="home.blur"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.library: Path | None = None  # the folder the store's tracks live in
        self.has_store = False
        self.scans: list[SavedScan] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="home"):
            yield Static("tagmatch: match messy audio files to a tagged reference library", id="home-title",
                         markup=False)
            yield Static("", id="store", markup=False)
            yield Static("", id="scans-title", markup=False)
            yield DataTable(id="scans", cursor_type="row", zebra_stripes=True)
            yield Static("", id="recent", markup=False)
            yield Input(placeholder="o: path of a scan JSON or duplicates report, then Enter", id="scan-path")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#scans", DataTable)
        for label in ("Folder", "Files", "To review", "Accepted", "Scanned"):
            table.add_column(label, key=label.lower())
        self.refresh_store()
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        """Scans and runs may have changed on another screen: list them again."""
        self.scans = list_scans()
        table = self.query_one("#scans", DataTable)
        table.clear()
        for n, s in enumerate(self.scans):
            table.add_row(s.folder, str(s.files), str(s.pending), str(s.accepted), ago(s.mtime), key=str(n))
        self.query_one("#scans-title", Static).update(
            f"Scans: {len(self.scans)}" + (" (Enter reviews the highlighted one)" if self.scans
                                          else " (none yet: s scans a folder)"))
        table.display = bool(self.scans)
        try:
            runs = list_runs(default_runs_dir())
        except TagmatchError as exc:
            runs, err = [], str(exc)
        else:
            err = ""
        lines = [f"Runs: {len(runs)}" + (" (r lists them all, to undo one)" if runs else " (none yet)")]
        lines += ["  " + "  ".join(run_summary(r)[:4]) for r in runs[::-1][:RECENT]]
        self.query_one("#recent", Static).update("\n".join(lines) + (f"\n{err}" if err else ""))

    def refresh_store(self) -> None:
        path = default_store_path()
        self.has_store = path.exists()
        if self.has_store:
            self.query_one("#store", Static).update(f"Store {path}: loading...")
            self.load_store(path)
        else:
            self.query_one("#store", Static).update(f"No store yet at {path}: i indexes your library.")

    @work(thread=True, exclusive=True, exit_on_error=False, group="store")
    def load_store(self, path: Path) -> None:
        """Store.load reads every vector: off the UI thread."""
        from tagmatch.jobs import cluster_address
        from tagmatch.store.ann import describe_search
        from tagmatch.store.shards import Store

        try:
            s = Store.load(path)
            dirs = [os.path.dirname(t.path) for t in s.tracks]
            library = Path(os.path.commonpath(dirs)) if dirs else None
            when = ago(path.stat().st_mtime)
            text = (f"Library {library or '(empty)'}\nStore {path}: {len(s.tracks)} tracks, {s.hours:.2f} h, "
                    f"model {s.model_id}, indexed {when}")
            how = describe_search(s)
            if how != "exact":  # an approximate index, or a big store without a current one
                text += f"\nSearch {how}"
            cluster = cluster_address()
            if cluster:
                text += f"\nIndex and scan on the dask cluster at {cluster} ($TAGMATCH_SCHEDULER)"
        except Exception as exc:  # a broken store is reported, not fatal to the home screen
            library, text = None, f"Store {path}: cannot load ({exc})"
        self.app.call_from_thread(self._store_loaded, library, text)

    def _store_loaded(self, library: Path | None, text: str) -> None:
        self.library = library
        self.query_one("#store", Static).update(text)

    # ---- actions -----------------------------------------------------------------------------
    def _ask_folder(self, title: str, label: str, default: Path | None, then) -> None:
        """A one-field form; `then(folder)` runs with an existing folder, else says why not."""
        def answered(values: list[str] | None) -> None:
            if not values:
                return
            folder = Path(values[0]).expanduser()
            if not folder.is_dir():
                self.notify(f"not a folder: {folder}", severity="error")
                return
            then(folder.resolve())
        self.app.push_screen(FormScreen(title, [(label, str(default or Path.cwd()))]), answered)

    def _run(self, title: str, job, then, closed=None, unit: str = "files") -> None:
        from tagmatch.tui.progress import JobScreen

        def after(result) -> None:
            self.refresh_store()
            self.on_screen_resume()
            if closed and result is not None:
                closed(result)
        self.app.push_screen(JobScreen(title, job, then, unit=unit), after)

    def action_index(self) -> None:
        from tagmatch.jobs import index_job

        store_path = default_store_path()

        def start(folder: Path) -> None:
            def summary(res) -> str:
                r = res.report
                return (("Stopped; what was indexed is saved. " if res.stopped else "")
                        + f"{len(res.store.tracks)} tracks, {res.store.hours:.2f} h: added {len(r.added)}, "
                          f"updated {len(r.updated)}, removed {len(r.removed)}, unchanged {r.unchanged}, "
                          f"errors {len(r.errors)}" + (f"\n{res.search}" if res.search else "")
                        + "".join(f"\nRepaired: shard {file} {why}; its {len(paths)} tracks were embedded again"
                                  for file, why, paths in res.repaired))
            self._run(f"Indexing {folder} into {store_path}",
                      lambda on_progress, stop: index_job(folder, store_path, on_progress=on_progress, should_stop=stop),
                      summary)
        self._ask_folder("Index a reference library", "Library folder", self.library, start)

    def action_scan(self) -> None:
        from tagmatch.jobs import new_scan_path, scan_job

        store_path = default_store_path()
        if not store_path.exists():
            self.notify("index a reference library first (i)", severity="warning")
            return

        def start(folder: Path) -> None:
            json_path = new_scan_path(folder)

            def summary(res) -> str:
                if not res.results:
                    return "Stopped before the first file; nothing was saved."
                return ((f"Stopped after {len(res.results)} files. " if res.stopped else "")
                        + f"{res.count('match')} matched, {res.count('unknown')} unknown, "
                          f"{res.count('error')} errors. Enter: review"
                        + (f"\nSearch {res.search}" if "sharded" in res.search else ""))

            def review(res) -> None:
                if res.json_path:
                    self.open_path(res.json_path)
            self._run(f"Scanning {folder}",
                      lambda on_progress, stop: scan_job(folder, store_path, json_path=json_path, on_progress=on_progress,
                                                     should_stop=stop),
                      summary, review)
        self._ask_folder("Scan a folder: a suggestion for every file", "Folder to scan", Path.cwd(), start)

    def action_dupes(self) -> None:
        def start(folder: Path) -> None:
            def job(on_progress, stop):
                from tagmatch.jobs import dupes_job, new_scan_path

                doc = dupes_job([folder], default_cache_store_path(), reference_path=default_store_path(),
                                on_progress=on_progress, should_stop=stop)
                if doc is None:
                    return None
                path = new_scan_path(folder, default_scans_dir() / "dupes")
                doc.save(path)
                return doc, path

            def summary(res) -> str:
                if res is None:
                    return "Stopped; the files embedded so far are cached for the next run."
                groups = res[0].groups
                n = sum(g["kind"] == "duplicate" for g in groups)
                return f"{n} duplicate group(s), {len(groups) - n} partial overlap(s). Enter: see them"
            self._run(f"Finding duplicate recordings in {folder}", job, summary,
                      lambda res: self.open_path(res[1]))
        self._ask_folder("Find duplicate recordings", "Folder to search", Path.cwd(), start)

    def action_train(self) -> None:
        from platformdirs import user_data_dir

        out = Path(user_data_dir("tagmatch")) / "models" / "model.joblib"

        def answered(values: list[str] | None) -> None:
            if not values:
                return
            folder, steps, out_path = Path(values[0]).expanduser(), values[1].strip(), Path(values[2]).expanduser()
            if not folder.is_dir() or not steps.isdigit() or int(steps) < 1:
                self.notify(f"need a folder and a number of steps (got {values[0]!r}, {steps!r})", severity="error")
                return
            self._train(folder.resolve(), int(steps), out_path.absolute())
        self.app.push_screen(FormScreen("Train a model on your music (no labels needed)", [
            ("Music folder", str(self.library or Path.cwd())), ("Steps", str(TRAIN_STEPS)),
            ("Save the model to (a checkpoint next to it lets a re-run resume)", str(out))]), answered)

    def _train(self, folder: Path, steps: int, out: Path) -> None:
        from tagmatch.audio.decode import find_audio_files
        from tagmatch.jobs import TrainRequest, train_job

        req = TrainRequest(music=find_audio_files(folder), out=out, checkpoint=out.with_suffix(".ckpt"),
                           steps=steps)

        def summary(res: dict) -> str:
            adapter = (f", query adapter on {res['query_adapter_pairs']} pairs" if res.get("query_adapter_pairs")
                       else "")
            return (f"Saved {out}: model {res['model_id']}, {res['steps']} steps, loss {res['final_loss']:.3f}"
                    f"{adapter}. Use it with TAGMATCH_MODEL={out} (then index again).")
        self._run(f"Training on {folder}", lambda on_progress, stop: train_job(req, on_progress=on_progress, should_stop=stop),
                  summary, unit="files")

    def action_learn(self) -> None:
        """Learn from the decisions of the saved scans: fine-tune this library's query adapter
        (kept only if better, as `tagmatch train --from-decisions`), then refit its threshold (as
        `tagmatch calibrate --from-decisions`)."""
        from tagmatch.jobs import learn_everything_job

        store_path = default_store_path()
        if not store_path.exists():
            self.notify("index a reference library first (i)", severity="warning")
            return
        self._run("Learning from your review decisions",
                  lambda on_progress, stop: learn_everything_job(store_path, on_progress, stop), lambda text: text,
                  unit="steps")

    def action_calibrate(self) -> None:
        import os

        from platformdirs import user_data_dir

        model = os.environ.get("TAGMATCH_MODEL") or str(Path(user_data_dir("tagmatch")) / "models" / "model.joblib")

        def answered(values: list[str] | None) -> None:
            if not values:
                return
            folder, model_path = Path(values[0]).expanduser(), Path(values[1]).expanduser()
            if not folder.is_dir() or not model_path.is_file():
                self.notify(f"need a folder of music and an existing model file (got {values[0]!r}, {values[1]!r})",
                            severity="error")
                return
            self._calibrate(folder.resolve(), model_path.absolute())
        self.app.push_screen(FormScreen("Calibrate a model: fit its threshold on your music (1 song in 5 held out "
                                        "as unknown)", [
            ("Music folder", str(self.library or Path.cwd())),
            ("Model file to rewrite with the new calibration", model)]), answered)

    def _calibrate(self, folder: Path, model: Path) -> None:
        from tagmatch.jobs import CalibrateRequest, calibrate_job
        from tagmatch.train.calibrate import describe_fit

        req = CalibrateRequest(model=model, music=[folder])

        def summary(fit: dict | None) -> str:
            return ("Stopped: the model is unchanged; the query files made so far are kept for the next run."
                    if fit is None else describe_fit(fit))
        self._run(f"Calibrating {model.name} on {folder}",
                  lambda on_progress, stop: calibrate_job(req, on_progress=on_progress, should_stop=stop),
                  summary, unit="queries")

    def action_open(self) -> None:
        self.query_one("#scan-path", Input).focus()

    def action_blur(self) -> None:
        self.query_one("#scans", DataTable).focus()

    def action_runs(self) -> None:
        from tagmatch.tui.runs import RunsScreen

        self.app.push_screen(RunsScreen())

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen("Keys", HELP))

    @on(DataTable.RowSelected, "#scans")
    def _open_saved(self, event: DataTable.RowSelected) -> None:
        self.open_path(self.scans[int(event.row_key.value)].path)

    @on(Input.Submitted, "#scan-path")
    def _open_typed(self, event: Input.Submitted) -> None:
        self.open_path(Path(event.value.strip()).expanduser())

    def open_path(self, path: Path) -> None:
        """A scan opens its review, a duplicates report its groups."""
        try:
            self.app.open_document(path)
        except TagmatchError as exc:
            self.notify(str(exc), severity="error")
