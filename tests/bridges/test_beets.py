"""The beets plugin, with real beets from PyPI: a temporary beets library (config and database in
a temp folder, no MusicBrainz, no network) imported from the fixtures' library; then `beet
import` of messy copies gets the right tags from tagmatch, in beets' database and in the files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tagmatch.organize.tags import read_tags

pytestmark = pytest.mark.slow
BEET = Path(sys.executable).with_name("beet")
# messy copy -> the library track it is (fixtures/generate.py); xyz.ogg is a song not in the library
KNOWN = {"track07.mp3": "Neon Orchard", "AUDIO_0099.MP3": "Paper Lanterns", "audio_0012.ogg": "Señora Lluvia"}
UNKNOWN = "xyz.ogg"


def _beet(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BEETSDIR": str(home / "config"), "HOME": str(home)}  # nothing of the user's
    proc = subprocess.run([str(BEET), *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def beets_home(fixture_dir, tmp_path_factory) -> Path:
    """A beets library of the fixtures' reference library (imported as it is tagged), indexed by
    `beet tagmatch-index`."""
    home = tmp_path_factory.mktemp("beets")
    (home / "config").mkdir()
    (home / "config" / "config.yaml").write_text(f"""\
directory: {home / "music"}
library: {home / "config" / "library.db"}
plugins: [tagmatch]
import:
  write: yes
  copy: yes
  log: {home / "import.log"}
  quiet_fallback: asis
  duplicate_action: keep
tagmatch:
  store: {home / "tagmatch-store"}
""", encoding="utf-8")
    _beet(home, "import", "-q", "-A", str(fixture_dir / "library"))
    out = _beet(home, "tagmatch-index").stdout
    assert "added 14" in out, out
    return home


def test_import_proposes_the_library_track_by_audio(beets_home, fixture_dir, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in [*KNOWN, UNKNOWN]:
        shutil.copy2(fixture_dir / "messy" / name, incoming / name)
    assert all(not read_tags(incoming / n).get("title") for n in KNOWN)  # untagged, garbage names

    _beet(beets_home, "import", "-q", "-s", str(incoming))
    listed = _beet(beets_home, "ls", "-f", "$title|$artist|$album|$track|$data_source|$tagmatch_confidence|$path",
                   "data_source:Tagmatch").stdout.splitlines()
    by_title = {line.split("|")[0]: line.split("|") for line in listed}
    assert sorted(by_title) == sorted(KNOWN.values())
    for title, (_, artist, album, track, source, confidence, path) in by_title.items():
        assert artist and album and int(track) >= 1 and source == "Tagmatch"
        assert float(confidence) >= 0.96  # what beets' -q takes as a strong recommendation
        assert read_tags(path)["title"] == title  # written into the file beets imported
    everything = _beet(beets_home, "ls", "-f", "$data_source").stdout.splitlines()
    assert len(everything) == 14 + len(KNOWN) + 1  # the unknown song imported as it is: no candidate
    assert everything.count("Tagmatch") == len(KNOWN)


def test_an_album_import_gets_the_library_album(beets_home, fixture_dir, tmp_path):
    album = tmp_path / "rip"  # Signal Garden's three songs, as a messy rip
    album.mkdir()
    for name in ("-leading dash.wav", "01.wav"):
        shutil.copy2(fixture_dir / "messy" / name, album / name)
    shutil.copy2(fixture_dir / "messy" / "track07.mp3", album / "track07.mp3")
    _beet(beets_home, "import", "-q", str(album))
    listed = _beet(beets_home, "ls", "-a", "-f", "$album|$albumartist|$data_source", "data_source:Tagmatch").stdout
    assert listed.splitlines() == ["Signal Garden|Kosmo Dial|Tagmatch"]
    titles = _beet(beets_home, "ls", "-f", "$track $title", "album:Signal Garden", "data_source:Tagmatch",
                   "singleton:false").stdout
    assert titles.splitlines() == ["01 Neon Orchard", "02 Übertragung", "03 Packet Loss Lullaby"]


def test_dupes_lists_the_copies_of_library_tracks(beets_home):
    out = _beet(beets_home, "tagmatch-dupes").stdout
    assert "duplicate group(s)" in out
    # after the import above, each known song is in the library twice (the reference and the copy)
    groups = out.count("duplicate recording (")
    assert groups >= len(KNOWN), out
