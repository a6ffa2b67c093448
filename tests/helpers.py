"""Plain helpers and constants shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from tagmatch.organize.scandoc import ScanDoc

JSON_TAGS = ("title", "artist", "album", "tracknumber", "date", "genre")


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (names and bytes: what undo must restore)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def tree_bytes(root: Path) -> dict[bytes, str]:
    """`tree` with names as bytes, so a name that is not UTF-8 compares as itself."""
    out = {}
    for dirpath, _, names in os.walk(os.fsencode(root)):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, os.fsencode(root))] = hashlib.sha256(f.read()).hexdigest()
    return out


def candidate(fixture_dir: Path, ref: dict, confidence: float) -> dict:
    return {"path": str((fixture_dir / ref["path"]).absolute()), "tags": {k: ref.get(k) for k in JSON_TAGS},
            "confidence": confidence, "offset_s": 12.5, "fragments_agreeing": 3, "fragments_total": 4}


def manifest_scan(fixture_dir: Path, manifest: dict, messy: Path) -> ScanDoc:
    """What `tagmatch scan --json` says about `messy`, per the manifest (fixed confidences)."""
    lib = {e["path"]: e for e in manifest["library"]}
    others = manifest["library"][:2]
    files = []
    for n, e in enumerate(manifest["messy"]):
        path = str((messy / e["path"].split("/", 1)[1]).absolute())
        alts = [candidate(fixture_dir, o, 0.05) for o in others if o["path"] != e.get("reference")]
        if e["expect"] == "match":
            conf = 0.97 if n % 3 else 0.72  # some below the `A` threshold (0.9)
            files.append({"path": path, "status": "match", "error": None,
                          "match": candidate(fixture_dir, lib[e["reference"]], conf), "alternatives": alts})
        elif e["expect"] == "unknown":
            files.append({"path": path, "status": "unknown", "error": None,
                          "match": candidate(fixture_dir, others[0], 0.2), "alternatives": []})
        else:
            files.append({"path": path, "status": "error", "error": e.get("reason") or "bad file",
                          "match": None, "alternatives": []})
    files.sort(key=lambda f: Path(f["path"]).name)
    return ScanDoc("/nowhere/store.joblib", files)


def rows(app) -> list[str]:
    """File names in the table's order."""
    screen = app.screen
    table = screen.query_one("#files")
    return [Path(screen.files[int(k.value)]["path"]).name for k in table.rows]


async def goto(pilot, name: str) -> int:
    """Put the cursor on a file with the keys (g, then j until there); returns its index."""
    await pilot.press("g")
    names = rows(pilot.app)
    for _ in range(names.index(name)):
        await pilot.press("j")
    screen = pilot.app.screen
    i = screen._current()
    assert Path(screen.files[i]["path"]).name == name
    return i


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def messages(app) -> list[str]:
    return [n.message for n in app._notifications]


# ---- the duplicates folder (conftest.dupes_dir) --------------------------------------------------
LIB = "library/Marguerite Vale/Café Nocturne/"
P0 = LIB + "01 Café Nocturne.flac"
P1 = LIB + "02 Rue des Lilas.mp3"
P2 = LIB + "03 Blue Hour Waltz.ogg"
P6 = "library/The Ærøskøbing Ferry/Harbour Lights/03 Lanterns at Low Tide.ogg"
P8 = "library/Kosmo Dial/Signal Garden/01 Neon Orchard.flac"
P9 = "library/Kosmo Dial/Signal Garden/02 Übertragung.mp3"
MESSY = ["track07.mp3", "-leading dash.wav", "Ünïcödé café.flac", "xyz.ogg", "clip_final_FINAL.m4a", "Track 14.flac"]
SR = 44100

# Expected duplicate groups, keeper first.
GROUPS = [
    [P8, "messy/track07.mp3"],  # MP3 re-encode of a FLAC: the FLAC is kept
    [P9, "messy/-leading dash.wav"],  # a lossless 18 s excerpt does not displace the whole MP3
    [P6, "messy/Ünïcödé café.flac"],  # a 25 s excerpt, 15 dB quieter
    ["made/quiet copy.flac", P2],  # the same piece 10 dB quieter, as FLAC: lossless wins
]


def untrained_model(kind: str = "window", channels: tuple[int, ...] = (4, 8, 8, 8, 8), seed: int = 0):
    """A small LoadedModel of random weights (no file), of either kind."""
    from tagmatch.audio.features import FeatureConfig
    from tagmatch.model.encoder import ModelConfig
    from tagmatch.model import modelfile

    mc = ModelConfig(channels=channels, hidden=32, dim=16, kind=kind)
    fc = FeatureConfig(ref_hop_frames=mc.stride if kind == "shared" else FeatureConfig.ref_hop_frames)
    return modelfile.untrained_model(fc, mc, seed)


FORMATS = ("mp3", "flac", "ogg", "opus", "m4a", "wav", "aiff")  # the formats tags are written to


def make_tone(path: Path, seconds: float = 3.0) -> Path:
    """A short tone in the format `path`'s extension names (soundfile, PyAV for M4A)."""
    fmt = path.suffix.lstrip(".")
    sr = 48000 if fmt == "opus" else 44100
    t = np.arange(int(sr * seconds)) / sr
    y = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if fmt == "m4a":
        import av

        with av.open(str(path), "w", format="ipod") as c:
            st = c.add_stream("aac", rate=sr, layout="mono")
            frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
            frame.sample_rate = sr
            for p in [*st.encode(frame), *st.encode(None)]:
                c.mux(p)
    else:
        kw = {"mp3": dict(format="MP3", subtype="MPEG_LAYER_III"), "ogg": dict(format="OGG", subtype="VORBIS"),
              "opus": dict(format="OGG", subtype="OPUS"), "aiff": dict(format="AIFF")}.get(fmt, {})
        sf.write(str(path), y, sr, **kw)
    return path


def bench_record(condition, kind, group, pred_group, status, margin, confidence=None):
    """One per-query record as the bench writes it (tools.bench, tagmatch.train.calibrate)."""
    return {"condition": condition, "kind": kind, "group": group, "pred_group": pred_group,
            "correct": pred_group is not None and pred_group == group, "status": status,
            "margin": margin, "confidence": confidence if confidence is not None else (None if margin is None else 0.9 if status == "match" else 0.1),
            "wall_ms": 100.0, "cpu_ms": 150.0, "duration_s": 10.0}


def music_like(seconds: float = 4.0, sr: int = 44100, amp: float = 0.1) -> np.ndarray:
    """A few harmonics with a slow tremolo: music-like enough for level and spectrum tests."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((440.0, 660.0, 990.0, 1500.0), 1))
    return (amp * y * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


# ---- tagmatch serve (tests/bridges) -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(*args: str, env: dict):
    """`tagmatch serve` running until the block ends: (port, the server process)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tagmatch", "serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    assert page.status == 200 and b"textual-terminal" in page.read()
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() - t0 < 60, "the server did not start"
                time.sleep(0.2)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
