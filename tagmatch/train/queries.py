"""Query sets: degraded copies of known and of held-out songs, as real encoded files, the way a
user's messy folder holds them. The benchmark reports on them and the calibration is fitted on
them (`tagmatch.train.calibrate`). Each query is deterministic from (seed, condition, track) and
cached as audio under a work folder, so a re-run makes only what is missing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

from tagmatch.audio.degrade import (avoid_clipping, band_pass, change_speed, coloured_noise, gain_db, mix_at_snr,
                                    power, room_reverb, write_av, write_mp3)
from tagmatch.errors import TagmatchError
from tagmatch.fsutil import atomic_write_text
from tagmatch.progress import OnProgress, Progress, quiet
from tagmatch.train.devcorpus import DevCorpus, Track



GEN_VERSION = 1  # bump when query generation changes, so stale cached queries are not reused


MIN_EXCERPT_DBFS = -50.0  # excerpts quieter than this are re-drawn: nobody records silence


@dataclass
class Excerpt:
    """Source audio for one query: `audio` holds `n_pre` samples of pre-roll (for reverb tails)
    and then the excerpt; whole-file queries keep all channels, excerpts are mono."""

    audio: np.ndarray
    sr: int
    n_pre: int
    start_s: float

    @property
    def x(self) -> np.ndarray:
        return self.audio[self.n_pre :]


NoiseFn = Callable[[int], tuple[np.ndarray, str]]  # n samples at the excerpt's rate -> (noise, name)
Rendered = tuple[np.ndarray, int, dict]  # (audio, sample rate, facts for the sidecar)


def render_plain(ex: Excerpt, rng: np.random.Generator, noise: NoiseFn) -> Rendered:
    return ex.x, ex.sr, {}


def render_noise10(ex: Excerpt, rng: np.random.Generator, noise: NoiseFn) -> Rendered:
    nz, name = noise(len(ex.x))
    return mix_at_snr(ex.x, nz, 10.0), ex.sr, {"snr_db": 10.0, "noise": name}


def render_noise0_reverb(ex: Excerpt, rng: np.random.Generator, noise: NoiseFn) -> Rendered:
    """Music played in a room (reverb over pre-roll + excerpt, so the tail is real music), with
    room noise as loud as the music at the microphone."""
    wet, rt60 = room_reverb(ex.audio, ex.sr, rng)
    y = wet[ex.n_pre :]
    nz, name = noise(len(y))
    return mix_at_snr(y, nz, 0.0), ex.sr, {"snr_db": 0.0, "rt60_s": round(rt60, 3), "noise": name}


def render_phone(ex: Excerpt, rng: np.random.Generator, noise: NoiseFn) -> Rendered:
    """A phone held up to a speaker: room noise at the mic, then the 300-3400 Hz channel at 8 kHz."""
    nz, name = noise(len(ex.x))
    y = band_pass(mix_at_snr(ex.x, nz, 15.0), ex.sr)
    y = np.asarray(soxr.resample(y, ex.sr, 8000, quality="HQ"), np.float32)
    return avoid_clipping(y), 8000, {"snr_db": 15.0, "band_hz": [300, 3400], "noise": name}


def render_speed(ex: Excerpt, rng: np.random.Generator, noise: NoiseFn, factor: float) -> Rendered:
    return change_speed(ex.x, ex.sr, factor), ex.sr, {"speed": factor}


def render_quiet(ex: Excerpt, rng: np.random.Generator, noise: NoiseFn) -> Rendered:
    return gain_db(ex.x, -20.0), ex.sr, {"gain_db": -20.0}


@dataclass(frozen=True)
class Condition:
    name: str
    excerpt_s: float | None  # output seconds; None = the whole file
    render: Callable[..., Rendered]
    encode: Callable[[Path, np.ndarray, int], None]
    ext: str
    codec: str  # for the report
    speed: float = 1.0  # source seconds per output second
    preroll_s: float = 0.0


CONDITIONS: tuple[Condition, ...] = (
    Condition("whole_mp3_128k", None, render_plain, partial(write_mp3, kbps=128), ".mp3", "MP3 128k CBR"),
    Condition("noise10_20s", 20.0, render_noise10, partial(write_mp3, kbps=128), ".mp3", "MP3 128k CBR"),
    Condition("noise0_reverb_12s", 12.0, render_noise0_reverb, partial(write_av, codec="libopus", kbps=48),
              ".opus", "Opus 48k", preroll_s=1.0),
    Condition("phone_12s", 12.0, render_phone, partial(write_av, codec="aac", kbps=32), ".m4a", "AAC 32k 8 kHz"),
    Condition("speed_plus3_15s", 15.0, partial(render_speed, factor=1.03), partial(write_mp3, kbps=160),
              ".mp3", "MP3 160k CBR", speed=1.03),
    Condition("speed_minus3_15s", 15.0, partial(render_speed, factor=0.97), partial(write_mp3, kbps=160),
              ".mp3", "MP3 160k CBR", speed=0.97),
    Condition("quiet_aac_10s", 10.0, render_quiet, partial(write_av, codec="aac", kbps=128), ".m4a", "AAC 128k"),
    Condition("lowbitrate_mp3_15s", 15.0, render_plain, partial(write_mp3, kbps=32), ".mp3", "MP3 32k CBR"),
)


CONDITION_NAMES = tuple(c.name for c in CONDITIONS)


def select_conditions(spec: str | None) -> list[Condition]:
    if not spec:
        return list(CONDITIONS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in CONDITION_NAMES]
    if unknown:
        raise TagmatchError(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(CONDITION_NAMES)}")
    return [c for c in CONDITIONS if c.name in names]


@dataclass
class Query:
    path: Path
    condition: str
    kind: str  # "known" | "unknown"
    source: str
    group: str
    meta: dict = field(default_factory=dict)  # offset, durations, bitrate, noise...


def _h(text: str, n: int = 10) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def track_key(track: Track, root: Path) -> str:
    try:
        return str(Path(track.path).relative_to(root))
    except ValueError:
        return str(track.path)


def stable_order(tracks: list[Track], root: Path) -> list[Track]:
    """A fixed pseudo-random order (not the corpus' package order), so --limit N takes a mixed
    sample and the same N tracks for every seed."""
    return sorted(tracks, key=lambda t: _h(track_key(t, root), 16))


class NoiseBank:
    """The bench's background recordings (never used in training), decoded once per rate."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        self._by_sr: dict[int, list[tuple[np.ndarray, str]]] = {}

    def recordings(self, sr: int) -> list[tuple[np.ndarray, str]]:
        if sr not in self._by_sr:
            from tagmatch.audio.decode import load_audio

            recs = [(load_audio(p, sr), f"{p.parent.parent.name}/{p.name}") for p in self.paths]
            self._by_sr[sr] = [(y, n) for y, n in recs if power(y) > 1e-8]
        return self._by_sr[sr]

    def clip(self, rng: np.random.Generator, n: int, sr: int) -> tuple[np.ndarray, str]:
        """n samples of a random recording from a random offset, looped when it is short; pink
        noise when the bank has no recordings."""
        if not self.paths:
            return coloured_noise(rng, n, sr, 1.0), "pink noise"
        recs = self.recordings(sr)
        y, name = recs[int(rng.integers(len(recs)))]
        start = int(rng.integers(len(y)))
        return y[(start + np.arange(n)) % len(y)], name


def read_excerpt(path: Path, cond: Condition, rng: np.random.Generator) -> Excerpt:
    """A random excerpt (seeded) long enough for the condition; quiet passages are re-drawn.
    Mono: tagmatch mixes to mono when decoding, and LAME through libsndfile runs at only ~5-10x
    realtime per channel here, so stereo would double the cost of whole-file queries for nothing."""
    if cond.excerpt_s is None:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return Excerpt(audio.mean(axis=1), sr, 0, 0.0)
    info = sf.info(str(path))
    sr, total = info.samplerate, info.frames
    n_src = min(total, int(math.ceil(cond.excerpt_s * cond.speed * sr)))
    for _ in range(10):
        start = int(rng.integers(0, total - n_src + 1))
        first = max(0, start - int(cond.preroll_s * sr))
        audio, _ = sf.read(str(path), start=first, stop=start + n_src, dtype="float32", always_2d=True)
        ex = Excerpt(audio.mean(axis=1), sr, start - first, start / sr)
        if 10 * math.log10(power(ex.x) + 1e-20) > MIN_EXCERPT_DBFS:
            break
    return ex


def query_rng(seed: int, cond: str, key: str) -> np.random.Generator:
    """One generator per (seed, condition, track): a query never depends on which others exist."""
    return np.random.default_rng([seed, int(_h(cond, 8), 16), int(_h(key, 8), 16)])


def make_query(track: Track, kind: str, cond: Condition, seed: int, out_dir: Path, root: Path,
               noise: NoiseBank) -> tuple[Query, bool]:
    """Generate (or reuse from the cache) one degraded copy of `track` as a real encoded file.
    Returns (query, whether it came from the cache). A cached query made by another version
    of the generator or codec setting is made again."""
    key = track_key(track, root)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(track.path).stem)[:40]
    path = out_dir / cond.name / f"{kind}-{_h(key)}-{safe}{cond.ext}"
    sidecar = path.with_name(path.name + ".json")
    if path.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if meta.get("gen_version") == GEN_VERSION and meta.get("codec") == cond.codec:
            return Query(path, cond.name, kind, str(track.path), track.group, meta), True
    rng = query_rng(seed, cond.name, key)
    ex = read_excerpt(Path(track.path), cond, rng)
    y, sr, facts = cond.render(ex, rng, lambda n: noise.clip(rng, n, ex.sr))
    path.parent.mkdir(parents=True, exist_ok=True)
    cond.encode(path, y, sr)
    dur = len(y) / sr
    meta = {"offset_s": round(ex.start_s, 3), "duration_s": round(dur, 3),
            "kbps": round(path.stat().st_size * 8 / max(dur, 1e-9) / 1000, 1), "codec": cond.codec,
            "seed": seed, "gen_version": GEN_VERSION, **facts}
    atomic_write_text(sidecar, json.dumps(meta))
    return Query(path, cond.name, kind, str(track.path), track.group, meta), False


