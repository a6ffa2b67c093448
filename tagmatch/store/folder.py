"""The store on disk: a folder of joblib files named by one manifest, with checksums.

    manifest.json          format, version, model id, feature config, dim, the folders indexed,
                           the file names below, and a CRC-32 of the track table's file and of
                           each shard's three arrays
    tracks-<id>.joblib     the track table: path, tags, duration, size, mtime of every track
    shard-<id>.joblib      whole tracks' vectors (int8), shard-local track numbers, window times

Shards are written once and never change: a save writes only new shards (new tracks) and the
shards that lost a track, then the track table, then swaps manifest.json atomically (the commit
point: a crash leaves the old store or the new one), then deletes the files no manifest names.
Loading maps the shards' arrays from disk (joblib `mmap_mode`), so their vectors are paged in only
as searched.

Checksums (CRC-32: made to catch flipped bits, 3.7 GB/s here; a store is the user's own, so this
guards against a bad disk or copy, not against someone who rewrites it): every open checks the
track table and each shard's track numbers and window times, the part whose damage gives wrong
answers with full confidence (an eighth of a shard's bytes); `verify="full"` (`tagmatch check`,
and `tagmatch index`, which must not build on damage) also checks the vectors. A damaged shard
is named in a one-line StoreError; `tagmatch index` drops it and re-embeds its tracks.
"""

from __future__ import annotations

import json
import secrets
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagmatch import safeload
from tagmatch.errors import StoreError
from tagmatch.fsutil import atomic_joblib_dump, atomic_write_text, fsync_dir, make_folder
from tagmatch.safeload import UnsafeFile

if TYPE_CHECKING:
    from tagmatch.store.shards import Store

STORE_FORMAT = "tagmatch-store"
STORE_VERSION = 3
MANIFEST = "manifest.json"
QUICK = ("track", "time")  # the arrays every open checks
ARRAYS = ("vectors", "track", "time")


@dataclass
class TrackInfo:
    path: str  # absolute
    tags: dict
    duration_s: float
    size: int
    mtime_ns: int


@dataclass
class Shard:
    """The vectors of some whole tracks. `track` numbers them within the shard (0..n_tracks-1),
    so a shard's file stays valid when tracks elsewhere come or go."""

    vectors: np.ndarray  # [shape=(n, dim)] int8 (a memmap when loaded)
    track: np.ndarray  # [shape=(n,)] int32 shard-local track number; a track's rows are together, in order
    time: np.ndarray  # [shape=(n,)] float32 window start in seconds
    n_tracks: int
    file: str | None = None  # its file in the store folder; None: not written yet
    crc: dict[str, int] | None = None  # CRC-32 of vectors, track, time as saved (None: not saved yet)


def crc32(a: np.ndarray | bytes) -> int:
    """CRC-32 of an array's bytes (a mapped array is read, not copied)."""
    if isinstance(a, np.ndarray):
        a = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return zlib.crc32(memoryview(a))


def shard_checksums(s: Shard) -> dict[str, int]:
    return {name: crc32(np.asarray(getattr(s, name))) for name in ARRAYS}


