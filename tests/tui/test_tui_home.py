"""Home's actions from the keyboard: index and scan on the progress screen and into the review; a
stopped index leaves a whole store; calibrating a model file; keys remapped from the config file;
the progress screen's snapshot."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import threading
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from tagmatch.audio.decode import find_audio_files
from tagmatch.jobs import Progress, index_job, list_scans
from tagmatch.organize.scandoc import ScanDoc
from tagmatch.store.shards import Store
from tagmatch.tui.app import TagmatchApp
from tagmatch.tui.common import FormScreen
from tagmatch.tui.home import HomeScreen
from tagmatch.tui.progress import JobScreen
from tagmatch.tui.dupes import DupesScreen
from tagmatch.tui.review import ReviewScreen
from helpers import manifest_scan


@pytest.fixture
def home_env(tmp_path, monkeypatch) -> Path:
    """Store and runs in tmp; returns the store path (not there yet)."""
    store = tmp_path / "data" / "store"
    monkeypatch.setenv("TAGMATCH_STORE", str(store))
    monkeypatch.setenv("TAGMATCH_RUNS", str(tmp_path / "data" / "runs"))
    monkeypatch.setenv("TAGMATCH_CACHE_STORE", str(tmp_path / "cache" / "dupes-store"))
    return store


async def until(pilot, condition, timeout: float = 60) -> None:
    """Let the app run until `condition()` holds (a worker reports through the event loop)."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, "timed out"
        await pilot.pause(0.05)


async def finished_job(pilot) -> JobScreen:
    screen = pilot.app.screen
    assert isinstance(screen, JobScreen)
    await until(pilot, lambda: screen.finished, timeout=300)
    return screen


def text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def fill_form(pilot, *values: str) -> None:
    form = pilot.app.screen
    assert isinstance(form, FormScreen)
    for n, v in enumerate(values):
        form.query_one(f"#field-{n}", Input).value = v
    await pilot.press("enter")


@pytest.mark.slow
async def test_home_indexes_scans_and_opens_the_review(fixture_dir, manifest, tmp_path, home_env):
    messy = tmp_path / "messy"
    shutil.copytree(fixture_dir / "messy", messy)
    n_library = len(find_audio_files(fixture_dir / "library"))
    app = TagmatchApp()
    async with app.run_test(size=(100, 30)) as pilot:
        assert "No store yet" in text(app.screen, "#store")
        await pilot.press("s")  # no store: scanning is refused with a hint
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("i")
        await fill_form(pilot, str(fixture_dir / "library"))
        job = await finished_job(pilot)
        assert f"{n_library} tracks" in text(job, "#job-summary")
        assert f"added {n_library}" in text(job, "#job-summary")
        await pilot.press("enter")
        home = app.screen
        assert isinstance(home, HomeScreen)
        await until(pilot, lambda: "tracks" in text(home, "#store"))
        assert f"{n_library} tracks" in text(home, "#store")
        assert str(fixture_dir / "library") in text(home, "#store")  # the library folder, from the store

        await pilot.press("s")
        await fill_form(pilot, str(messy))
        job = await finished_job(pilot)
        assert "matched" in text(job, "#job-summary")
        assert job.errors >= 1  # the fixtures' broken files are listed, the rest goes on
        await pilot.press("enter")
        review = app.screen
        assert isinstance(review, ReviewScreen)
        assert len(review.files) == len(find_audio_files(messy))
        saved = list_scans()
        assert len(saved) == 1 and saved[0].folder == str(messy.resolve())
        assert ScanDoc.read(saved[0].path).target == str(messy.resolve())

        await pilot.press("escape")
        assert isinstance(app.screen, HomeScreen)
        table = app.screen.query_one("#scans", DataTable)
        assert table.row_count == 1
        await pilot.press("enter")  # the highlighted scan opens its review again
        assert isinstance(app.screen, ReviewScreen)
        assert app.screen.scan_path == saved[0].path

        await pilot.press("escape", "d")  # duplicate recordings in the messy folder
        await fill_form(pilot, str(messy))
        job = await finished_job(pilot)
        assert "duplicate group(s)" in text(job, "#job-summary")
        await pilot.press("enter")
        assert isinstance(app.screen, DupesScreen)

        await pilot.press("escape", "l")  # learn the threshold from decisions: there are none yet
        job = await finished_job(pilot)
        assert "review a scan first" in text(job, "#job-summary")


@pytest.mark.slow
async def test_home_calibrates_a_model_file(fixture_dir, tmp_path, home_env, monkeypatch):
    """`c`: the form's folder and model file go to `tagmatch calibrate`'s job, which rewrites the
    file's calibration (a small fit: one set, one condition, two songs a side)."""
    import functools

    from tagmatch import jobs
    from tagmatch.model.modelfile import default_model_path, load_model

    model = tmp_path / "model.joblib"
    shutil.copy(default_model_path(), model)
    before = load_model(model).calibration
    monkeypatch.setattr(jobs, "CalibrateRequest", functools.partial(
        jobs.CalibrateRequest, work=tmp_path / "work", conditions="noise10_20s", sets=1, limit=2))
    app = TagmatchApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("c")
        await fill_form(pilot, str(tmp_path / "no such folder"), str(model))
        assert isinstance(app.screen, HomeScreen)  # refused with a note, nothing started
        await pilot.press("c")
        await fill_form(pilot, str(fixture_dir / "library"), str(model))
        job = await finished_job(pilot)
        assert f"{model}: calibration mid" in text(job, "#job-summary")
    after = load_model(model).calibration
    assert after != before and after.score == "verified"


