"""Decoding: any audio file -> mono float32 at one fixed sample rate.

libsndfile (via soundfile) is the fast path for WAV, AIFF and MP3; PyAV (which bundles FFmpeg)
decodes everything else (Ogg Vorbis, Opus, FLAC: 1.3-1.8x faster than libsndfile here, M4A/AAC
and more), and whatever libsndfile refuses. Neither needs a system package. Every failure
becomes an `AudioReadError` with a one-line reason.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from tagmatch.errors import AudioReadError

AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".wave", ".aif", ".aiff", ".aifc",
     ".m4a", ".mp4", ".aac", ".alac", ".wma", ".wv", ".ape", ".mka", ".webm"}
)
# libsndfile first for these (WAV 5x, MP3 1.3x faster than through PyAV); PyAV for the rest.
_SOUNDFILE_FIRST = frozenset({".wav", ".wave", ".aif", ".aiff", ".aifc", ".mp3"})
_BLOCK_SAMPLES = 1 << 18  # decoded in blocks of this many samples (5.5 s at 48 kHz), each mixed to mono


def is_audio_path(path: Path) -> bool:
    """True for files whose extension says audio (bad content is found when decoding)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def find_audio_files(root: Path, unreadable: list[tuple[str, str]] | None = None) -> list[Path]:
    """All audio files under `root` (or `root` itself), sorted, hidden files skipped. A folder
    that cannot be listed is skipped; with `unreadable`, (folder, reason) is appended to it, so
    that a caller can tell "no files there" from "could not look"."""
    root = Path(root)
    if root.is_file():
        return [root]

    def skipped(exc: OSError) -> None:
        if unreadable is not None:
            unreadable.append((str(exc.filename or root), exc.strerror or str(exc)))

    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=skipped):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not name.startswith(".") and is_audio_path(p):
                found.append(p)
    return found


def _to_mono(x: np.ndarray) -> np.ndarray:
    if x.ndim == 1:
        return x
    if x.shape[1] == 2:  # ~8x faster than mean(axis=1) for the common case
        return (x[:, 0] + x[:, 1]) * np.float32(0.5)
    return x.mean(axis=1, dtype=np.float32)


def _blocks_soundfile(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """libsndfile decode, `_BLOCK_SAMPLES` frames at a time. Integer PCM is read as int16 (faster
    than float32; 16 bits are plenty for a fingerprint); float files and MP3 as float32. (Lossy
    codecs must not go through int16: libsndfile wraps their peaks above full scale around to the
    opposite sign.)"""
    with sf.SoundFile(str(path)) as f:
        as_int = f.subtype not in ("FLOAT", "DOUBLE") and f.format != "MP3"
        while True:
            x = f.read(_BLOCK_SAMPLES, dtype="int16" if as_int else "float32", always_2d=False)
            if len(x) == 0:
                return
            if as_int:
                yield _to_mono(x.astype(np.float32)) * np.float32(1 / 32768), f.samplerate
            else:
                yield _to_mono(x), f.samplerate


@contextmanager
def _ffmpeg_errors(path: Path) -> Iterator[None]:
    """PyAV raises many types (FFmpegError, ValueError...): each becomes one AudioReadError line."""
    try:
        yield
    except AudioReadError:
        raise
    except Exception as exc:
        raise AudioReadError(path, f"cannot decode (corrupt or not audio): {_one_line(exc)}") from exc


def _blocks_pyav(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """FFmpeg decode at the stream's own rate (soxr resamples after: FFmpeg's resampler costs
    more than the decode). Frames are small (a few hundred samples), so converting each to numpy
    cost as much as decoding it: they are queued in an `av.AudioFifo` (C) and mixed to mono
    `_BLOCK_SAMPLES` at a time instead."""
    import av  # imported lazily: ~0.1 s, and only some formats need it

    with _ffmpeg_errors(path), av.open(str(path)) as container:
        stream = _audio_stream(container, path)
        fifo, sr = av.AudioFifo(), None
        for frame in container.decode(stream):
            if sr is None:
                sr = frame.sample_rate
            elif frame.sample_rate != sr:
                raise AudioReadError(path, "sample rate changes mid-stream (not supported)")
            frame.pts = None  # the fifo would otherwise insist on gapless timestamps
            fifo.write(frame)
            if fifo.samples >= _BLOCK_SAMPLES:
                yield _frame_mono(fifo.read()), sr
        if fifo.samples:
            yield _frame_mono(fifo.read()), sr


def _audio_stream(container, path: Path):
    if not container.streams.audio:
        raise AudioReadError(path, "no audio stream")
    return container.streams.audio[0]


def _frame_mono(frame) -> np.ndarray:
    """One PyAV frame -> mono float32 in [-1, 1], whatever its sample format and layout."""
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: (1, samples * channels), interleaved
        a = a.reshape(-1, channels).T
    if a.dtype == np.uint8:  # unsigned 8-bit: silence is 128
        a = (a.astype(np.float32) - np.float32(128)) * np.float32(1 / 128)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) * np.float32(1.0 / (np.iinfo(a.dtype).max + 1.0))
    a = a.astype(np.float32, copy=False)
    if channels == 1:
        return a[0]
    if channels == 2:  # rows: one channel each, contiguous when planar (the usual decoders' output)
        return (a[0] + a[1]) * np.float32(0.5)
    return _to_mono(a.T)


def _one_line(exc: BaseException) -> str:
    """FFmpeg's message without its errno and file name: 'Invalid data found when processing input'."""
    text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text).split(": '")[0]


