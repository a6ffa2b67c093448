"""Benchmark tagmatch on the dev corpus (`make bench`).

Measures what a user would care about: how often a messy copy of a library song is identified
(at the calibrated threshold and as the bare best guess), how often a song that is NOT in the
library is wrongly matched, and how fast indexing and scanning are. With --calibrate it first
fits the score calibration on a separate query set and writes it into the model file.

Reference library: the corpus' known tracks, symlinked into one folder (index_library indexes a
folder and the corpus mixes known and unknown songs in its package folders). Queries: degraded
copies of known and of held-out unknown tracks, made with real encoders (LAME through
libsndfile for MP3, FFmpeg through PyAV for AAC and Opus), deterministic from --seed and cached
as audio files under ~/.cache/tagmatch/bench/queries so re-runs skip generation. Nothing is
written into the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

from tagmatch.train.devcorpus import DEFAULT_ROOT, DevCorpus, Track, corpus_available, load_corpus
from tagmatch.fsutil import atomic_path, atomic_write_text

DEFAULT_CACHE = Path.home() / ".cache" / "tagmatch" / "bench"
GEN_VERSION = 1  # bump when query generation changes, so stale cached queries are not reused
WHOLE_LIMIT = 30  # whole-file queries are long: this many tracks per side by default
WRITE_CHUNK = 1 << 16  # frames per encoder write (one huge libsndfile write can crash, e.g. Ogg)
MIN_EXCERPT_DBFS = -50.0  # excerpts quieter than this are re-drawn: nobody records silence
MAX_FALSE_MATCH = 0.005  # calibration: at most this false-match rate on unknown songs
CONFIDENCE_GRID = (0.999, 0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1, 0.01)

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """One progress line with the elapsed time (the bench runs for minutes; no fancy bars)."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", flush=True)


def loadavg() -> list[float]:
    """The 1/5/15-minute load average: timings are only comparable at similar load."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


# ---- degradations (pure numpy: unit-tested on synthetic signals) ---------------------------

def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def avoid_clipping(y: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale the whole signal down if it would clip in a fixed-point encoder (keeps every ratio)."""
    m = float(np.max(np.abs(y))) if len(y) else 0.0
    y = y * (peak / m) if m > peak else y
    return np.asarray(y, np.float32)


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that power(x) / power(noise) is `snr_db` over the whole clip."""
    ps, pn = power(x), power(noise)
    if ps <= 0.0 or pn <= 0.0:
        return np.asarray(x, np.float32)
    return avoid_clipping(x + noise * math.sqrt(ps / pn * 10.0 ** (-snr_db / 10.0)))


def change_speed(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play `factor` times faster, tempo and pitch together (a tape or turntable running fast):
    resample as if the audio had been recorded at sr * factor, and keep the sample rate."""
    return np.asarray(soxr.resample(x, sr * factor, sr, quality="HQ"), np.float32)


