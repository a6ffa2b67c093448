"""The store on disk: a folder of files named by one manifest, with checksums.

    manifest.json          format, version, model id, feature config, dim, the folders indexed,
                           and per shard: its files and a CRC-32 of each
    shard-<id>.joblib      whole tracks' vectors (int8), shard-local track numbers, window times
    tracks-<id>.json       those tracks' path, tags, duration, size, mtime (one file per shard)

Shards are written once and never change: a save writes only new shards (new tracks) and the
shards that lost a track, each with its track list, then swaps manifest.json atomically (the
commit point: a crash leaves the old store or the new one), then deletes the files no manifest
names. Adding a track to a big store so writes that track's shard and list and the manifest
(~100 bytes a shard), never the whole track table. Loading maps the shards' arrays from disk
(joblib `mmap_mode`), so their vectors are paged in only as searched; the track lists are JSON,
parsed by the json module's C decoder.

Checksums (CRC-32: made to catch flipped bits, 3.7 GB/s here; a store is the user's own, so this
guards against a bad disk or copy, not against someone who rewrites it): every open checks the
track lists and each shard's track numbers and window times, the part whose damage gives wrong
answers with full confidence (an eighth of a shard's bytes); `verify="full"` (`tagmatch check`,
and `tagmatch index`, which must not build on damage) also checks the vectors. A damaged shard
is named in a one-line StoreError; `tagmatch index` drops it and re-embeds its tracks.

Format 3 (before 2026-12-05) kept one track table for the whole store (tracks-<id>.joblib),
rewritten at every save: it is read, and the next save writes format 4.
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
STORE_VERSION = 4
READ_VERSIONS = (3, 4)
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
    tracks_file: str | None = None  # its tracks' list in the store folder; None: not written yet
    tracks_crc: int | None = None
    saved_tracks: list | None = None  # the TrackInfo objects its list holds (a changed one is written again)
    vectors_ok: bool = False  # its vectors' checksum compared since it was opened (or it was made here)


def crc32(a: np.ndarray | bytes) -> int:
    """CRC-32 of an array's bytes (a mapped array is read, not copied)."""
    if isinstance(a, np.ndarray):
        a = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return zlib.crc32(memoryview(a))


def shard_checksums(s: Shard) -> dict[str, int]:
    return {name: crc32(np.asarray(getattr(s, name))) for name in ARRAYS}


def check_vectors(s: Shard, store: Path | None) -> None:
    """Before a shard's vectors are copied into a new shard (a merge, a removed track), compare
    their checksum, so damage is never written again under a new checksum; a store opened with
    the full check has done it."""
    if s.vectors_ok or not s.crc or "vectors" not in s.crc:
        return
    if crc32(np.asarray(s.vectors)) != s.crc["vectors"]:
        raise StoreError(f"store {store}: shard {s.file} is damaged (the checksum of its vectors differs); "
                         f"`tagmatch index REF_DIR --store {store} --check` embeds its tracks again")
    s.vectors_ok = True


def last_full_check(path: Path) -> float | None:
    """When the store's vectors were last all compared with their checksums (a Unix time; None:
    never, or not a store of this format)."""
    try:
        return float(_manifest(Path(path)).get("vectors_checked_at"))
    except (StoreError, TypeError, ValueError):
        return None


