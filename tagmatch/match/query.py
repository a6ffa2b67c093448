"""Reading a query file fragment by fragment (10 s each, a short tail joining the one before), and
the start frames of its audible windows, decoding only as far as matching goes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator
from dataclasses import dataclass

import numpy as np

from tagmatch.audio.decode import stream_audio
from tagmatch.audio.features import log_mel, window_rms, window_starts, SILENT_RMS
from tagmatch.errors import TagmatchError
from tagmatch.match.config import MatchConfig
from tagmatch.model.modelfile import LoadedModel


def frame_grid(model: LoadedModel, cfg: MatchConfig) -> tuple[int, int, int]:
    """(query hop, fragment length, shortest fragment) in log-mel frames."""
    def frames(seconds: float) -> int:
        return int(round(seconds / model.feature_config.frame_seconds))

    hop = model.default_query_hop_frames() if cfg.query_hop_s is None else max(1, frames(cfg.query_hop_s))
    return hop, frames(cfg.fragment_s), frames(cfg.min_fragment_s)


def fragment_bounds(n_frames: int, frames_per_fragment: int, min_frames: int) -> list[tuple[int, int]]:
    """Split [0, n_frames) into fragments; a short tail joins the fragment before it."""
    bounds = [(a, min(a + frames_per_fragment, n_frames)) for a in range(0, n_frames, frames_per_fragment)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_frames:
        bounds[-2] = (bounds[-2][0], bounds[-1][1])
        bounds.pop()
    return bounds


def open_query(path: Path, model: LoadedModel, cfg: MatchConfig) -> "QueryAudio":
    """Start reading a query file: its first fragment is decoded and cut (raises for bad input)."""
    query = QueryAudio(path, model, cfg)
    try:
        query.prepare()
    except BaseException:
        query.close()
        raise
    return query


@dataclass
class QueryPiece:
    """A fragment of a query as it is read: the start frames of its audible windows and the
    log-mel under them (and the model's context after them, where the audio has it)."""

    start_s: float
    mel: np.ndarray  # [shape=(frames, n_mels)], from frame `mel_at` of the file
    mel_at: int
    starts: np.ndarray  # [shape=(w,)], frames from the start of the file
    last: bool  # no window can start after this fragment
    joins_previous: bool = False  # a tail under 3 s: part of the fragment before (fragment_bounds)
    previous_s: float = 0.0  # where that fragment starts


class QueryAudio:
    """A query file read fragment by fragment, decoding only as far as matching goes.

    A fragment is cut as soon as the audio under its windows is decoded (10 s, one window and the
    model's context after it); a tail under 3 s at the end comes as a piece that joins the
    fragment before it, so the fragments are those of `fragment_bounds` and the windows those of
    `query_frames` over the whole decoded file.
    """

    def __init__(self, path: Path, model: LoadedModel, cfg: MatchConfig):
        fc = model.feature_config
        self.path, self.fc, self.cfg = Path(path), fc, cfg
        self._context = model.context_frames
        self._blocks = stream_audio(self.path, fc.sample_rate)
        self._buf = np.zeros(0, np.float32)  # decoded audio from sample self._buf_at on
        self._buf_at = 0
        self._ended = False
        self._next_frame = 0  # where the next fragment starts
        self._first: QueryPiece | None = None  # cut by prepare()
        self._hop, self._per_frag, self._min_frag = frame_grid(model, cfg)
        self.read_until_s = 0.0  # audio matched so far: the end of the last fragment given out

    def prepare(self) -> None:
        """Decode and cut the first fragment (a prefetching thread calls this)."""
        if self._first is None:
            self._first = self._cut()

    def fragments(self) -> Iterator[QueryPiece]:
        """The pieces in order; one with no audible window comes with none. Raises
        TagmatchError when the file is too short, AudioReadError when it cannot be decoded."""
        self.prepare()
        piece, self._first = self._first, None
        while piece is not None:
            yield piece
            piece = None if piece.last else self._cut()

    def close(self) -> None:
        self._blocks.close()

    def _n_frames(self) -> int:
        n = self._buf_at + len(self._buf)
        return 0 if n < self.fc.n_fft else 1 + (n - self.fc.n_fft) // self.fc.hop_length

    def _decode_to(self, frames: int) -> None:
        parts = [self._buf]
        n = self._buf_at + len(self._buf)
        need = (frames - 1) * self.fc.hop_length + self.fc.n_fft
        while not self._ended and n < need:
            y = next(self._blocks, None)
            if y is None:
                self._ended = True
            else:
                parts.append(y)
                n += len(y)
        self._buf = np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _cut(self) -> QueryPiece:
        fc, a = self.fc, self._next_frame
        # the windows starting before a + per_frag and their context, and one frame more: is there
        # audio after them?
        self._decode_to(a + self._per_frag + fc.window_frames + self._context)
        n = self._n_frames()
        if a == 0 and self._ended:
            duration = (self._buf_at + len(self._buf)) / fc.sample_rate
            if duration < self.cfg.min_duration_s:
                raise TagmatchError(f"too short: {duration:.1f} s (at least {self.cfg.min_duration_s:g} s needed)")
        b = min(a + self._per_frag, n)
        last = self._ended and n - fc.window_frames + 1 <= b  # no window can start after this fragment
        joins = a > 0 and self._ended and n - a < self._min_frag
        first_start = -(-a // self._hop) * self._hop
        starts = np.arange(first_start, min(b, n - fc.window_frames + 1), self._hop)
        mel = np.zeros((0, fc.n_mels), np.float32)
        if len(starts):
            s0 = a * fc.hop_length - self._buf_at
            s1 = (starts[-1] + fc.window_frames + self._context - 1) * fc.hop_length + fc.n_fft - self._buf_at
            y = self._buf[s0:s1]
            loud = window_rms(y, starts - a, fc) > SILENT_RMS
            starts = starts[loud]
            if len(starts):
                mel = log_mel(y, fc)
        drop = b * fc.hop_length - self._buf_at  # the next fragment starts at frame b
        if drop > 0:
            self._buf, self._buf_at = self._buf[drop:].copy(), self._buf_at + drop
        previous_s = max(0, a - self._per_frag) * fc.frame_seconds
        self._next_frame = b
        self.read_until_s = b * fc.frame_seconds
        return QueryPiece(a * fc.frame_seconds, mel, a, starts, last, joins, previous_s)


def query_frames(y: np.ndarray, model: LoadedModel, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray]:
    """A whole decoded query's log-mel and the start frames of its audible windows, every query
    hop (`LoadedModel.embed_query` embeds them; `len(S)` is what `match_vectors` wants as n_frames).

    Returns (S [shape=(frames, n_mels)], starts). Raises TagmatchError when silent.
    """
    fc = model.feature_config
    S = log_mel(y, fc)
    hop = frame_grid(model, cfg)[0]
    starts = window_starts(len(S), hop, fc)
    loud = window_rms(y, starts, fc) > SILENT_RMS
    if not loud.any():
        raise TagmatchError("silent: no audible audio")
    return S, starts[loud]