def band_pass(x: np.ndarray, sr: int, lo: float = 300.0, hi: float = 3400.0, order: int = 4) -> np.ndarray:
    """Telephone band (Butterworth, 24 dB/octave each side)."""
    from scipy.signal import butter, sosfilt

    sos = butter(order, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return np.asarray(sosfilt(sos, x), np.float32)


def gain_db(x: np.ndarray, db: float) -> np.ndarray:
    return np.asarray(x * 10.0 ** (db / 20.0), np.float32)


def room_reverb(x: np.ndarray, sr: int, rng: np.random.Generator,
                rt60_s: tuple[float, float] = (0.4, 0.8)) -> tuple[np.ndarray, float]:
    """Convolve with a synthetic room: direct sound + an exponentially decaying noise tail whose
    energy is 0-6 dB below the direct sound. Returns (same length as x, the RT60 drawn)."""
    from scipy.signal import fftconvolve

    rt60 = float(rng.uniform(*rt60_s))
    t = np.arange(int(rt60 * sr)) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at t = rt60
    tail[0] = 0.0
    ir = tail / (np.linalg.norm(tail) + 1e-12) * rng.uniform(0.5, 1.0)
    ir[0] = 1.0
    return avoid_clipping(fftconvolve(x, ir)[: len(x)]), rt60


# ---- encoders -----------------------------------------------------------------------------

def mp3_compression_level(sr: int, kbps: float) -> float:
    """libsndfile maps its compression level c linearly onto LAME's CBR range of the MPEG
    version that `sr` implies (measured: 44.1 kHz c=0.6667 -> 128 kbps, c=0.99 -> 32 kbps);
    c = 1.0 is refused, hence the clamp."""
    lo, hi = (32, 320) if sr >= 32000 else (8, 160) if sr >= 16000 else (8, 64)
    return float(np.clip(1.0 - (kbps - lo) / (hi - lo), 0.0, 0.999))


def write_mp3(path: Path, y: np.ndarray, sr: int, kbps: float) -> None:
    """Constant-bitrate MP3 through libsndfile's LAME encoder, written in chunks."""
    channels = 1 if y.ndim == 1 else y.shape[1]
    with atomic_path(path) as tmp:
        with sf.SoundFile(tmp, "w", sr, channels, format="MP3", subtype="MPEG_LAYER_III",
                          compression_level=mp3_compression_level(sr, kbps), bitrate_mode="CONSTANT") as f:
            for i in range(0, len(y), WRITE_CHUNK):
                f.write(y[i : i + WRITE_CHUNK])


_AV_CONTAINERS = {".m4a": "ipod", ".opus": "ogg"}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def write_av(path: Path, y: np.ndarray, sr: int, codec: str, kbps: float) -> None:
    """Mono AAC (.m4a) or Opus (.opus) through PyAV's bundled FFmpeg."""
    import av

    if codec == "libopus" and sr not in _OPUS_RATES:
        y, sr = np.asarray(soxr.resample(y, sr, 48000, quality="HQ"), np.float32), 48000
    y = np.ascontiguousarray(y if y.ndim == 1 else y.mean(axis=1), np.float32)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=_AV_CONTAINERS[path.suffix]) as container:
            stream = container.add_stream(codec, rate=sr)
            stream.bit_rate = int(kbps * 1000)
            stream.layout = "mono"
            for i in range(0, len(y), 4096):
                frame = av.AudioFrame.from_ndarray(y[None, i : i + 4096], format="flt", layout="mono")
                frame.sample_rate = sr
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)


# ---- conditions ---------------------------------------------------------------------------

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
        raise SystemExit(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(CONDITION_NAMES)}")
    return [c for c in CONDITIONS if c.name in names]


# ---- query generation ---------------------------------------------------------------------

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
        """n samples of a random recording from a random offset, looped when it is short."""
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
                 whole_limit: int, cache: Path, kinds: tuple[str, ...] = ("known", "unknown")) -> list[Query]:
    """One query per (condition, track), from known tracks and/or unknown ones; cached per seed."""
    out_dir = cache / "queries" / f"g{GEN_VERSION}-seed{seed}"
    noise = NoiseBank(corpus.bench_noise)
    sides = [(kind, stable_order(corpus.known if kind == "known" else corpus.unknown, corpus.root))
             for kind in kinds]
    queries: list[Query] = []
    for cond in conditions:
        t0, before = time.perf_counter(), len(queries)
        cached = 0
        for kind, tracks in sides:
            n = len(tracks) if limit is None else limit
            if cond.excerpt_s is None:
                n = min(n, whole_limit)
            for track in tracks[:n]:
                q, was_cached = make_query(track, kind, cond, seed, out_dir, corpus.root, noise)
                cached += was_cached
                queries.append(q)
                if not was_cached and (len(queries) - before - cached) % 50 == 0:
                    log(f"queries {cond.name}: {len(queries) - before - cached} made so far")
        made = queries[before:]
        kbps = statistics.median(q.meta["kbps"] for q in made) if made else 0.0
        log(f"queries {cond.name}: {sum(q.kind == 'known' for q in made)} known + "
            f"{sum(q.kind == 'unknown' for q in made)} unknown ({cond.codec}, median {kbps:.0f} kbps; "
            f"{len(made) - cached} made, {cached} cached) in {time.perf_counter() - t0:.1f} s")
    return queries


# ---- reference store ----------------------------------------------------------------------

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