def make_queries(corpus: DevCorpus, conditions: list[Condition], seed: int, limit: int | None,
                 whole_limit: int, cache: Path, kinds: tuple[str, ...] = ("known", "unknown"),
                 on_progress: OnProgress = quiet) -> list[Query]:
    """One query per (condition, track), from known tracks and/or unknown ones; cached per seed.
    Progress comes per condition (stage "queries NAME"); its last event's `info` sums it up."""
    out_dir = cache / "queries" / f"g{GEN_VERSION}-seed{seed}"
    noise = NoiseBank(corpus.bench_noise)
    sides = [(kind, stable_order(corpus.known if kind == "known" else corpus.unknown, corpus.root))
             for kind in kinds]
    queries: list[Query] = []
    for cond in conditions:
        t0, before = time.perf_counter(), len(queries)
        todo = [(kind, t) for kind, tracks in sides
                for t in tracks[: min(len(tracks) if limit is None else limit,
                                      whole_limit if cond.excerpt_s is None else len(tracks))]]
        stage, cached = f"queries {cond.name}", 0
        for i, (kind, track) in enumerate(todo, 1):
            q, was_cached = make_query(track, kind, cond, seed, out_dir, corpus.root, noise)
            cached += was_cached
            queries.append(q)
            if i < len(todo):
                on_progress(Progress(stage, i, len(todo), str(q.path), unit="queries"))
        made = queries[before:]
        kbps = statistics.median(q.meta["kbps"] for q in made) if made else 0.0
        on_progress(Progress(stage, len(todo), len(todo), unit="queries", info=(
            f"{sum(q.kind == 'known' for q in made)} known + {sum(q.kind == 'unknown' for q in made)} unknown "
            f"({cond.codec}, median {kbps:.0f} kbps; {len(made) - cached} made, {cached} cached) in "
            f"{time.perf_counter() - t0:.1f} s")))
    return queries