async def test_escape_stops_indexing_after_the_current_file_and_the_store_is_whole(fixture_dir, home_env):
    library = fixture_dir / "library"
    first = threading.Event()

    def job(on_progress, should_stop):
        def slow(step):  # hold the job after its first file until the test has pressed Esc
            on_progress(step)
            first.wait(30)
        return index_job(library, home_env, on_progress=slow, should_stop=should_stop)

    app = TagmatchApp()
    async with app.run_test() as pilot:
        app.push_screen(JobScreen("Indexing", job, lambda res: f"{len(res.store.tracks)} tracks"))
        screen = app.screen
        await until(pilot, lambda: screen.stage == "indexing")
        await pilot.press("escape")
        assert "stopping" in text(screen, "#job-stage")
        first.set()
        await finished_job(pilot)
        assert screen.result.stopped
        assert text(screen, "#job-stage").startswith("stopped")
        assert "1 tracks" in text(screen, "#job-summary")
        await pilot.press("escape")
        assert isinstance(app.screen, HomeScreen)
    assert len(Store.load(home_env).tracks) == 1  # saved whole, with the file done
    res = index_job(library, home_env)  # a re-run goes on from there
    assert len(res.report.added) == len(find_audio_files(library)) - 1 and res.report.unchanged == 1


async def test_a_failing_job_says_why_in_one_line(home_env, tmp_path):
    app = TagmatchApp()
    async with app.run_test() as pilot:
        app.push_screen(JobScreen("Indexing", lambda on, stop: index_job(tmp_path / "nowhere", home_env)))
        screen = await finished_job(pilot)
        assert text(screen, "#job-summary").startswith(f"not a folder: {tmp_path / 'nowhere'}")
    assert not home_env.exists()


async def test_keys_are_remapped_from_the_config_file(fixture_dir, manifest, tmp_path, monkeypatch, home_env):
    messy = tmp_path / "music" / "messy"
    shutil.copytree(fixture_dir / "messy", messy)
    scan_path = tmp_path / "scan.json"

    manifest_scan(fixture_dir, manifest, messy).save(scan_path)
    config = tmp_path / "config.toml"
    config.write_text('[keys]\n"review.reject" = "r"\n"review.down" = "n,j"\n')
    monkeypatch.setenv("TAGMATCH_CONFIG", str(config))
    app = TagmatchApp(scan_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await pilot.press("x")  # no longer reject
        assert not screen.files[screen._current()].get("decision")
        await pilot.press("n", "r")
        i = screen._current()
        assert i is not None and screen.files[i]["decision"]["status"] == "rejected"

    config.write_text('[keys]\n"review.rejekt" = "r"\n')  # a typo: reported, and the defaults stay
    app = TagmatchApp(scan_path)
    async with app.run_test(size=(100, 30)) as pilot:
        assert any("review.rejekt" in n.message for n in app._notifications)
        await pilot.press("x")
        screen = app.screen
        assert screen.files[screen._current()]["decision"]["status"] == "rejected"


def test_cli_keys_lists_the_bindings_and_the_config_overrides(tmp_path, monkeypatch, capsys):
    from tagmatch.cli import main

    config = tmp_path / "config.toml"
    config.write_text('[keys]\n"review.reject" = "r"\n')
    monkeypatch.setenv("TAGMATCH_CONFIG", str(config))
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert "home.index" in out and "review.edit" in out and "dupes.keep" in out
    line = next(l for l in out.splitlines() if l.startswith("review.reject "))
    assert " r " in line and "from the config" in line
    config.write_text("[keys\n")
    assert main(["keys"]) == 1
    assert str(config) in capsys.readouterr().err


def test_snapshot_progress_screen(snap_compare):
    """Training, as the progress screen shows it: decoding done (one file refused), loss falling."""
    ticks = itertools.count()

    def job(on_progress, should_stop):
        on_progress(Progress("decoding", 1, 3, "/music/a.flac"))
        on_progress(Progress("decoding", 2, 3, "/music/broken.mp3", error="not an audio file"))
        on_progress(Progress("decoding", 3, 3, "/music/c.ogg"))
        for i in range(1, 61):
            loss = 4.0 * 0.97 ** i + 0.1 * (i % 3)
            on_progress(Progress("training", i, 1000, loss=loss, info=f"loss {loss:.3f}  top1 0.50  250 pairs/s"))
        while not should_stop():
            time.sleep(0.02)

    async def run_before(pilot) -> None:
        pilot.app.push_screen(JobScreen("Training on /music", job, clock=lambda: next(ticks) * 0.5))
        await until(pilot, lambda: len(pilot.app.screen.losses) == 60)
        await asyncio.sleep(0.1)

    assert snap_compare(TagmatchApp(), run_before=run_before, terminal_size=(80, 24))