def warm_up(model) -> float:
    """Compile the encoder for every input shape it uses, so no timing below includes JIT."""
    t0 = time.perf_counter()
    fc = model.feature_config
    if model.model_config.kind == "window":
        for n in (8, 16, 24, 32):  # every batch shape `embed` uses
            model.embed(np.zeros((n, fc.window_frames, fc.n_mels), np.float32))
    else:
        stride = model.model_config.stride
        for n in (32, 64, 128):  # every chunk `embed_at` uses
            model.embed_at(np.zeros(((n + 3) * stride, fc.n_mels), np.float32), np.arange(n) * stride)
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU time of this process and of its worker processes (the index runs on joblib workers)."""
    import psutil

    me = psutil.Process()
    total = time.process_time()
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # ended meanwhile
            pass
    return total


def build_store(corpus: DevCorpus, model, cache: Path, reuse: bool):
    """Index the known tracks into a fresh store (or reuse the last one) and measure the speed.

    Returns (store, index stats, symlink name -> track); with --reuse-store the stats are those
    of the run that built it.
    """
    from tagmatch.errors import StoreError
    from tagmatch.store.index import index_library
    from tagmatch.store.shards import Store, disk_bytes

    ref_dir, store_path, stats_path = cache / "ref", cache / "store", cache / "store-stats.json"
    by_name = link_reference(corpus, ref_dir)
    if reuse and store_path.exists() and stats_path.exists():
        try:
            store = Store.load(store_path)
            store.check_model(model.model_id, model.feature_config, store_path)
            store, report = index_library(ref_dir, store, model)
            if not (report.added or report.updated or report.removed):
                stats = json.loads(stats_path.read_text())
                stats["reused"] = True
                log(f"reusing store {store_path} ({len(store.tracks)} tracks, built by this model)")
                return store, stats, by_name
            log("reference folder changed since the store was built: re-indexing")
        except StoreError as exc:
            log(f"cannot reuse the store ({exc}): re-indexing")
    shutil.rmtree(store_path, ignore_errors=True)  # ours: a cache of derived vectors

    def progress(p) -> None:
        if p.error:
            log(f"index error {p.path}: {p.error}")
        if p.done % 20 == 0 or p.done == p.total:
            log(f"indexed {p.done}/{p.total} tracks")

    log(f"indexing {len(corpus.known)} known tracks (load {loadavg()})")
    w0, c0 = time.perf_counter(), cpu_seconds()
    store, report = index_library(ref_dir, None, model, progress=progress)  # as `tagmatch index`: auto
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    store.save(store_path)
    size = disk_bytes(store_path)
    hours = max(report.audio_seconds / 3600, 1e-9)  # nothing indexed: no division by zero
    stats = {
        "tracks": len(store.tracks), "errors": report.errors, "audio_hours": round(hours, 3),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "x_realtime": round(report.audio_seconds / wall, 1),
        "store_bytes": size, "store_mb_per_hour": round(size / 1e6 / hours, 3),
        "vectors": store.n_vectors, "vectors_per_hour": round(store.n_vectors / hours),
        "loadavg_after": loadavg(), "reused": False,
    }
    atomic_write_text(stats_path, json.dumps(stats, indent=1))
    log(f"indexed {stats['tracks']} tracks, {hours:.2f} h in {wall:.0f} s ({stats['x_realtime']}x realtime)")
    return store, stats, by_name


def queryable(corpus: DevCorpus, store, by_name: dict[str, Track]) -> DevCorpus:
    """Known tracks that failed to index (the corpus has a 10 s silence.ogg) are not in the
    reference and cannot be identified by anything: leave them out of the queries, loudly."""
    indexed = {by_name[Path(t.path).name] for t in store.tracks if Path(t.path).name in by_name}
    left_out = [t for t in corpus.known if t not in indexed]
    for t in left_out:
        log(f"not in the reference (failed to index), no queries made from it: {t.path}")
    return replace(corpus, known=[t for t in corpus.known if t in indexed])


# ---- scanning -----------------------------------------------------------------------------

def run_queries(queries: list[Query], store, model, by_name: dict[str, Track], label: str,
                searcher=None, query_hop_s: float | None = None) -> list[dict]:
    """match_file on every query, one at a time so each file's wall and CPU time is its own.
    `searcher`: what `tagmatch scan` would search (default: the store, exact). `query_hop_s`:
    None for the model's own."""
    from tagmatch.match.config import MatchConfig
    from tagmatch.match.decide import match_file

    cfg = MatchConfig(query_hop_s=query_hop_s)  # the threshold is on the calibrated confidence: 0.5
    records = []
    t0 = time.perf_counter()
    for i, q in enumerate(queries, 1):
        w0, c0 = time.perf_counter(), time.process_time()
        fm = match_file(q.path, store, model, cfg, searcher)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        best = fm.match
        pred = by_name.get(Path(store.tracks[best.track].path).name) if best else None
        records.append({
            "condition": q.condition, "kind": q.kind, "query": str(q.path), "source": q.source,
            "group": q.group, "status": fm.status, "error": fm.error,
            "pred_source": str(pred.path) if pred else None, "pred_group": pred.group if pred else None,
            "correct": bool(pred is not None and pred.group == q.group),
            "confidence": best.confidence if best else None, "margin": best.margin if best else None,
            "score": best.score if best else None, "pred_offset_s": best.offset_s if best else None,
            "fragments": [best.fragments_agreeing, best.fragments_total] if best else None,
            "offset_s": q.meta.get("offset_s"), "duration_s": q.meta.get("duration_s"),
            "wall_ms": round(wall * 1000, 1), "cpu_ms": round(cpu * 1000, 1), "stopped_at_s": fm.stopped_at_s,
            "verified": best.verified if best else None,
            "significance": best.significance if best else None,
        })
        if i % 100 == 0 or i == len(queries):
            log(f"{label}: scanned {i}/{len(queries)} queries ({time.perf_counter() - t0:.0f} s, load {loadavg()})")
    return records