def link_reference(corpus: DevCorpus, ref_dir: Path) -> dict[str, Track]:
    """A folder of symlinks to the known tracks (names stable across runs, so --reuse-store
    finds them unchanged). Returns symlink name -> track."""
    ref_dir.mkdir(parents=True, exist_ok=True)
    by_name = {f"{_h(track_key(t, corpus.root))}-{Path(t.path).name}": t for t in corpus.known}
    for p in ref_dir.iterdir():
        if p.name not in by_name or not p.is_symlink() or Path(os.readlink(p)) != Path(by_name[p.name].path):
            p.unlink()
    for name, t in by_name.items():
        if not (ref_dir / name).is_symlink():
            (ref_dir / name).symlink_to(Path(t.path))
    return by_name


def queryable(corpus: DevCorpus, store, by_name: dict[str, Track], on_progress: OnProgress = quiet) -> DevCorpus:
    """Known tracks that failed to index (the corpus has a 10 s silence.ogg) are not in the
    reference and cannot be identified by anything: leave them out of the queries, loudly."""
    indexed = {by_name[Path(t.path).name] for t in store.tracks if Path(t.path).name in by_name}
    left_out = [t for t in corpus.known if t not in indexed]
    for i, t in enumerate(left_out, 1):
        on_progress(Progress("left out of the queries", i, len(left_out), str(t.path),
                             error="not in the reference (failed to index), no queries made from it"))
    return replace(corpus, known=[t for t in corpus.known if t in indexed])