def _looks_like_mp3(path: Path) -> bool:
    """An ID3 header or an MPEG frame sync near the start. libmpg123 (inside libsndfile) prints
    resync notes to stderr for non-MP3 data, so such files go straight to PyAV's clean error."""
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as exc:
        raise AudioReadError(path, f"cannot read: {exc.strerror or exc}") from exc
    if head.startswith(b"ID3"):
        return True
    return any(head[i] == 0xFF and head[i + 1] & 0xE0 == 0xE0 for i in range(len(head) - 1))


def _check_readable(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioReadError(path, f"cannot read: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise AudioReadError(path, "not a regular file")
    if size == 0:
        raise AudioReadError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioReadError(path, "permission denied")


def _native_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """Mono float32 blocks at the file's own rate, from libsndfile when it takes the file, else
    from PyAV. Should libsndfile give up part-way, FFmpeg (which resyncs past damage) goes on
    from the same sample, so a file one of them can read is never lost to the other's error."""
    done = 0
    suffix = path.suffix.lower()
    if suffix in _SOUNDFILE_FIRST and (suffix != ".mp3" or _looks_like_mp3(path)):
        try:
            for y, sr in _blocks_soundfile(path):
                yield y, sr
                done += len(y)
            return
        except Exception:  # libsndfile refused it, or stopped: FFmpeg may still know the format
            pass
    for y, sr in _blocks_pyav(path):
        if done >= len(y):  # already given by libsndfile
            done -= len(y)
            continue
        yield y[done:], sr
        done = 0


def stream_audio(path: Path | str, sr: int) -> Iterator[np.ndarray]:
    """Decode `path` progressively: mono float32 blocks at `sr` Hz (a few seconds each), so a
    caller that has heard enough (a scan already sure of its answer) stops decoding there.

    The blocks joined are exactly what one-shot decoding and resampling give (soxr's stream).
    Raises AudioReadError for missing, empty, unreadable or undecodable files, and for files that
    hold no samples; a file damaged part-way raises when the damage is reached.
    """
    path = Path(path)
    _check_readable(path)
    resampler, native_sr, n = None, None, 0
    for y, block_sr in _native_blocks(path):
        if native_sr is None:
            native_sr = block_sr
            if native_sr != sr:
                resampler = soxr.ResampleStream(native_sr, sr, 1, dtype="float32", quality="HQ")
        elif block_sr != native_sr:  # FFmpeg took over from libsndfile and reads it otherwise
            raise AudioReadError(path, "sample rate changes mid-stream (not supported)")
        if not np.isfinite(y).all():  # corrupt frames can decode to NaN/inf
            y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        if resampler is not None:
            y = resampler.resample_chunk(np.ascontiguousarray(y, dtype=np.float32), last=False)
        if len(y):
            n += len(y)
            yield y
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            n += len(tail)
            yield tail
    if n == 0:
        raise AudioReadError(path, "no audio samples (truncated or not audio)")


def load_audio(path: Path | str, sr: int) -> np.ndarray:
    """Decode all of `path` to mono float32 at `sr` Hz.

    Returns y : np.ndarray [shape=(n,)]. Raises AudioReadError for missing, empty,
    unreadable or undecodable files.
    """
    blocks = list(stream_audio(path, sr))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def read_segment(path: Path | str, sr: int, start_s: float, duration_s: float) -> np.ndarray:
    """Mono float32 at `sr` Hz of `duration_s` seconds of `path` from `start_s` on (shorter at the
    end of the file), seeking instead of decoding what comes before. For the matcher's check of a
    candidate against its reference file (tagmatch.match.verify); accurate to a few milliseconds, which
    that check's lag search absorbs. Raises AudioReadError like `stream_audio`."""
    path = Path(path)
    _check_readable(path)
    start_s = max(0.0, start_s)
    suffix = path.suffix.lower()
    y = native_sr = None
    # libsndfile seeks to the sample in every format it reads; FFmpeg's Ogg (Vorbis, Opus)
    # timestamps after a seek can be a page (up to 0.6 s) off, so it only takes the rest (M4A...).
    if suffix != ".mp3" or _looks_like_mp3(path):
        try:
            with sf.SoundFile(str(path)) as f:
                native_sr = f.samplerate
                f.seek(min(int(start_s * native_sr), f.frames))
                y = _to_mono(f.read(int(duration_s * native_sr) + 1, dtype="float32", always_2d=False))
        except Exception:  # libsndfile refused it: FFmpeg may know the format
            y = None
    if y is None:
        y, native_sr = _segment_pyav(path, start_s, duration_s)
    y = np.nan_to_num(np.ascontiguousarray(y, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if native_sr != sr and len(y):
        y = soxr.resample(y, native_sr, sr, quality="HQ").astype(np.float32, copy=False)
    return y


def _segment_pyav(path: Path, start_s: float, duration_s: float) -> tuple[np.ndarray, int]:
    """`read_segment` through FFmpeg: seek to a frame at or before `start_s`, decode from there and
    keep the samples from `start_s` on, using each frame's timestamp."""
    import av

    parts, sr, got = [], None, 0
    with _ffmpeg_errors(path), av.open(str(path)) as container:
        stream = _audio_stream(container, path)
        if start_s > 0:
            container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            a = _frame_mono(frame)
            if sr is None:  # the first frame may start before start_s (or have no timestamp)
                sr = frame.sample_rate
                at = float(frame.pts * stream.time_base) if frame.pts is not None else 0.0
                a = a[max(0, int(round((start_s - at) * sr))) :]
            parts.append(a)
            got += len(a)
            if got >= duration_s * sr:
                break
    if sr is None:
        raise AudioReadError(path, "no audio samples (truncated or not audio)")
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return y[: int(duration_s * sr) + 1], sr
