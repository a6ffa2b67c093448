"""tagmatch for beets: identify files by their audio against your own library, offline.

    plugins: tagmatch          # in beets' config.yaml (pip install 'tagmatch[beets]')

- `beet tagmatch-index [QUERY]` embeds the library's items into a tagmatch store (incremental:
  only new or changed files; without a query, items gone from the library leave the store too).
- During `beet import`, tagmatch is a metadata source: each file is matched by its audio against
  that store, and the reference track it matches is proposed with its tags (title, artist, album,
  track number, MusicBrainz ids); an album import proposes the reference album most of its files
  match. Unknown files add no candidate. The candidate's distance is 1 - tagmatch's confidence, so
  beets' prompt, `-q` (strong recommendations only: confidence >= 0.96 at beets' default
  `match.strong_rec_thresh`) and `-A` behave as for any other source.
- `beet tagmatch-dupes [QUERY]` lists the duplicate recordings among the items, by audio.

Config (`tagmatch:` in beets' config): `store` (default: `tagmatch-store` in beets' config
folder), `model` (default: the model tagmatch ships), `threshold` (0.5: below it a file is unknown).

A thin layer: the work is tagmatch's own (tagmatch.jobs, tagmatch.match); what is here maps
beets' items and candidates onto it. docs/beets.md says what it does and does not do.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from beets import config, ui
from beets.autotag.hooks import AlbumInfo, TrackInfo
from beets.metadata_plugins import MetadataSourcePlugin

CONFIDENCE = "tagmatch_confidence"  # carried on our candidates (and kept on the items beets imports)


def _number(value) -> int | None:
    """'2', '2/10' -> 2."""
    try:
        return int(str(value).split("/")[0])
    except (TypeError, ValueError):
        return None


class TagmatchPlugin(MetadataSourcePlugin):
    def __init__(self) -> None:
        super().__init__()
        self.config.add({"store": None, "model": None, "threshold": 0.5})
        config["match"]["distance_weights"].add({"tagmatch": 1.0})
        self._lock = threading.Lock()  # beets asks its sources from a thread pool
        self._matcher = None
        _rescore_our_candidates()

    # ---- where things are -------------------------------------------------------------------
    def store_path(self) -> Path:
        given = self.config["store"].get()
        return Path(given).expanduser() if given else Path(config.config_dir()) / "tagmatch-store"

    def model_path(self) -> Path | None:
        given = self.config["model"].get()
        return Path(given).expanduser() if given else None

    # ---- commands -----------------------------------------------------------------------------
    def commands(self):
        index = ui.Subcommand("tagmatch-index", help="embed the library's audio into tagmatch's store (incremental)")
        index.parser.add_option("--prune", action="store_true", default=False,
                                help="drop missing items' tracks even when most of the store's are missing")
        index.func = self._index
        dupes = ui.Subcommand("tagmatch-dupes", help="list duplicate recordings among the items, by audio")
        dupes.func = self._dupes
        return [index, dupes]

    def _index(self, lib, opts, args) -> None:
        from tagmatch.errors import TagmatchError
        from tagmatch.jobs import index_job

        files = [item.filepath for item in lib.items(args)]
        if not files:
            raise ui.UserError("no items match the query")
        try:  # without a query the items are the whole library: the store follows it, removals too
            res = index_job(_common_folder(files), self.store_path(), self.model_path(), files=files,
                            remove_missing=not args, prune=opts.prune, on_progress=_progress_lines)
        except TagmatchError as exc:
            raise ui.UserError(f"tagmatch: {exc}") from None
        r = res.report
        ui.print_(f"tagmatch store {res.store_path}: {len(res.store.tracks)} tracks (added {len(r.added)}, "
                  f"updated {len(r.updated)}, removed {len(r.removed)}, unchanged {r.unchanged}, "
                  f"errors {len(r.errors)})")
        with self._lock:
            self._matcher = None  # the next import reads the new store

    def _dupes(self, lib, opts, args) -> None:
        from tagmatch.errors import TagmatchError
        from tagmatch.jobs import dupes_job
        from tagmatch.store.shards import default_cache_store_path

        files = [item.filepath for item in lib.items(args)]
        if not files:
            raise ui.UserError("no items match the query")
        try:
            doc = dupes_job([_common_folder(files)], default_cache_store_path(), self.model_path(), files=files,
                            reference_path=None, on_progress=_progress_lines)
        except TagmatchError as exc:
            raise ui.UserError(f"tagmatch: {exc}") from None
        dups = [g for g in doc.groups if g["kind"] == "duplicate"]
        for g in dups:
            ui.print_(f"duplicate recording ({len(g['files'])} files):")
            for f in g["files"]:
                mark = "*" if f["path"] == g["keeper"] else " "
                ui.print_(f"  {mark} {f['path']}  ({f['format']}, {f.get('duration_s') or 0:.1f} s)")
        ui.print_(f"{len(dups)} duplicate group(s) among {len(files)} items (* the copy tagmatch would keep)")

    # ---- metadata source ----------------------------------------------------------------------
    def _match(self, path: Path):
        """tagmatch's answer for one file (None when it holds no known song, or there is no store)."""
        from tagmatch.errors import TagmatchError

        with self._lock:  # one JAX model and store for all of beets' threads
            if self._matcher is None:
                try:
                    self._matcher = _Matcher(self.store_path(), self.model_path(), float(self.config["threshold"].get()))
                except TagmatchError as exc:
                    self._log.warning("tagmatch: {}", exc)
                    self._matcher = False
            if not self._matcher:
                return None
            return self._matcher.match(path)

    def item_candidates(self, item, artist, title):
        found = self._match(item.filepath)
        if found is None:
            return []
        track, confidence = found
        return [self._track_info(track, confidence, singleton=True)]

    def candidates(self, items, artist, album, va_likely):
        """The reference album most of the items match, with all its tracks (beets maps items
        onto them); its confidence is the items' mean (an unknown item counts 0)."""
        votes: dict[tuple, list[float]] = {}
        for item in items:
            found = self._match(item.filepath)
            if found is not None:
                track, confidence = found
                votes.setdefault(_album_key(track.tags), []).append(confidence)
        if not votes:
            return []
        key, confs = max(votes.items(), key=lambda kv: (len(kv[1]), sum(kv[1])))
        if key == ("", "") or len(confs) * 2 <= len(items):
            return []  # untagged references, or most files match no one album
        tracks = sorted((t for t in self._matcher.store.tracks if _album_key(t.tags) == key),
                        key=lambda t: (_number(t.tags.get("discnumber")) or 1, _number(t.tags.get("tracknumber")) or 0))
        infos = [self._track_info(t, 1.0, singleton=False) for t in tracks]
        tags = tracks[0].tags
        return [AlbumInfo(infos, album=tags.get("album"), artist=tags.get("albumartist") or tags.get("artist"),
                          album_id=tags.get("musicbrainz_albumid"), artist_id=tags.get("musicbrainz_albumartistid"),
                          releasegroup_id=tags.get("musicbrainz_releasegroupid"), year=_number(tags.get("date")),
                          data_source=self.data_source, **{CONFIDENCE: sum(confs) / len(items)})]

    def _track_info(self, track, confidence: float, singleton: bool) -> TrackInfo:
        tags = track.tags
        n = _number(tags.get("tracknumber"))
        extra = {CONFIDENCE: round(confidence, 4)}
        if singleton:  # what the album would carry
            extra.update(mb_albumid=tags.get("musicbrainz_albumid"), year=_number(tags.get("date")),
                         albumartist=tags.get("albumartist"))
        return TrackInfo(title=tags.get("title") or Path(track.path).stem, artist=tags.get("artist"),
                         album=tags.get("album"), index=n, medium_index=n, medium=_number(tags.get("discnumber")),
                         length=track.duration_s, track_id=tags.get("musicbrainz_trackid"),
                         artist_id=tags.get("musicbrainz_artistid"),
                         release_track_id=tags.get("musicbrainz_releasetrackid"),
                         genres=[tags["genre"]] if tags.get("genre") else None,
                         data_source=self.data_source, **{k: v for k, v in extra.items() if v is not None})

    def track_for_id(self, track_id):
        """A MusicBrainz track id of a reference track (beets asks before matching by audio)."""
        self._match_ready()
        for t in self._matcher.store.tracks if self._matcher else ():
            if t.tags.get("musicbrainz_trackid") == track_id:
                return self._track_info(t, 1.0, singleton=True)
        return None

    def album_for_id(self, album_id):
        return None  # albums are proposed from the audio of their files (candidates)

    def _match_ready(self) -> None:
        if self._matcher is None:
            self._match(None)


