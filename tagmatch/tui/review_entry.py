"""How one scan entry reads on the Review screen: its row's cells and its detail text.

Plain functions of the entry (no Textual), so the screen keeps only its state and its keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rich.text import Text

from tagmatch.textsafe import visible
from tagmatch.fsutil import rel
from tagmatch.organize.plan import VALUE_SEP, PlannedOp, hand_tagged

SURE = 0.9  # `A` with nothing marked accepts unreviewed matches at or above this confidence


def norm_path(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def candidates(entry: dict) -> list[dict | None]:
    """The match (choice 0), then the alternatives (choices 1..n)."""
    return [entry.get("match"), *(entry.get("alternatives") or [])]


def chosen(entry: dict) -> int:
    d = entry.get("decision") or {}
    return d.get("choice", 0) if d.get("status") == "accepted" and isinstance(d.get("choice"), int) else 0


def chosen_candidate(entry: dict) -> dict | None:
    """The candidate the decision picked (the match when undecided); None when there is none."""
    cands, choice = candidates(entry), chosen(entry)
    return cands[choice] if choice < len(cands) else None


def name_of(cand: dict | None) -> str:
    """'Artist - Title' of a candidate (its file name when untagged)."""
    if not cand:
        return ""
    tags = cand.get("tags") or {}
    title = tags.get("title") or Path(cand.get("path") or "?").stem
    return visible(f"{tags['artist']} - {title}" if tags.get("artist") else title)


def conf_style(conf: float | None) -> str:
    if conf is None:
        return "dim"
    return "green" if conf >= SURE else ("yellow" if conf >= 0.5 else "red")


def status_text(entry: dict, applied: dict[str, tuple[str, str]]) -> Text:
    """The Status cell: applied / in flight (from the journal) before the decision and the scan."""
    hit = applied.get(norm_path(str(entry.get("path"))))
    if hit:
        return Text("applied" if hit[1] == "done" else "in flight", style="bold cyan")
    d = entry.get("decision") or {}
    if d.get("status") == "accepted":
        return Text(f"accept alt{d.get('choice')}" if chosen(entry) else "accepted", style="bold green")
    if d.get("status") == "rejected":
        return Text("rejected", style="bold red")
    status = entry.get("status")
    return Text("pending" if status == "match" else str(status), style="" if status == "match" else "dim")


def row_cells(entry: dict, marked: bool, base: Path | None, applied: dict[str, tuple[str, str]]) -> list:
    """The row's cells, in the order of the screen's COLUMNS."""
    cand = chosen_candidate(entry)
    conf = (cand or {}).get("confidence")
    if entry.get("status") == "error":
        suggestion = Text(f"error: {entry.get('error') or '?'}", style="dim")
    elif hand_tagged(entry):
        typed = entry["decision"].get("tags") or {}
        tags = {k: VALUE_SEP.join(v) if isinstance(v, list) else v for k, v in typed.items()}
        suggestion = Text(f"{name_of({'tags': tags, 'path': entry.get('path')})} (by hand)")
    elif entry.get("status") == "unknown":
        suggestion = Text(f"? {name_of(cand)}" if cand else "", style="dim")
    else:
        suggestion = Text(name_of(cand))
    return [Text("*" if marked else " ", style="bold magenta"),
            Text(visible(rel(str(entry.get("path")), base))), suggestion,
            Text(f"{conf:.2f}" if conf is not None else "", style=conf_style(conf)), status_text(entry, applied)]


def entry_detail(entry: dict, base: Path | None, dest: Path | None, applied: dict[str, tuple[str, str]],
                preview: Callable[[int], PlannedOp | str]) -> Text:
    """What the file would become: tag diff, new path, alternatives, evidence (`preview(choice)`
    plans it, a message when it would not change; the screen caches those)."""
    t = Text()
    t.append(visible(rel(str(entry.get("path")), base)), style="bold")
    t.append("  ")
    t.append_text(status_text(entry, applied))
    t.append("\n")
    if entry.get("status") == "error":
        t.append(f"error: {entry.get('error') or '?'}\n", style="red")
        return t
    cands = candidates(entry)
    choice = chosen(entry)
    cand = cands[choice] if choice < len(cands) else None
    if cand:
        label = "match" if choice == 0 else f"alternative {choice}"
        if entry.get("status") == "unknown":
            label = "best guess (below the threshold)"
        t.append(f"{label}: ", style="dim")
        t.append(name_of(cand), style="bold")
        t.append(f"  {cand.get('confidence', 0):.2f}\n", style=conf_style(cand.get("confidence")))
        sure = (f", sure after {entry['stopped_at_s']:g} s"
                if entry.get("stopped_at_s") and choice == 0 and entry.get("status") == "match" else "")
        checked = ""
        if cand.get("verified") is not None:
            checked = f", reference audio correlates {cand['verified']:.2f}"
            if cand.get("significance") is not None:  # older scans lack it
                checked += f" ({cand['significance']:.1f} sd above chance)"
        t.append(f"evidence: {cand.get('fragments_agreeing', '?')}/{cand.get('fragments_total', '?')} "
                 f"fragments agree, offset {cand.get('offset_s') or 0:+.1f} s{sure}{checked}\n", style="dim")
    d = entry.get("decision") or {}
    if d.get("status") == "accepted" and (d.get("tags") or d.get("path")):
        t.append("by hand: " + ", ".join([*(d.get("tags") or {}), *(["path"] if d.get("path") else [])]) + "\n",
                 style="magenta")
    hit = applied.get(norm_path(str(entry.get("path"))))
    if hit:
        t.append(f"{'applied' if hit[1] == 'done' else 'in flight'} in run {hit[0]}\n", style="cyan")
    elif (cand and entry.get("status") == "match") or hand_tagged(entry):
        op = preview(choice)
        if isinstance(op, str):
            t.append(f"no change: {op}\n", style="yellow")
        else:
            t.append("new path: ", style="dim")
            t.append(rel(op.dst, dest or base) + "\n", style="bold")
            for c in op.tag_changes:
                old, new = "; ".join(c.old or []), "; ".join(c.new or [])
                if c.old is None:
                    t.append(f"  + {c.name}: {new}\n", style="green")
                elif c.new is None:
                    t.append(f"  - {c.name}: {old}\n", style="red")
                else:
                    t.append(f"  ~ {c.name}: {old} -> {new}\n", style="yellow")
            if op.art_from:
                t.append("  + cover art from the reference\n", style="green")
    for ref in entry.get("passed_over") or []:  # tagmatch.organize.rejections
        t.append(f"not offered again: {visible(Path(ref).stem)} (rejected before for this audio)\n", style="dim")
    alts = cands[1:]
    if alts:
        t.append("alternatives:\n", style="dim")
        for n, a in enumerate(alts, 1):
            mark = ">" if n == choice else " "
            t.append(f" {mark}{n} {name_of(a)}  ")
            t.append(f"{(a or {}).get('confidence', 0):.2f}\n", style=conf_style((a or {}).get("confidence")))
    return t
