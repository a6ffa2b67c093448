"""Tags and paths typed by hand: `tagmatch decide` and the Review screen's `e` form, on copies of
the fixture files, checked in the scan JSON and, after `apply`, in the files on disk.

Scans are built from the fixture manifest (fixed confidences, no model), as in test_tui.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tagmatch.cli import main
from tagmatch.errors import TagmatchError
from tagmatch.organize.plan import build_plan, preview, resulting_tags, set_decision, split_values
from tagmatch.organize.scandoc import ScanDoc
from tagmatch.organize.tags import read_tag_values
from tagmatch.tui.app import TagmatchApp
from tagmatch.tui.edit import EditScreen
from helpers import goto, messages, settle


@pytest.fixture
def scan_path(manifest_scan_path) -> Path:
    return manifest_scan_path


def decision(scan_path: Path, name: str) -> dict | None:
    return next(f.get("decision") for f in ScanDoc.read(scan_path).files if Path(f["path"]).name == name)


def entry(doc: dict, name: str) -> dict:
    return next(f for f in doc.files if Path(f["path"]).name == name)


# ---- plan: values typed by hand, unknown files tagged by hand -----------------------------------
def test_split_values_and_hand_tagged_unknown_files(scan_path, messy):
    assert split_values("A;  B ; ") == ["A", "B"] and split_values(" ; ") is None and split_values("x") == ["x"]
    doc = ScanDoc.read(scan_path)
    xyz = entry(doc, "xyz.ogg")  # unknown: its below-threshold guess is never used
    with pytest.raises(TagmatchError, match="only be accepted with tags or a path"):
        set_decision(doc, xyz["path"], "accepted")
    with pytest.raises(TagmatchError, match=r"unknown tag name\(s\): colour \(known: title"):
        set_decision(doc, xyz["path"], "accepted", tags={"colour": "red"})
    set_decision(doc, xyz["path"], "accepted", tags={"title": ["Hand"], "artist": ["A", "B"]})
    assert xyz["decision"] == {"status": "accepted", "choice": 0, "tags": {"title": "Hand", "artist": ["A", "B"]}}
    assert resulting_tags(xyz) == {}  # the file's own tags (none): what the form compares with
    assert resulting_tags(xyz, 0, xyz["decision"]["tags"]) == {"title": ["Hand"], "artist": ["A", "B"]}
    plan = build_plan(doc)
    (op,) = plan.ops
    assert op.src == messy / "xyz.ogg" and op.reference is None and op.art_from is None
    assert op.dst == messy / "A, B" / "Unknown Album" / "Hand.ogg"
    assert op.why == "tagged by hand in review" and op.changes == {"title": ["Hand"], "artist": ["A", "B"]}
    assert preview(xyz).dst == op.dst


# ---- the command line ----------------------------------------------------------------------------
def test_decide_accepts_edits_rejects_clears_then_apply_writes_it(scan_path, messy, env, capsys):
    scan = str(scan_path)
    t07, xyz, wav, mp3 = (str(messy / n) for n in ("track07.mp3", "xyz.ogg", "01.wav", "AUDIO_0099.MP3"))
    assert main(["decide", scan, t07, "--accept", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rename track07.mp3\n  -> Marguerite Vale/Café Nocturne/01 Café Nocturne.mp3")
    assert decision(scan_path, "track07.mp3") == {"status": "accepted", "choice": 1}
    # edits alone amend the decision (alternative 1 stays chosen)
    assert main(["decide", scan, t07, "--set", "title=My Title", "--set", "artist=A; B", "--unset", "date",
                 "--path", "Hand/Made"]) == 0
    out = capsys.readouterr().out
    assert "-> Hand/Made.mp3   (accepted in review, confidence 0.05)" in out
    assert "+ title: My Title | artist: A; B | album: Café Nocturne | tracknumber: 1 | genre: Jazz" in out
    assert decision(scan_path, "track07.mp3") == {
        "status": "accepted", "choice": 1, "tags": {"title": "My Title", "artist": ["A", "B"], "date": None},
        "path": "Hand/Made"}
    # an unknown file: only with tags typed by hand
    assert main(["decide", scan, xyz, "--accept"]) == 1
    assert "unknown (not in the library)" in capsys.readouterr().err
    assert main(["decide", scan, xyz, "--set", "title=Hand", "--set", "artist=Me", "--set", "genre="]) == 0
    assert "rename xyz.ogg\n  -> Me/Unknown Album/Hand.ogg   (tagged by hand in review)" in capsys.readouterr().out
    # reject, clear; a new --accept drops earlier edits
    assert main(["decide", scan, wav, "--reject"]) == 0
    assert "skip" in capsys.readouterr().out and decision(scan_path, "01.wav")["status"] == "rejected"
    assert main(["decide", scan, wav, "--clear"]) == 0
    assert decision(scan_path, "01.wav") is None
    assert main(["decide", scan, mp3, "--set", "genre=Dub"]) == 0
    assert main(["decide", scan, mp3, "--accept"]) == 0
    assert decision(scan_path, "AUDIO_0099.MP3") == {"status": "accepted", "choice": 0}
    # errors: one line each, nothing saved
    capsys.readouterr()
    before = scan_path.read_bytes()
    for argv, msg in [([t07, "--set", "colour=red"], "unknown tag name(s): colour"),
                      ([t07, str(messy / "nope.mp3"), "--accept"], "not in the scan: "),
                      ([t07, "--set", "title"], "expected NAME=VALUE"),
                      ([t07, "--set", "title=a", "--set", "title=b"], "tag title given twice"),
                      ([t07, "--reject", "--set", "title=x"], "not --reject or --clear"),
                      ([t07], "nothing to decide"),
                      ([t07, "--accept", "3"], "no candidate 3")]:
        assert main(["decide", scan, *argv]) == 1, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert scan_path.read_bytes() == before

    assert main(["apply", scan, "--yes", "-q"]) == 0
    capsys.readouterr()
    made = messy / "Hand" / "Made.mp3"
    assert not Path(t07).exists() and made.is_file()
    tags = read_tag_values(made)
    assert tags["title"] == ["My Title"] and tags["artist"] == ["A", "B"] and tags["genre"] == ["Jazz"]
    assert tags["album"] == ["Café Nocturne"] and "date" not in tags
    hand = read_tag_values(messy / "Me" / "Unknown Album" / "Hand.ogg")
    assert hand["title"] == ["Hand"] and hand["artist"] == ["Me"] and "album" not in hand
    assert (messy / "Lindqvist & Oduya").is_dir() and not Path(mp3).exists()
    assert Path(wav).exists()  # cleared: not reviewed, left alone


# ---- the Review screen's form -----------------------------------------------------------------------
def form(app) -> dict[str, str]:
    screen = app.screen
    assert isinstance(screen, EditScreen)
    return {i.id.removeprefix("edit-"): i.value for i in screen.query("Input")}


async def test_edit_form_saves_undoes_and_applies(scan_path, messy, env):
    app = TagmatchApp(scan_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        review = app.screen
        i = await goto(pilot, "track07.mp3")
        await pilot.press("e")
        assert form(app) == {"title": "Neon Orchard", "artist": "Kosmo Dial", "album": "Signal Garden",
                             "albumartist": "", "tracknumber": "1", "discnumber": "", "date": "2021",
                             "genre": "Electronic", "path": "Kosmo Dial/Signal Garden/01 Neon Orchard.mp3"}
        await pilot.press(*"Night Orchard")  # the focused field's text is selected: typing replaces it
        await pilot.press(*["tab"] * 7, "backspace")  # genre emptied: removed
        await pilot.press("tab", *"Edited/Night", "enter")
        assert app.screen is review
        saved = {"status": "accepted", "choice": 0, "tags": {"title": "Night Orchard", "genre": None},
                 "path": "Edited/Night"}
        assert decision(scan_path, "track07.mp3") == saved
        detail = review.detail_text(i).plain
        assert "by hand: title, genre, path" in detail and "new path: Edited/Night.mp3" in detail
        assert "+ title: Night Orchard" in detail and "genre" not in detail.split("new path:")[1]  # never added
        assert review._status(i).plain == "accepted"

        await pilot.press("e")  # reopened: shows the edits; Esc changes nothing
        assert form(app)["title"] == "Night Orchard" and form(app)["genre"] == ""
        assert form(app)["path"] == "Edited/Night.mp3"
        await pilot.press("escape")
        assert app.screen is review and decision(scan_path, "track07.mp3") == saved

        await pilot.press("u")  # undone like any decision, on disk too
        assert decision(scan_path, "track07.mp3") is None
        assert "new path: Kosmo Dial/Signal Garden/01 Neon Orchard.mp3" in review.detail_text(i).plain

        await pilot.press("e", *"Night Orchard", "ctrl+s")  # the title only: the template names it
        assert decision(scan_path, "track07.mp3") == {"status": "accepted", "choice": 0,
                                                      "tags": {"title": "Night Orchard"}}
        assert "new path: Kosmo Dial/Signal Garden/01 Night Orchard.mp3" in review.detail_text(i).plain

        j = await goto(pilot, "xyz.ogg")  # unknown: tagged by hand
        await pilot.press("e")
        assert form(app)["title"] == "" and "the library lacks it" in str(
            app.screen.query_one("#dialog-title").content)
        await pilot.press(*"Hand Song", "tab", *"Me", "enter")
        assert decision(scan_path, "xyz.ogg") == {"status": "accepted", "choice": 0,
                                                  "tags": {"title": "Hand Song", "artist": "Me"}}
        assert "Me - Hand Song (by hand)" in str(review._cells(j)[2])

        await goto(pilot, "empty.mp3")
        await pilot.press("e")
        assert app.screen is review and "cannot be applied, so not edited" in messages(app)[-1]

        await pilot.press("w")
        await pilot.press("y")
        await settle(pilot)
        assert ": 2 done, 0 failed" in messages(app)[-1]
    done = messy / "Kosmo Dial" / "Signal Garden" / "01 Night Orchard.mp3"
    assert read_tag_values(done)["title"] == ["Night Orchard"] and not (messy / "track07.mp3").exists()
    assert read_tag_values(done)["genre"] == ["Electronic"]
    hand = read_tag_values(messy / "Me" / "Unknown Album" / "Hand Song.ogg")
    assert hand["title"] == ["Hand Song"] and hand["artist"] == ["Me"]


def test_snapshot_edit_form_80x24(scan_path, snap_compare):
    assert snap_compare(TagmatchApp(scan_path), press=["j", "e"], terminal_size=(80, 24))