def _common_folder(files: list[Path]) -> Path:
    import os

    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]))


def _album_key(tags: dict) -> tuple[str, str]:
    return ((tags.get("albumartist") or tags.get("artist") or "").casefold(), (tags.get("album") or "").casefold())


class _Matcher:
    """The store, the model and the search, loaded once per beets process."""

    def __init__(self, store_path: Path, model_path: Path | None, threshold: float):
        from tagmatch.jobs import open_store
        from tagmatch.match.config import MatchConfig
        from tagmatch.model.modelfile import load_model
        from tagmatch.store.ann import searcher_for

        self.store = open_store(store_path, load_model(model_path), must_exist=True)
        self.model = load_model(model_path).for_library(self.store)  # this library's adapter and threshold
        self.searcher = searcher_for(self.store)
        self.cfg = MatchConfig(threshold=threshold)

    def match(self, path):
        from tagmatch.match.decide import match_file

        if path is None:
            return None
        m = match_file(Path(path), self.store, self.model, self.cfg, self.searcher)
        if m.status != "match":
            return None
        return self.store.tracks[m.match.track], m.match.confidence


def _progress_lines(p) -> None:
    if p.error:
        ui.print_(f"tagmatch: {p.item}: {p.error}")


# ---- distance: 1 - confidence ------------------------------------------------------------------
def _rescore_our_candidates() -> None:
    """beets (2.5 and later) scores every candidate by comparing it with the file's current tags:
    for the untagged files tagmatch is for, that says "no match" whatever the audio says. So the
    tasks' candidate lookup is wrapped: our candidates' distance becomes 1 - confidence, and the
    recommendation is made again from the re-sorted list with beets' own thresholds. (beets offers
    no hook between the lookup and the choice for singletons; `_recommendation` is its own rule.)"""
    from beets.importer.tasks import ImportTask, SingletonImportTask

    for cls in (ImportTask, SingletonImportTask):
        if getattr(cls.lookup_candidates, "_tagmatch", False):
            continue  # wrapped already (beets loads plugins again in one process)
        original = cls.lookup_candidates

        def lookup_candidates(self, *args, _original=original, **kwargs):
            _original(self, *args, **kwargs)
            _rescore(self)

        lookup_candidates._tagmatch = True
        cls.lookup_candidates = lookup_candidates


def _rescore(task) -> None:
    from beets.autotag.distance import Distance
    from beets.autotag.match import _recommendation

    changed = []
    for m in task.candidates:
        confidence = m.info.get(CONFIDENCE)
        if confidence is None:
            changed.append(m)
            continue
        d = Distance()
        d.add("tagmatch", 1.0 - float(confidence))
        if hasattr(m.distance, "tracks"):
            d.tracks = m.distance.tracks
        changed.append(dataclasses.replace(m, distance=d))
    if any(m.info.get(CONFIDENCE) is not None for m in changed):
        task.candidates = sorted(changed, key=lambda m: m.distance)
        task.rec = _recommendation(task.candidates)
