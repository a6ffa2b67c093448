"""A rejected suggestion does not come back: not for the same file scanned again, a renamed copy,
or another encoding of it, since it is remembered by the file's audio (tagmatch.organize.rejections);
the next candidate is offered instead, and taking the rejection back brings it back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from tagmatch.audio.decode import load_audio
from tagmatch.cli import main
from tagmatch.organize.rejections import Rejections

NEON = "Kosmo Dial/Signal Garden/01 Neon Orchard.flac"


@pytest.fixture
def folder(fixture_dir, tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for name in ("track07.mp3", "AUDIO_0099.MP3"):
        shutil.copy2(fixture_dir / "messy" / name, d / name)
    return d


def _scan(folder: Path, store: Path, out: Path) -> dict[str, dict]:
    assert main(["scan", str(folder), "--store", str(store), "--json", str(out), "-q"]) == 0
    return {Path(f["path"]).name: f for f in json.loads(out.read_text(encoding="utf-8"))["files"]}


def _ref(entry: dict) -> str:
    return (entry.get("match") or {}).get("path", "")


def test_a_rejected_match_is_not_offered_again_for_that_audio(folder, fixture_dir, library_store, tmp_path, capsys):
    store = library_store[1]
    first = _scan(folder, store, tmp_path / "1.json")
    assert _ref(first["track07.mp3"]).endswith(NEON) and first["track07.mp3"]["status"] == "match"
    assert first["track07.mp3"]["fingerprint"]["dim"] > 0

    assert main(["decide", str(tmp_path / "1.json"), str(folder / "track07.mp3"), "--reject"]) == 0
    assert list(Rejections.load().by_reference) == [str((fixture_dir / "library" / NEON).absolute())]

    shutil.copy2(folder / "track07.mp3", folder / "renamed copy.mp3")
    y = load_audio(folder / "track07.mp3", 44100)
    sf.write(folder / "another encoding.flac", y, 44100)
    again = _scan(folder, store, tmp_path / "2.json")
    for name in ("track07.mp3", "renamed copy.mp3", "another encoding.flac"):
        assert not _ref(again[name]).endswith(NEON), name
        assert any(p.endswith(NEON) for p in again[name]["passed_over"]), name
        assert all(not a["path"].endswith(NEON) for a in again[name]["alternatives"])
    assert again["AUDIO_0099.MP3"]["match"]["path"] == first["AUDIO_0099.MP3"]["match"]["path"]  # others as before
    assert "passed_over" not in again["AUDIO_0099.MP3"]

    assert main(["decide", str(tmp_path / "1.json"), str(folder / "track07.mp3"), "--clear"]) == 0
    capsys.readouterr()
    assert not Rejections.load()
    back = _scan(folder, store, tmp_path / "3.json")
    assert all(_ref(back[n]).endswith(NEON) for n in ("track07.mp3", "renamed copy.mp3", "another encoding.flac"))


async def test_a_rejection_in_the_review_is_remembered(folder, library_store, tmp_path, env):
    from helpers import goto

    from tagmatch.tui.app import TagmatchApp

    _scan(folder, library_store[1], tmp_path / "1.json")
    app = TagmatchApp(tmp_path / "1.json")
    async with app.run_test(size=(80, 24)) as pilot:
        await goto(pilot, "track07.mp3")
        await pilot.press("x")
        await pilot.pause()
        assert any(p.endswith(NEON) for p in Rejections.load().by_reference)
        await pilot.press("u")  # taken back at once
        await pilot.pause()
        assert not Rejections.load()
