"""Music to train and calibrate on, split into known songs and held-out ones: the development
corpus of real music (built by ../shared/corpus/fetch-dev-corpus), or any folders of music.

The dev corpus serves `make train-default`, `make bench` and the shipped model's calibration,
never the tests. One fixed split serves them all:
about a fifth of the songs are held out of training AND of the benchmark's reference library, so
the "unknown song" queries are music the model has never seen. Remastered pairs
(related.tsv) stay on one side of the split and count as one song.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(os.environ.get("TAGMATCH_DEV_CORPUS", Path.home() / ".cache" / "tagmatch-dev-corpus"))


@dataclass(frozen=True)
class Track:
    path: Path
    artist: str
    title: str
    album: str
    group: str  # songs sharing audio (remasters) share a group


@dataclass(frozen=True)
class DevCorpus:
    root: Path
    known: list[Track]  # reference library of the benchmark; training data
    unknown: list[Track]  # held out of training and of the reference
    train_noise: list[Path]
    bench_noise: list[Path]  # background recordings never seen in training


def _bucket(key: str, n: int) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % n


def corpus_available(root: Path = DEFAULT_ROOT) -> bool:
    return (Path(root) / "music.list").exists() and (Path(root) / "noise.list").exists()


def load_corpus(root: Path = DEFAULT_ROOT) -> DevCorpus:
    root = Path(root)
    music = [Path(l.strip()) for l in (root / "music.list").read_text().splitlines() if l.strip()]
    noise = [Path(l.strip()) for l in (root / "noise.list").read_text().splitlines() if l.strip()]
    tags = {}
    with open(root / "tracks.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            tags[row["path"]] = row
    group = {str(p): str(p.relative_to(root)) for p in music}
    related = root / "related.tsv"
    if related.exists():
        for line in related.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0] in group and parts[1] in group:
                group[parts[1]] = group[parts[0]]
    known, unknown = [], []
    for p in music:
        t = tags.get(str(p), {})
        track = Track(p, t.get("artist", ""), t.get("title", "") or p.stem, t.get("album", ""), group[str(p)])
        (unknown if _bucket(track.group, 5) == 0 else known).append(track)
    train_noise = [p for p in noise if _bucket(str(p.relative_to(root)), 4) != 0]
    bench_noise = [p for p in noise if _bucket(str(p.relative_to(root)), 4) == 0]
    return DevCorpus(root, known, unknown, train_noise, bench_noise)


def folder_corpus(music: list[Path], unknown: list[Path] = (), noise: list[Path] = (),
                  held_out: int = 5) -> DevCorpus:
    """A corpus of any folders of music, for `tagmatch calibrate`: every file is a song of its own.
    The songs under `unknown` are the held-out ones; without any, one song in `held_out` is, picked
    by a hash of its path under the folder (so the split stays the same when files are added or the
    folder moves). `noise`: background
    recordings for the noisy conditions (none: synthetic noise)."""
    from tagmatch.audio.decode import find_audio_files

    music = [Path(m).absolute() for m in music]
    root = music[0] if len(music) == 1 and music[0].is_dir() else Path(os.path.commonpath(music))

    def tracks(dirs) -> list[Track]:
        files = sorted({p.absolute() for d in dirs for p in find_audio_files(Path(d))})
        return [Track(p, "", p.stem, "", str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
                for p in files]

    songs, held = tracks(music), tracks(unknown)
    if not held:
        held = [t for t in songs if _bucket(t.group, held_out) == 0]
        songs = [t for t in songs if _bucket(t.group, held_out) != 0]
    noise_files = sorted({p.absolute() for d in noise for p in find_audio_files(Path(d))})
    return DevCorpus(root, songs, held, [], noise_files)