def save_store(store: Store, path: Path) -> None:
    """Write `store` as the folder `path` (see the module docstring for the order of writes)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{folder} is a file (a store of an older tagmatch?); store folders are a new "
                         "format: give another --store path, or delete that file and index again")
    make_folder(folder)
    store.prepare_save()
    same = store.folder is not None and store.folder.resolve() == folder.resolve()
    for s in store.shards:
        if s.file is None or not same:
            name = f"shard-{secrets.token_hex(6)}.joblib"
            s.crc = shard_checksums(s)
            atomic_joblib_dump({"vectors": np.asarray(s.vectors), "track": s.track, "time": s.time}, folder / name)
            s.file = name
    tracks_file = f"tracks-{secrets.token_hex(6)}.joblib"
    atomic_joblib_dump([asdict(t) for t in store.tracks], folder / tracks_file)
    manifest = {"format": STORE_FORMAT, "version": STORE_VERSION, "model_id": store.model_id,
                "feature_config": store.feature_config.to_dict(), "dim": store.dim, "tracks": tracks_file,
                "tracks_crc32": crc32((folder / tracks_file).read_bytes()),
                "roots": store.roots,
                "n_tracks": len(store.tracks), "n_vectors": sum(len(s.time) for s in store.shards),
                "shards": [{"file": s.file, "n_tracks": s.n_tracks, "n_vectors": len(s.time),
                            **({"crc32": s.crc} if s.crc else {})} for s in store.shards]}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    named = {tracks_file, MANIFEST, *(s.file for s in store.shards)}
    for p in folder.iterdir():  # files of earlier saves (or of a save cut short)
        if p.name not in named and p.name.startswith(("shard-", "tracks-")) and p.suffix == ".joblib":
            p.unlink()
    fsync_dir(folder)
    store.folder = folder


def _manifest(path: Path) -> dict:
    if not path.exists():
        raise StoreError(f"no store at {path}: run `tagmatch index REF_DIR` first")
    if not path.is_dir():
        raise StoreError(_file_store_error(path))
    try:
        m = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path} is not a tagmatch store (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"store {path} is unreadable or corrupt ({type(exc).__name__}); "
                         "re-create it with `tagmatch index`") from exc
    if not isinstance(m, dict) or m.get("format") != STORE_FORMAT:
        raise StoreError(f"{path} is not a tagmatch store")
    if m.get("version") != STORE_VERSION:
        raise StoreError(f"store {path} has format version {m.get('version')}; this tagmatch reads "
                         f"version {STORE_VERSION}: re-create it with `tagmatch index`")
    return m


def _tracks(path: Path, m: dict) -> list[dict]:
    file = path / _plain_name(m["tracks"])
    try:
        if "tracks_crc32" in m and crc32(file.read_bytes()) != m["tracks_crc32"]:
            raise StoreError(f"store {path}: its track table {file.name} is damaged (checksum differs); "
                             "re-create the store with `tagmatch index --store NEW_PATH`")
        return [TrackInfo(**t) for t in safeload.load(file)]
    except (StoreError, UnsafeFile):
        raise
    except Exception as exc:
        raise StoreError(f"store {path} is unreadable or corrupt ({type(exc).__name__}: its track table is missing "
                         "or damaged); re-create it with `tagmatch index`") from exc


class DamagedShard(StoreError):
    """A shard that is missing, unreadable or fails its checksum; `why` says which."""

    def __init__(self, store: Path, file: str, why: str):
        self.file, self.why = file, why
        super().__init__(f"store {store}: shard {file} {why}")


WORDS = {"vectors": "vectors", "track": "track numbers", "time": "window times"}


def _shard(path: Path, info: dict, dim: int, mmap: bool, arrays: tuple[str, ...]) -> Shard:
    """One shard, loaded and checked (`arrays`: those whose checksum is compared); a missing,
    unreadable or damaged one raises DamagedShard."""
    name = _plain_name(info["file"])
    try:
        d = safeload.load(path / name, mmap_mode="r" if mmap else None)
        s = Shard(d["vectors"], d["track"], d["time"], int(info["n_tracks"]), name, info.get("crc32"))
    except UnsafeFile:
        raise
    except Exception as exc:
        raise DamagedShard(path, name, f"is missing or unreadable ({type(exc).__name__})") from exc
    n = int(info.get("n_vectors", len(s.time)))
    if s.vectors.shape != (n, dim) or s.track.shape != (n,) or s.time.shape != (n,):
        raise DamagedShard(path, name, "holds arrays of the wrong size")
    bad = [WORDS[a] for a in arrays if s.crc and a in s.crc and crc32(np.asarray(getattr(s, a))) != s.crc[a]]
    if bad:
        raise DamagedShard(path, name, f"is damaged (the checksum of its {' and '.join(bad)} differs)")
    return s


def read_store(path: Path, mmap: bool = True, verify: str = "quick",
               damaged: list | None = None) -> tuple[dict, list[TrackInfo], list[Shard]]:
    """A store folder's manifest, track table and shards, checked (Store.load makes the Store).
    `verify`: "quick" checks the track table and each shard's track numbers and times; "full"
    also its vectors, and gives shards saved without checksums their checksums (written at the
    next save). With `damaged` (a list), a damaged or missing shard is dropped with its tracks and
    (file, why, its tracks' paths) is appended there, instead of refusing the store."""
    m = _manifest(path)
    tracks = _tracks(path, m)
    if sum(int(s["n_tracks"]) for s in m["shards"]) != len(tracks):
        raise StoreError(f"store {path} is inconsistent (shards and track table disagree); "
                         "re-create it with `tagmatch index`")
    arrays = ARRAYS if verify == "full" else QUICK
    shards, kept, first = [], [], 0
    for info in m["shards"]:
        own = tracks[first : first + int(info["n_tracks"])]
        first += int(info["n_tracks"])
        try:
            s = _shard(path, info, int(m["dim"]), mmap, arrays)
        except DamagedShard as exc:
            if damaged is None:
                raise StoreError(f"{exc}; `tagmatch index REF_DIR --store {path}` embeds its "
                                 f"{len(own)} tracks again") from None
            damaged.append((exc.file, exc.why, [t.path for t in own]))
            continue
        if verify == "full" and not s.crc:
            s.crc = shard_checksums(s)
        shards.append(s)
        kept += own
    return m, kept, shards


def read_shards(path: Path, files: list[str] | tuple[str, ...], mmap: bool = True) -> tuple[dict, list[Shard]]:
    """The manifest and some of a store's shards, by file name, checked as every open checks them
    (their track numbers and times): what a search worker holding a group of shards opens. The
    track table is not read."""
    m = _manifest(Path(path))
    named = {info["file"]: info for info in m["shards"]}
    missing = [f for f in files if f not in named]
    if missing:
        raise StoreError(f"store {path} has no shard {missing[0]} (the store changed: open it again)")
    try:
        return m, [_shard(Path(path), named[f], int(m["dim"]), mmap, QUICK) for f in files]
    except DamagedShard as exc:
        raise StoreError(f"{exc}; `tagmatch index REF_DIR --store {path}` embeds its tracks again") from None


def manifest_bytes(path: Path) -> bytes:
    """The manifest file's bytes (what a store version is computed from); b"" when there is none."""
    try:
        return (Path(path) / MANIFEST).read_bytes()
    except OSError:
        return b""


def unchecked_shards(path: Path) -> int:
    """How many of the store's shards were saved without checksums (by tagmatch before 2026-12-04)."""
    return sum("crc32" not in s for s in _manifest(Path(path))["shards"])


def disk_bytes(path: Path) -> int:
    """Bytes a saved store takes on disk (all its files)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size


def _plain_name(name: str) -> str:
    """A file name from a manifest, which must name a file in the store folder itself."""
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise StoreError(f"the store's manifest names {name!r}, not a file of the store folder")
    return name


def _file_store_error(path: Path) -> str:
    """What a file where a store folder should be is: an older store, something else, or junk."""
    try:
        d = safeload.load(path)
    except UnsafeFile as exc:
        return str(exc)
    except Exception as exc:
        return (f"store {path} is unreadable or corrupt ({type(exc).__name__}); "
                "re-create it with `tagmatch index`")
    if isinstance(d, dict) and d.get("format") == STORE_FORMAT:
        return (f"store {path} has format version {d.get('version')} (one file); this tagmatch reads "
                f"version {STORE_VERSION} (a folder): re-create it with `tagmatch index --store NEW_PATH`")
    return f"{path} is not a tagmatch store"
