"""Tests for the deterministic fixture generator (fixtures/generate.py).

The generator is not a package module, so it is loaded from its file path.
One module-scoped generation (~15-25 s on a slow machine) is shared by all
tests; the determinism test generates a second copy.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
GEN_PATH = ROOT / "fixtures" / "generate.py"


def _load_generator():
    spec = importlib.util.spec_from_file_location("tagmatch_fixture_generator", GEN_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load_generator()

TAG_KEYS = ("title", "artist", "album", "tracknumber", "date", "genre")
ID3_FRAMES = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "tracknumber": "TRCK", "date": "TDRC",
              "genre": "TCON"}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixtures") / "fx"
    t0 = time.perf_counter()
    mf = gen.generate(out)
    elapsed = time.perf_counter() - t0
    assert mf == out / "manifest.json"
    return out, json.loads(mf.read_text(encoding="utf-8")), elapsed


def _entries(manifest):
    return manifest["library"] + manifest["messy"]


def _read_tags(path: Path, fmt: str) -> dict:
    f = mutagen.File(str(path))
    assert f is not None and f.tags is not None, f"no tags in {path}"
    if fmt in ("flac", "ogg"):
        return {k: f.tags[k][0] for k in TAG_KEYS if k in f.tags}
    # mp3 (ID3) and wav (ID3 chunk)
    return {k: str(f.tags[frame].text[0]) for k, frame in ID3_FRAMES.items() if frame in f.tags}


def _band_features(x: np.ndarray, sr: int) -> np.ndarray:
    """Log energy in 32 bands (100 Hz - 5 kHz), spectral shape only; ~46 ms hop at 11.025 kHz."""
    x = soxr.resample(x.mean(axis=1), sr, 11025)
    nfft, hop = 1024, 512
    n = (len(x) - nfft) // hop
    frames = x[np.arange(nfft)[None, :] + hop * np.arange(n)[:, None]] * np.hanning(nfft)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1 / 11025)
    edges = np.geomspace(100, 5000, 33)
    bands = np.stack([spec[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    feats = np.log(bands + 1e-9)
    return feats - feats.mean(axis=1, keepdims=True)


def _ncorr(a: np.ndarray, b: np.ndarray) -> float:
    a = (a - a.mean()) / (a.std() + 1e-12)
    b = (b - b.mean()) / (b.std() + 1e-12)
    return float((a * b).mean())


# --------------------------------------------------------------------------


def test_manifest_schema(fx):
    out, m, _ = fx
    assert m["generator_version"] == gen.GENERATOR_VERSION
    assert m["seed"] == gen.DEFAULT_SEED
    lib_keys = {"path", "title", "artist", "album", "tracknumber", "date", "genre", "format", "duration_s",
                "sample_rate", "channels", "bpm", "key", "beats_per_bar"}
    messy_keys = {"path", "expect", "reference", "offset_s", "duration_s", "transform", "format", "sample_rate",
                  "channels", "reason"}
    for e in m["library"]:
        assert set(e) == lib_keys
    for e in m["messy"]:
        assert set(e) == messy_keys
        assert e["expect"] in ("match", "unknown", "error")
        assert (e["reason"] is not None) == (e["expect"] == "error")
    for e in _entries(m):
        assert "\\" not in e["path"] and not e["path"].startswith("/")
        assert e["format"] == e["path"].rsplit(".", 1)[1].lower()
    lib_paths = {e["path"] for e in m["library"]}
    for e in m["messy"]:
        assert e["path"].startswith("messy/") and "/" not in e["path"][len("messy/"):]
        if e["expect"] == "match":
            assert e["reference"] in lib_paths
            assert e["offset_s"] is not None and e["duration_s"] is not None
        if e["expect"] == "unknown":
            assert e["reference"] is None


def test_library_layout(fx):
    out, m, _ = fx
    lib = m["library"]
    assert len(lib) == 14
    pat = re.compile(r"^library/([^/]+)/([^/]+)/(\d\d) ([^/]+)\.(flac|mp3|ogg|wav)$")
    albums = {}
    for e in lib:
        mo = pat.match(e["path"])
        assert mo, e["path"]
        artist, album, nn, title, ext = mo.groups()
        assert (artist, album, int(nn), title, ext) == (e["artist"], e["album"], int(e["tracknumber"]),
                                                        e["title"], e["format"])
        albums.setdefault(artist, set()).add(album)
        assert 40.0 <= e["duration_s"] <= 90.0
        assert (e["sample_rate"], e["channels"]) == (44100, 2)
        assert 70 <= e["bpm"] <= 160
    assert 3 <= len(albums) <= 4 and all(len(a) == 1 for a in albums.values())
    counts = {f: sum(e["format"] == f for e in lib) for f in ("flac", "mp3", "ogg", "wav")}
    assert all(3 <= c <= 4 for c in counts.values()), counts
    assert any(not e["path"].isascii() for e in lib)
    # musically distinct: no two pieces share (key, bpm)
    assert len({(e["key"], e["bpm"]) for e in lib}) == len(lib)
    assert len({e["bpm"] for e in lib}) == len(lib)


def test_messy_composition(fx):
    out, m, _ = fx
    messy = m["messy"]
    whole = [e for e in messy if e["expect"] == "match" and e["transform"].startswith("reencode")]
    assert len(whole) >= 2
    for e in whole:
        ref = next(x for x in m["library"] if x["path"] == e["reference"])
        assert e["format"] != ref["format"] and e["offset_s"] == 0.0
    excerpts = [e for e in messy if e["expect"] == "match" and e["transform"].startswith("excerpt")]
    assert len(excerpts) >= 4
    for e in excerpts:
        assert e["offset_s"] > 0 and 15.0 <= e["duration_s"] <= 30.0
    assert any("noise" in e["transform"] for e in excerpts)
    assert any("gain-15dB" in e["transform"] for e in excerpts)
    assert any("softclip" in e["transform"] for e in excerpts)
    assert len([e for e in messy if e["expect"] == "unknown"]) >= 2
    errors = {e["path"]: e["reason"] for e in messy if e["expect"] == "error"}
    assert errors == {"messy/empty.mp3": "empty", "messy/truncated.flac": "truncated",
                      "messy/notes.mp3": "not_audio", "messy/short.wav": "too_short",
                      "messy/silence.wav": "silent"}
    formats = {e["format"] for e in messy}
    assert {"mp3", "m4a", "ogg", "opus", "flac", "wav"} <= formats


def test_every_file_exists(fx):
    out, m, _ = fx
    for e in _entries(m):
        assert (out / e["path"]).is_file(), e["path"]
    listed = {e["path"] for e in _entries(m)}
    on_disk = {p.relative_to(out).as_posix() for sub in ("library", "messy") for p in (out / sub).rglob("*")
               if p.is_file()}
    assert on_disk == listed


def test_library_tags(fx):
    out, m, _ = fx
    for e in m["library"]:
        tags = _read_tags(out / e["path"], e["format"])
        assert tags == {k: e[k] for k in TAG_KEYS}, e["path"]
    mp3 = next(e for e in m["library"] if e["format"] == "mp3")
    assert mutagen.File(str(out / mp3["path"])).tags.version[:2] == (2, 4)


def test_messy_untagged(fx):
    out, m, _ = fx
    for e in m["messy"]:
        if e["reason"] in ("empty", "not_audio", "truncated"):
            continue
        f = mutagen.File(str(out / e["path"]))
        assert f is None or not f.tags, f"{e['path']} carries tags: {f.tags!r}"


def test_good_files_decode_at_listed_duration(fx):
    out, m, _ = fx
    for e in _entries(m):
        if e["duration_s"] is None:
            continue
        x, sr = gen.decode_audio(out / e["path"])  # soundfile; PyAV for m4a
        assert abs(len(x) / sr - e["duration_s"]) <= 0.2, e["path"]
        assert (sr, x.shape[1]) == (e["sample_rate"], e["channels"]), e["path"]
        assert np.isfinite(x).all()
        if e["path"].startswith("library/"):
            peak = np.abs(x).max()
            lo, hi = (0.88, 0.90) if e["format"] in ("wav", "flac") else (0.8, 1.0)
            assert lo <= peak <= hi, (e["path"], peak)


def test_m4a_and_opus_decode_with_pyav(fx):
    import av

    out, m, _ = fx
    for e in m["messy"]:
        if e["format"] in ("m4a", "opus"):
            with av.open(str(out / e["path"])) as c:
                n = sum(fr.samples for fr in c.decode(audio=0))
                assert abs(n / c.streams.audio[0].rate - e["duration_s"]) <= 0.2


def test_bad_files(fx):
    out, m, _ = fx
    messy = out / "messy"
    assert (messy / "empty.mp3").stat().st_size == 0
    text = (messy / "notes.mp3").read_bytes()
    assert text and all(c.isprintable() or c.isspace() for c in text.decode("utf-8"))
    trunc = (messy / "truncated.flac").read_bytes()
    assert trunc.startswith(b"fLaC") and 2048 <= len(trunc) <= 4096
    for name in ("empty.mp3", "notes.mp3", "truncated.flac"):
        with pytest.raises(Exception):
            gen.decode_audio(messy / name)
    x, sr = sf.read(str(messy / "short.wav"))
    assert abs(len(x) / sr - 2.0) < 0.01 and np.abs(x).max() > 0.05
    x, sr = sf.read(str(messy / "silence.wav"))
    assert abs(len(x) / sr - 20.0) < 0.01 and not x.any()


def test_excerpts_line_up_with_reference(fx):
    """offset_s is where the messy audio starts in the (decoded) reference, to the sample."""
    out, m, _ = fx
    for e in m["messy"]:
        if e["expect"] != "match":
            continue
        x, sr = gen.decode_audio(out / e["path"])
        r, rsr = gen.decode_audio(out / e["reference"])
        x, r = x.mean(axis=1), r.mean(axis=1)
        if sr != rsr:
            x = soxr.resample(x, sr, rsr)
        a = int(round(e["offset_s"] * rsr))
        n = min(len(x), len(r) - a, 10 * rsr)  # compare 10 s from the middle-ish
        s0 = min(rsr, len(x) - n)
        seg, q = r[a + s0:a + s0 + n], x[s0:s0 + n]
        best = max(range(-20, 21, 1), key=lambda lag: abs(np.dot(np.roll(seg, lag), q)))
        assert abs(best) <= 2, (e["path"], best)
        corr = np.dot(seg, q) / np.sqrt(np.dot(seg, seg) * np.dot(q, q))
        assert corr > 0.9, (e["path"], corr)


def test_pieces_and_sections_are_distinct(fx):
    """10 s at 20 s should not reappear elsewhere in the piece, nor in another piece."""
    out, m, _ = fx
    feats = {}
    for e in m["library"]:
        x, sr = gen.decode_audio(out / e["path"])
        feats[e["path"]] = _band_features(x, sr)
    fps = 11025 / 512
    a, n, guard = int(20 * fps), int(10 * fps), int(2 * fps)
    queries = {p: f[a:a + n] for p, f in feats.items()}
    for p, f in feats.items():
        q = queries[p]
        off_peak = [_ncorr(q, f[o:o + n]) for o in range(0, len(f) - n, 4) if abs(o - a) > guard]
        assert max(off_peak) < 0.93, (p, max(off_peak))
        for p2, q2 in queries.items():
            if p2 != p:
                assert _ncorr(q, q2) < 0.8, (p, p2)


def test_second_call_is_noop(fx):
    out, m, first = fx
    mf = out / "manifest.json"
    before = mf.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert gen.generate(out) == mf
    assert time.perf_counter() - t0 < 2.0
    assert mf.stat().st_mtime_ns == before


def test_incomplete_or_stale_output_is_detected(fx, tmp_path):
    out, m, _ = fx
    assert gen._up_to_date(out, gen.DEFAULT_SEED)
    # manifest present but files missing (e.g. copied around / partially deleted)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    assert not gen._up_to_date(tmp_path / "a", gen.DEFAULT_SEED)
    # other generator version / seed
    assert not gen._up_to_date(out, gen.DEFAULT_SEED + 1)
    # no manifest (interrupted run): a folder with files but no manifest is not up to date
    (tmp_path / "b" / "library").mkdir(parents=True)
    assert not gen._up_to_date(tmp_path / "b", gen.DEFAULT_SEED)


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(RuntimeError):
        gen.generate(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_deterministic_across_folders(fx, tmp_path_factory):
    out, m, _ = fx
    out2 = tmp_path_factory.mktemp("fixtures2") / "fx"
    m2 = json.loads(gen.generate(out2).read_text(encoding="utf-8"))
    assert m2 == m
    names = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*")  # noqa: E731
                                if p.is_file() and p.name != ".lock")
    assert names(out2) == names(out)
    wav = next(e["path"] for e in m["library"] if e["format"] == "wav")
    flac = next(e["path"] for e in m["messy"] if e["format"] == "flac" and e["expect"] == "match")
    for rel in (wav, flac):
        a, sra = sf.read(str(out / rel), dtype="float32")
        b, srb = sf.read(str(out2 / rel), dtype="float32")
        assert sra == srb and a.shape == b.shape and np.allclose(a, b), rel