# ---- summary ------------------------------------------------------------------------------

def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summary_row(records: list[dict]) -> dict:
    """Accuracy on known-song queries, false matches on unknown-song queries, and speed."""
    known = [r for r in records if r["kind"] == "known"]
    unknown = [r for r in records if r["kind"] == "unknown"]
    hit = sum(r["status"] == "match" and r["correct"] for r in known)
    top1 = sum(r["correct"] for r in known)
    wrong = sum(r["status"] == "match" and not r["correct"] for r in known)
    false = sum(r["status"] == "match" for r in unknown)
    walls = [r["wall_ms"] for r in records]
    return {
        "n_known": len(known), "acc_threshold": _rate(hit, len(known)), "acc_top1": _rate(top1, len(known)),
        "known_wrong_matches": wrong, "n_unknown": len(unknown), "false_matches": false,
        "false_match_rate": _rate(false, len(unknown)), "errors": sum(r["status"] == "error" for r in records),
        "median_wall_ms": statistics.median(walls) if walls else None,
    }


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per condition (in the order met) plus an 'overall' row."""
    out: dict[str, dict] = {}
    for cond in dict.fromkeys(r["condition"] for r in records):
        out[cond] = summary_row([r for r in records if r["condition"] == cond])
    out["overall"] = summary_row(records)
    return out


def speed_summary(records: list[dict]) -> dict:
    def stats(key: str) -> dict:
        v = [r[key] for r in records]
        return {"mean": round(statistics.fmean(v), 1), "median": round(statistics.median(v), 1)} if v else {}

    audio_s = sum(r["duration_s"] or 0.0 for r in records)
    wall_s = sum(r["wall_ms"] for r in records) / 1000
    excerpts = [r["cpu_ms"] for r in records if r["condition"] != "whole_mp3_128k"]
    whole = [r for r in records if r["condition"] == "whole_mp3_128k"]
    return {"queries": len(records), "audio_s": round(audio_s, 1), "wall_ms": stats("wall_ms"),
            "cpu_ms": stats("cpu_ms"), "x_realtime": round(audio_s / wall_s, 1) if wall_s else None,
            "excerpt_cpu_ms_median": round(statistics.median(excerpts), 1) if excerpts else None,
            "whole_cpu_ms_median": {k: round(statistics.median(r["cpu_ms"] for r in whole if r["kind"] == k), 1)
                                    for k in ("known", "unknown") if any(r["kind"] == k for r in whole)},
            "stopped_early": sum(r.get("stopped_at_s") is not None for r in records),
            "whole_stopped_early": sum(r.get("stopped_at_s") is not None for r in whole), "whole": len(whole)}


def tradeoff(records: list[dict], calibration) -> list[dict]:
    """Known accuracy vs unknown false-match rate as the confidence threshold is loosened."""
    known = [r for r in records if r["kind"] == "known"]
    unknown = [r for r in records if r["kind"] == "unknown"]

    def conf(r: dict) -> float:
        return r["confidence"] if r["confidence"] is not None else -1.0

    rows = []
    for c in CONFIDENCE_GRID:
        rows.append({
            "confidence": c, "margin": calibration.mid + calibration.width * math.log(c / (1 - c)),
            "known_acc": _rate(sum(r["correct"] and conf(r) >= c for r in known), len(known)),
            "known_wrong": _rate(sum(not r["correct"] and conf(r) >= c for r in known), len(known)),
            "false_match_rate": _rate(sum(conf(r) >= c for r in unknown), len(unknown)),
        })
    rows.append({"confidence": 0.0, "margin": None,  # no threshold: the best guess is always taken
                 "known_acc": _rate(sum(r["correct"] for r in known), len(known)),
                 "known_wrong": _rate(sum(not r["correct"] for r in known), len(known)),
                 "false_match_rate": _rate(sum(r["confidence"] is not None for r in unknown), len(unknown))})
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def print_table(summary: dict[str, dict]) -> None:
    print(f"\n{'condition':<20} {'known':>5} {'acc@thr':>8} {'top-1':>7} {'wrong':>5} "
          f"{'unknown':>7} {'false':>5} {'fm rate':>7} {'errors':>6} {'med ms':>7}")
    for name, r in summary.items():
        if name == "overall":
            print("-" * 84)
        print(f"{name:<20} {r['n_known']:>5} {_pct(r['acc_threshold']):>8} {_pct(r['acc_top1']):>7} "
              f"{r['known_wrong_matches']:>5} {r['n_unknown']:>7} {r['false_matches']:>5} "
              f"{_pct(r['false_match_rate']):>7} {r['errors']:>6} {r['median_wall_ms'] or 0:>7.0f}")
    print("acc@thr: status 'match' with the right song (remasters count); top-1: best candidate right, "
          "no threshold;\nwrong: known queries matched to the wrong song; false: unknown-song queries "
          "reported as a match.")


def print_speed(index: dict, query: dict, load: dict[str, list[float]], compile_s: float) -> None:
    print(f"\nindex: {index['tracks']} tracks, {index['audio_hours']:.2f} h of audio in {index['wall_s']:.0f} s wall "
          f"= {index['x_realtime']:.0f}x realtime (decode included), {index['cpu_s']:.0f} s CPU "
          f"({index['cpu_s'] / index['wall_s']:.2f} cores){' [reused store: timings from the run that built it]' if index.get('reused') else ''}")
    for path, err in index["errors"]:
        print(f"index error: {path}: {err}")
    print(f"store: {index['store_bytes'] / 1e6:.1f} MB = {index['store_mb_per_hour']:.2f} MB per hour of audio, "
          f"{index['vectors_per_hour']} vectors per hour")
    print(f"queries: {query['queries']} files, {query['audio_s'] / 60:.0f} min of audio; per file wall mean "
          f"{query['wall_ms']['mean']:.0f} ms, median {query['wall_ms']['median']:.0f} ms; CPU mean "
          f"{query['cpu_ms']['mean']:.0f} ms, median {query['cpu_ms']['median']:.0f} ms; "
          f"{query['x_realtime']}x realtime")
    if query.get("excerpt_cpu_ms_median") is not None:
        print(f"CPU median per 10-20 s excerpt {query['excerpt_cpu_ms_median']:.0f} ms"
              + "".join(f", per whole {k} file {v:.0f} ms" for k, v in query["whole_cpu_ms_median"].items())
              + f"; stopped early, sure after the first fragment(s): {query['stopped_early']} of {query['queries']} "
              f"files ({query['whole_stopped_early']} of {query['whole']} whole files)")
    print(f"encoder compile (excluded above): {compile_s:.1f} s")
    print("load average (1/5/15 min): " + "; ".join(f"{k} {v}" for k, v in load.items())
          + f"  ({os.cpu_count()} cores)")


def print_tradeoff(rows: list[dict]) -> None:
    print(f"\n{'confidence >=':>13} {'margin >=':>10} {'known acc':>10} {'known wrong':>12} {'unknown false':>14}")
    for r in rows:
        c = "none" if r["margin"] is None else f"{r['confidence']:g}"
        m = "-" if r["margin"] is None else f"{r['margin']:.4f}"
        print(f"{c:>13} {m:>10} {_pct(r['known_acc']):>10} {_pct(r['known_wrong']):>12} "
              f"{_pct(r['false_match_rate']):>14}")


# ---- calibration --------------------------------------------------------------------------

def calibration_data(records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin, label, is_unknown) per query: label 1 = a known query whose best candidate is
    the right song; 0 = unknown queries and known queries with a wrong best candidate.
    Queries without a candidate (errors, nothing found) get margin -inf."""
    m = np.array([r["margin"] if r["margin"] is not None else -np.inf for r in records], np.float64)
    label = np.array([r["kind"] == "known" and r["correct"] for r in records], bool)
    unknown = np.array([r["kind"] == "unknown" for r in records], bool)
    return m, label, unknown


