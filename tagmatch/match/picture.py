"""Drawing a match's evidence (tagmatch.match.evidence.Picture): as an RGB array for the terminal
(the Review screen shows it with textual-image), and as a PNG with axes and labels for scripts and
bug reports (`tagmatch explain`, matplotlib: docs/design.md says why).

Both draw the same three rows on one time axis: the query's log-mel (low frequencies at the
bottom), the reference's over the aligned span, and a strip of the per-window similarity (bars
above the window's background in green, below it in grey).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagmatch.match.evidence import Picture

COLORMAP = "magma"


def _levels(mel: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Log-mel in dB -> 0..1 over [lo, hi]; NaN (no reference there) stays NaN."""
    return np.clip((mel - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _range(pic: Picture) -> tuple[float, float]:
    """One level range for both spectrograms (the 5th to the 99.5th percentile of their values
    together), so they compare and quiet passages still show."""
    both = np.concatenate([m[np.isfinite(m)] for m in (pic.query_mel, pic.reference_mel) if m is not None])
    if not len(both):
        return 0.0, 1.0
    return float(np.percentile(both, 5)), float(np.percentile(both, 99.5))


def rgb(pic: Picture, width: int, height: int) -> np.ndarray:
    """The picture as [shape=(height, width, 3)] uint8: query and reference spectrograms stacked
    (each 2/5 of the height), the similarity strip below (1/5). Columns are time; a reference that
    could not be read is left dark."""
    import matplotlib

    cmap = matplotlib.colormaps[COLORMAP]
    lo, hi = _range(pic)
    spec_h = max(1, (height - 2) * 2 // 5)
    strip_h = max(1, height - 2 - 2 * spec_h)
    rows = []
    gap = np.zeros((1, width, 3), np.uint8)  # a thin dark line between the rows
    for mel in (pic.query_mel, pic.reference_mel):
        if mel is None:
            rows += [np.full((spec_h, width, 3), 24, np.uint8), gap]
            continue
        img = _resample(_levels(mel, lo, hi), width, spec_h)  # (spec_h, width), frequency upwards
        colored = (cmap(np.nan_to_num(img, nan=0.0))[..., :3] * 255).astype(np.uint8)
        colored[np.isnan(img)] = 24
        rows += [colored, gap]
    rows.append(_strip(pic, width, strip_h))
    return np.concatenate(rows, axis=0)


def _resample(levels: np.ndarray, width: int, height: int) -> np.ndarray:
    """[frames, mels] -> [height, width] by nearest neighbour, the lowest band at the bottom."""
    frames, mels = levels.shape
    cols = np.minimum((np.arange(width) * frames) // max(width, 1), frames - 1)
    bands = np.minimum((np.arange(height)[::-1] * mels) // max(height, 1), mels - 1)
    return levels[cols][:, bands].T


def _strip(pic: Picture, width: int, height: int) -> np.ndarray:
    """Per-window similarity as bars: green where it rises above the window's background."""
    out = np.full((height, width, 3), 16, np.uint8)
    if not len(pic.window_s):
        return out
    span = len(pic.query_mel) * pic.frame_s
    cols = np.clip(((pic.window_s - pic.start_s) / span * width).astype(int), 0, width - 1)
    for c, s, b in zip(cols, pic.similarity, pic.background):
        bar = int(round(np.clip(s, 0.0, 1.0) * height))
        color = (80, 200, 120) if s > b else (110, 110, 110)
        out[height - bar :, c] = color
        mark = height - 1 - int(round(np.clip(b, 0.0, 1.0) * (height - 1)))
        out[mark, c] = (230, 200, 60)  # the background level
    return out


def save_png(pic: Picture, out: Path | str, title: str = "") -> tuple[int, int]:
    """Write the picture with axes and labels; returns the PNG's (width, height) in pixels."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    lo, hi = _range(pic)
    t0, t1 = pic.start_s, pic.start_s + len(pic.query_mel) * pic.frame_s
    fig, (aq, ar, asim) = plt.subplots(3, 1, figsize=(12, 8), dpi=100, sharex=True,
                                       gridspec_kw={"height_ratios": [2, 2, 1]})
    try:
        for ax, mel, name in ((aq, pic.query_mel, "query"), (ar, pic.reference_mel, "reference")):
            if mel is None:
                ax.text(0.5, 0.5, pic.note or "not readable", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(mel.T, origin="lower", aspect="auto", cmap=COLORMAP, vmin=lo, vmax=hi,
                          extent=(t0, t1, 0, mel.shape[1]), interpolation="nearest")
            ax.set_ylabel(f"{name}\nmel band")
        ar.set_title(f"reference at query time {pic.offset_s:+.1f} s", fontsize=9, loc="left")
        asim.bar(pic.window_s, pic.similarity, width=0.15, align="edge",
                 color=["#50c878" if s > b else "#8a8a8a" for s, b in zip(pic.similarity, pic.background)])
        asim.plot(pic.window_s, pic.background, color="#e6c83c", lw=1, label="background (k-th best in the store)")
        asim.set_ylim(0, 1)
        asim.set_ylabel("similarity")
        asim.set_xlabel("query time (s)")
        asim.legend(loc="upper right", fontsize=8)
        fig.suptitle(title or "tagmatch evidence", fontsize=11)
        if pic.note:
            fig.text(0.01, 0.005, pic.note, fontsize=8)
        fig.savefig(out)
        w, h = fig.canvas.get_width_height()
    finally:
        plt.close(fig)
    return w, h
