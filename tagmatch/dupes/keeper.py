"""Which copy of a duplicate group to keep: a file of the reference library, then a complete copy before an excerpt, then lossless,
the higher bit rate, the longer file, the better tagged one; and why, in words."""

from __future__ import annotations

from typing import Callable


def keeper_rank(info: dict, longest_s: float) -> tuple:
    """Sort key, best last: a complete copy (at least 90% of the group's longest), then lossless,
    bit rate, length, number of tags; the path breaks ties so the choice is stable. Completeness
    comes first so that a lossless excerpt never displaces the whole recording."""
    dur = float(info.get("duration_s") or 0)
    return (dur >= 0.9 * longest_s, bool(info.get("lossless")), int(info.get("bitrate") or 0), round(dur, 1),
            len([v for v in (info.get("tags") or {}).values() if v]), [-ord(c) for c in info.get("path", "")])


def choose_keeper(members: list[int], infos: dict[int, dict], keep: set[str] = frozenset(),
                  protected: Callable[[str], bool] = lambda path: False) -> int:
    """A file of the reference library (`protected(path)`) when the group holds one: those are
    always kept. Among the candidates, the user's pick (`keep` holds paths), else the best by
    keeper_rank."""
    candidates = [m for m in members if protected(infos[m].get("path", ""))] or members
    chosen = [m for m in candidates if infos[m].get("path") in keep]
    if chosen:
        return chosen[0]
    longest = max(float(infos[m].get("duration_s") or 0) for m in members)
    return max(candidates, key=lambda m: keeper_rank(infos[m], longest))


KEEPER_REASONS = ("complete (the others are excerpts)", "lossless", "higher bit rate", "longer", "better tagged",
                  "first by path (otherwise equal)")


def keeper_reason(files: list[dict]) -> tuple[str, str]:
    """(path the keeper rule picks, why: the first keeper_rank criterion where it beats the runner-up)."""
    longest = max(float(f.get("duration_s") or 0) for f in files)
    ranked = sorted(files, key=lambda f: keeper_rank(f, longest), reverse=True)
    library = [f for f in ranked if f.get("in_library")]
    if library and len(library) < len(ranked):
        return library[0]["path"], "in the reference library"
    if len(ranked) < 2:
        return ranked[0]["path"], "the only file"
    a, b = keeper_rank(ranked[0], longest), keeper_rank(ranked[1], longest)
    return ranked[0]["path"], KEEPER_REASONS[next((i for i in range(len(a)) if a[i] != b[i]), len(a) - 1)]