def logistic_fit(margin: np.ndarray, label: np.ndarray, min_width: float) -> tuple[float, float]:
    """Two-parameter logistic regression P(label | margin) = sigmoid((margin - mid) / width).
    Returns (mid, width); the width is floored, since separable data would drive it to 0."""
    from scipy.optimize import minimize

    y = label.astype(np.float64)

    def nll(p: np.ndarray) -> float:
        z = (margin - p[0]) / math.exp(p[1])
        return float(np.sum(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))

    start = np.array([float(np.median(margin)), math.log(max(float(np.std(margin)), min_width))])
    res = minimize(nll, start, method="L-BFGS-B",
                   bounds=[(float(margin.min()), float(margin.max())), (math.log(min_width), math.log(1.0))])
    return float(res.x[0]), float(math.exp(res.x[1]))


def fit_calibration(margin: np.ndarray, label: np.ndarray, unknown: np.ndarray,
                    max_false: float = MAX_FALSE_MATCH, min_width: float = 0.002):
    """Fit Calibration(mid, width) on (margin, label) pairs of a fitting query set.

    mid: the smallest margin (on a 0.0001 grid) reached by fewer than `max_false` of the unknown
    queries (strictly fewer, so with under 1/max_false unknown queries it sits above all of them:
    conservative). width: the scale of a free logistic fit of P(right song | margin), i.e. how
    fast the evidence separates right songs from the rest. (A logistic fit with mid pinned at
    the conservative point instead stretches the width to explain the many right answers just
    below it, and then confidence 0.9 is reached by only half the right answers.)
    Returns (Calibration, facts for the report).
    """
    from tagmatch.model.calibration import Calibration

    u = np.sort(margin[unknown])[::-1]
    if len(u) == 0:
        raise ValueError("calibration needs unknown-song queries")
    allowed = math.ceil(max_false * len(u)) - 1  # false matches tolerated
    edge = float(u[allowed]) if np.isfinite(u[allowed]) else 0.0  # -inf: that query found nothing
    mid = math.floor(edge * 1e4) / 1e4 + 1e-4  # strictly above that unknown margin

    ok = np.isfinite(margin)
    free_mid, free_width = logistic_fit(margin[ok], label[ok], min_width)
    cal = Calibration(mid=round(mid, 4), width=float(f"{free_width:.3g}"))
    known = ~unknown
    pos = label & known
    finite_u = margin[unknown][np.isfinite(margin[unknown])]
    facts = {
        "n_queries": int(len(margin)), "n_unknown": int(unknown.sum()), "n_right": int(label.sum()),
        "allowed_false_matches": allowed, "unknown_margin_top": [round(float(v), 4) for v in u[:5]],
        "unknown_margin_max": float(u[0]),
        "unknown_margin_p99_5": float(np.percentile(finite_u, 99.5)) if len(finite_u) else None,
        "false_match_rate_at_mid": float(np.mean(margin[unknown] >= cal.mid)),
        "known_acc_at_mid": float(np.mean(label[known] & (margin[known] >= cal.mid))) if known.any() else None,
        "right_margin_median": float(np.median(margin[pos])) if pos.any() else None,
        "free_logistic": {"mid": round(free_mid, 4), "width": round(free_width, 4)},
        "margin_at_conf_0.9": cal.mid + cal.width * math.log(9),
        "known_acc_at_conf_0.9": (float(np.mean(label[known] & (margin[known] >= cal.mid + cal.width * math.log(9))))
                                  if known.any() else None),
    }
    return cal, facts