def save_store(store: Store, path: Path) -> None:
    """Write `store` as the folder `path` (see the module docstring for the order of writes)."""
    from tagmatch.fsutil import json_text

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{folder} is a file (a store of an older tagmatch?); store folders are a new "
                         "format: give another --store path, or delete that file and index again")
    make_folder(folder)
    store.prepare_save()
    same = store.folder is not None and store.folder.resolve() == folder.resolve()
    first = 0
    for s in store.shards:
        own = store.tracks[first : first + s.n_tracks]
        first += s.n_tracks
        if s.file is None or not same:
            name = f"shard-{secrets.token_hex(6)}.joblib"
            s.crc = shard_checksums(s)
            atomic_joblib_dump({"vectors": np.asarray(s.vectors), "track": s.track, "time": s.time}, folder / name)
            s.file = name
        if (s.tracks_file is None or not same or s.saved_tracks is None or len(s.saved_tracks) != len(own)
                or any(a is not b for a, b in zip(s.saved_tracks, own))):
            name = f"tracks-{secrets.token_hex(6)}.json"
            text = json_text([asdict(t) for t in own])
            atomic_write_text(folder / name, text)
            s.tracks_file, s.tracks_crc = name, crc32(text.encode("utf-8"))
        s.saved_tracks = list(own)
    manifest = {"format": STORE_FORMAT, "version": STORE_VERSION, "model_id": store.model_id,
                "feature_config": store.feature_config.to_dict(), "dim": store.dim,
                "roots": store.roots, "vectors_checked_at": store.vectors_checked_at,
                "n_tracks": len(store.tracks), "n_vectors": sum(len(s.time) for s in store.shards),
                "shards": [{"file": s.file, "n_tracks": s.n_tracks, "n_vectors": len(s.time),
                            "tracks": s.tracks_file, "tracks_crc32": s.tracks_crc,
                            **({"crc32": s.crc} if s.crc else {})} for s in store.shards]}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    named = {MANIFEST, *(s.file for s in store.shards), *(s.tracks_file for s in store.shards)}
    for p in folder.iterdir():  # files of earlier saves (or of a save cut short)
        if p.name not in named and p.name.startswith(("shard-", "tracks-")) and p.suffix in (".joblib", ".json"):
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
    if m.get("version") not in READ_VERSIONS:
        raise StoreError(f"store {path} has format version {m.get('version')}; this tagmatch reads "
                         f"version {STORE_VERSION}: re-create it with `tagmatch index`")
    return m


def _table(path: Path, m: dict) -> list[TrackInfo]:
    """Format 3's one track table of the whole store (a joblib list of dicts)."""
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


def _shard_tracks(path: Path, info: dict) -> tuple[list[TrackInfo], str, int]:
    """One shard's track list (format 4), checked: (tracks, file, crc); DamagedShard when it is
    missing, damaged or not a list of that shard's tracks."""
    shard, name = _plain_name(info.get("file")), _plain_name(info.get("tracks"))
    try:
        raw = (path / name).read_bytes()
    except OSError as exc:
        raise DamagedShard(path, shard, f"has lost its track list {name} ({type(exc).__name__})") from None
    crc = crc32(raw)
    if info.get("tracks_crc32") is not None and crc != info["tracks_crc32"]:
        raise DamagedShard(path, shard, f"has a damaged track list {name} (its checksum differs)")
    try:
        tracks = [TrackInfo(**t) for t in json.loads(raw.decode("utf-8"))]
    except (ValueError, TypeError) as exc:
        raise DamagedShard(path, shard, f"has a track list {name} that is not one ({type(exc).__name__})") from None
    if len(tracks) != int(info["n_tracks"]):
        raise DamagedShard(path, shard, f"has a track list {name} of another number of tracks")
    return tracks, name, crc


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
    """A store folder's manifest, tracks and shards, checked (Store.load makes the Store).
    `verify`: "quick" checks the track lists and each shard's track numbers and times; "full"
    also its vectors, and gives shards saved without checksums their checksums (written at the
    next save). With `damaged` (a list), a damaged or missing shard is dropped with its tracks and
    (file, why, its tracks' paths) is appended there, instead of refusing the store."""
    m = _manifest(path)
    table = _table(path, m) if m["version"] == 3 else None
    if table is not None and sum(int(s["n_tracks"]) for s in m["shards"]) != len(table):
        raise StoreError(f"store {path} is inconsistent (shards and track table disagree); "
                         "re-create it with `tagmatch index`")
    arrays = ARRAYS if verify == "full" else QUICK
    shards, kept, first = [], [], 0
    for info in m["shards"]:
        own: list[TrackInfo] = []
        try:
            if table is not None:
                own = table[first : first + int(info["n_tracks"])]
                first += int(info["n_tracks"])
            else:
                own, tracks_file, tracks_crc = _shard_tracks(path, info)
            s = _shard(path, info, int(m["dim"]), mmap, arrays)
        except DamagedShard as exc:
            if damaged is None:
                raise StoreError(f"{exc}; `tagmatch index REF_DIR --store {path}` embeds its "
                                 f"{int(info['n_tracks'])} tracks again") from None
            damaged.append((exc.file, exc.why, [t.path for t in own]))
            continue
        if table is None:  # format 3's table is written as per-shard lists at the next save
            s.tracks_file, s.tracks_crc, s.saved_tracks = tracks_file, tracks_crc, list(own)
        if verify == "full":
            s.crc = s.crc or shard_checksums(s)
            s.vectors_ok = True
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
