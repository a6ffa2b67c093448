"""What the store's checksums cost to open: a store of N tracks' worth of vectors (random int8,
the layout `make scale` uses: 1,008 vectors a track, shards of ~2M vectors), saved with
`Store.save`, then opened with `Store.load` as a scan does (verify="quick": the track table and
each shard's track numbers and times) and as `tagmatch index` / `tagmatch check` do ("full": also
the vectors). Warm page cache; with --cold, also after dropping the page cache (needs root).

    python -m tools.store_open --tracks 100000 [--dir DIR] [--cold]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tagmatch.audio.features import FeatureConfig
from tagmatch.store.folder import disk_bytes
from tagmatch.store.shards import SHARD_VECTORS, Shard, Store, TrackInfo

PER_TRACK = 1008  # 4.2 min at a reference hop of 0.25 s, as in docs/benchmarks.md "Scale"
DIM = 60


def build(folder: Path, n_tracks: int) -> None:
    rng = np.random.default_rng(0)
    per_shard = SHARD_VECTORS // PER_TRACK
    tracks, shards = [], []
    for first in range(0, n_tracks, per_shard):
        n = min(per_shard, n_tracks - first)
        vectors = rng.integers(-127, 128, size=(n * PER_TRACK, DIM), dtype=np.int8)
        shards.append(Shard(vectors, np.repeat(np.arange(n, dtype=np.int32), PER_TRACK),
                            np.tile(np.arange(PER_TRACK, dtype=np.float32) * 0.25, n), n))
        tracks += [TrackInfo(f"/music/artist {i // 12}/album {i // 12}/{i % 12:02d} track {i}.flac",
                             {"title": [f"track {i}"], "artist": [f"artist {i // 12}"]}, 252.0, 40_000_000,
                             1_700_000_000_000_000_000) for i in range(first, first + n)]
    Store(FeatureConfig(), "synthetic", DIM, tracks=tracks, shards=shards).save(folder)


def timed(what: str, f) -> float:
    t = time.perf_counter()
    f()
    dt = time.perf_counter() - t
    print(f"{what}: {dt:.2f} s", flush=True)
    return dt


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, default=100_000)
    p.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "tagmatch" / "store-open")
    p.add_argument("--cold", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the store for another run")
    args = p.parse_args(argv)
    folder = args.dir / f"{args.tracks}"
    if not (folder / "manifest.json").exists():
        timed(f"build + save {args.tracks} tracks", lambda: build(folder, args.tracks))
    store = Store.load(folder)
    print(f"{len(store.tracks)} tracks, {store.n_vectors:,} vectors, {len(store.shards)} shards, "
          f"{disk_bytes(folder) / 1e6:,.0f} MB on disk", flush=True)
    from tagmatch.store.folder import crc32

    timed("their CRC-32 alone: track numbers + window times", lambda: [crc32(a) for s in store.shards
                                                                   for a in (s.track, s.time)])
    timed("their CRC-32 alone: vectors", lambda: [crc32(s.vectors) for s in store.shards])
    for verify in ("quick", "full"):
        for n in range(3):
            timed(f"Store.load verify={verify} (warm, run {n + 1})", lambda: Store.load(folder, verify=verify))
    if args.cold:
        for verify in ("quick", "full"):
            if not drop_caches():
                print("cannot drop the page cache (not root?): no cold figures", file=sys.stderr)
                break
            timed(f"Store.load verify={verify} (cold)", lambda: Store.load(folder, verify=verify))
    if not args.keep:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