# ---- main ---------------------------------------------------------------------------------

def calibrate(corpus: DevCorpus, conditions: list[Condition], args: argparse.Namespace, store, model,
              model_path: Path, by_name: dict[str, Track], searcher=None) -> dict:
    """Fit the calibration on a separate query set, write it into the model file and use it
    from here on. The fit set: known and unknown queries at seed + 1000, plus unknown-only ones
    at seed + 2000, + 3000... (--fit-unknown-sets): the threshold rests on the few highest
    unknown margins, and 27 unknown songs x 7 conditions is too few to tolerate even one false
    match at 0.5%. Whole-file queries have no randomness, so they would be the very same files
    as in the reported set: they are left out of the fit set."""
    from tagmatch.model.modelfile import set_calibration

    old = model.calibration
    model.calibration = replace(old, score="verified")  # fit the matcher's current score (older models too)
    fit_conditions = [c for c in conditions if c.excerpt_s is not None] or conditions
    seeds = [args.seed + 1000 * i for i in range(1, max(1, args.fit_unknown_sets) + 1)]
    queries = make_queries(corpus, fit_conditions, seeds[0], args.limit, args.whole_limit, args.cache)
    for seed in seeds[1:]:
        queries += make_queries(corpus, fit_conditions, seed, args.limit, args.whole_limit, args.cache,
                                kinds=("unknown",))
    records = run_queries(queries, store, model, by_name, "calibration set", searcher, args.query_hop)
    cal, facts = fit_calibration(*calibration_data(records))
    note = (f"tools/bench.py --calibrate, model {model.query_id}: seeds {', '.join(map(str, seeds))}, "
            f"{facts['n_queries']} queries; mid = margin reached by < {MAX_FALSE_MATCH:.1%} of "
            f"{facts['n_unknown']} unknown-song queries; width = free logistic fit of P(right song | margin)")
    set_calibration(model_path, cal, note)
    model.calibration = cal  # same params, same id: the store stays valid
    log(f"calibration: {old} -> {cal}, written to {model_path}")
    return {"old": {"mid": old.mid, "width": old.width}, "new": {"mid": cal.mid, "width": cal.width},
            "facts": facts, "note": note, "model_path": str(model_path), "seeds": seeds,
            "conditions": [c.name for c in fit_conditions], "summary": summarise(records), "records": records}


def print_calibration(calib: dict) -> None:
    f, new, old = calib["facts"], calib["new"], calib["old"]
    print(f"\ncalibration fitted on seeds {', '.join(map(str, calib['seeds']))} ({f['n_queries']} queries, "
          f"{f['n_unknown']} of them unknown-song): mid={new['mid']} width={new['width']} "
          f"(was mid={old['mid']} width={old['width']}), written to {calib['model_path']}")
    print(f"  fit set: top unknown margins {f['unknown_margin_top']}, 99.5th percentile "
          f"{f['unknown_margin_p99_5']:.4f}; {f['allowed_false_matches']} false match(es) tolerated")
    print(f"  at mid: false-match rate {f['false_match_rate_at_mid']:.2%}, known accuracy {f['known_acc_at_mid']:.1%}; "
          f"right-song margin median {f['right_margin_median']:.4f}; free logistic fit mid "
          f"{f['free_logistic']['mid']} width {f['free_logistic']['width']}; confidence 0.9 at margin "
          f"{f['margin_at_conf_0.9']:.4f} (known accuracy there {f['known_acc_at_conf_0.9']:.1%})")


def _model_path(arg: Path | None) -> Path:
    from tagmatch.model.modelfile import default_model_path

    return Path(arg or os.environ.get("TAGMATCH_MODEL") or default_model_path())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_ROOT, help="dev corpus root (default %(default)s)")
    ap.add_argument("--model", type=Path, default=None, help="model file (default: $TAGMATCH_MODEL or the shipped one)")
    ap.add_argument("--seed", type=int, default=1, help="query generation seed; --calibrate fits on seed+1000")
    ap.add_argument("--limit", type=int, default=None, help="only the first N known and N unknown tracks as queries")
    ap.add_argument("--whole-limit", type=int, default=WHOLE_LIMIT, help="tracks per side for whole_mp3_128k")
    ap.add_argument("--conditions", default=None, help="comma-separated subset of: " + ", ".join(CONDITION_NAMES))
    ap.add_argument("--calibrate", action="store_true", help="fit the calibration first and write it into the model")
    ap.add_argument("--fit-unknown-sets", type=int, default=5,
                    help="unknown-song query sets in the calibration fit (seeds +1000, +2000, ...)")
    ap.add_argument("--reuse-store", action="store_true", help="reuse the last reference store if still valid")
    ap.add_argument("--search", choices=("auto", "approximate", "exact"), default="auto",
                    help="search the queries as `tagmatch index --search` would have the scan search (auto: "
                         "exact up to tagmatch.store.ann.EXACT_MAX_VECTORS, as a user's store of this size)")
    ap.add_argument("--probe", default=None, metavar="NPROBE:REFINE",
                    help="approximate search: cells probed and re-rank factor (default: tagmatch.store.ann.default_probe)")
    ap.add_argument("--query-hop", type=float, default=None, metavar="S",
                    help="seconds between query windows (default: the model's own, as `tagmatch scan`)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="work folder (default %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default CACHE/results.json)")
    args = ap.parse_args(argv)

    if not corpus_available(args.corpus):
        print(f"bench: dev corpus not found at {args.corpus}; get it with ../shared/corpus/fetch-dev-corpus "
              "(or set TAGMATCH_DEV_CORPUS). Skipping.", flush=True)
        return 0
    global _T0
    _T0 = time.perf_counter()
    conditions = select_conditions(args.conditions)
    out_path = args.out or args.cache / "results.json"
    load = {"start": loadavg()}
    corpus = load_corpus(args.corpus)
    log(f"corpus {corpus.root}: {len(corpus.known)} known, {len(corpus.unknown)} unknown tracks, "
        f"{len(corpus.bench_noise)} bench noise recordings; load {load['start']}")

    from tagmatch.model.modelfile import load_model
    from tagmatch.threads import one_compute_thread

    one_compute_thread()  # as `tagmatch index` and `tagmatch scan` run it
    model_path = _model_path(args.model)
    model = load_model(model_path)
    compile_s = warm_up(model)
    log(f"model {model_path} (id {model.query_id}, {model.calibration}); encoder compiled in {compile_s:.1f} s")

    store, index_stats, by_name = build_store(corpus, model, args.cache, args.reuse_store)
    from tagmatch.store.ann import searcher_for, update_index

    search = update_index(store, args.search)  # after the index timing, as `tagmatch index` reports it apart
    searcher = searcher_for(store)
    if args.probe and searcher is not store:
        searcher.nprobe, searcher.refine = (int(v) for v in args.probe.split(":"))
        search += f"; probing {searcher.nprobe} cells, re-rank {searcher.refine}x"
    log(search)
    load["after index"] = loadavg()
    corpus = queryable(corpus, store, by_name)

    stages = {"index_s": round(time.perf_counter() - _T0, 1)}
    calib = None
    if args.calibrate:
        t0 = time.perf_counter()
        calib = calibrate(corpus, conditions, args, store, model, model_path, by_name, searcher)
        stages["calibration_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    queries = make_queries(corpus, conditions, args.seed, args.limit, args.whole_limit, args.cache)
    stages["queries_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    records = run_queries(queries, store, model, by_name, "bench", searcher, args.query_hop)
    stages["scan_s"] = round(time.perf_counter() - t0, 1)
    load["end"] = loadavg()

    summary = summarise(records)
    speed = speed_summary(records)
    curve = tradeoff(records, model.calibration)
    print(f"\n== tagmatch bench: model {model.query_id} ({model.calibration}), seed {args.seed}, "
          f"{len(queries)} queries ==")
    print_table(summary)
    print_speed(index_stats, speed, load, compile_s)
    print(search)
    print_tradeoff(curve)
    if calib:
        print_calibration(calib)
    runtime = time.perf_counter() - _T0
    stages["total_s"] = round(runtime, 1)
    result = {
        "config": {"corpus": str(corpus.root), "model": str(model_path), "model_id": model.model_id,
                   "query_id": model.query_id, "calibration": model.calibration.to_dict(),
                   "seed": args.seed, "limit": args.limit, "query_hop_s": args.query_hop, "whole_limit": args.whole_limit,
                   "conditions": {c.name: c.codec for c in conditions}, "gen_version": GEN_VERSION,
                   "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
        "summary": summary, "speed": {"index": index_stats, "query": speed, "encoder_compile_s": round(compile_s, 2),
                                      "search": search},
        "loadavg": load, "tradeoff": curve, "calibration": calib, "stages": stages,
        "records": records,
    }
    atomic_write_text(out_path, json.dumps(result, indent=1))
    log(f"bench done in {runtime:.0f} s ({', '.join(f'{k} {v:.0f}' for k, v in stages.items())}); "
        f"results in {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
