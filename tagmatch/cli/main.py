"""Command line: a thin layer over the library (train, index, scan, info, check, apply, decide, dupes,
undo, runs, review, serve; no command but review opens the terminal UI, and serve the same in a browser).

Results go to stdout, progress bars and per-file errors to stderr. Exit status: 0 on success
(also when some files failed), 1 when nothing could be processed or on a fatal error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tagmatch.cli.fingerprint import cmd_calibrate, cmd_check, cmd_dupes, cmd_explain, cmd_index, cmd_info, cmd_scan, cmd_train
from tagmatch.cli.organize import (cmd_apply, cmd_decide, cmd_keys, cmd_review, cmd_runs, cmd_serve, cmd_undo,
                                   run_tui)
from tagmatch.cli.output import PROG, err
from tagmatch.errors import TagmatchError

def fraction(text: str) -> float:
    """A confidence: a number from 0 to 1 (nan and inf are refused, as argparse's one line)."""
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return x


def positive(text: str) -> int:
    """A count of at least 1 (workers, steps, songs)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return n


def count(text: str) -> int:
    """A count that may be 0."""
    return 0 if text.strip() == "0" else positive(text)


def rate(text: str) -> float:
    """A learning rate: a finite number above 0."""
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not 0.0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return x


def from_decisions(sp: argparse.ArgumentParser, what: str, then: str) -> None:
    """--from-decisions [SCAN...] and its --store: learning from the review (train, calibrate)."""
    sp.add_argument("--from-decisions", nargs="*", type=Path, metavar="SCAN",
                    help=f"instead: {what} from the review decisions of these scans (default: every saved scan "
                         f"against the store){then}")
    sp.add_argument("--store", type=Path, help="with --from-decisions: the store (default: $TAGMATCH_STORE or "
                                               "the user data dir)")


def build_parser() -> argparse.ArgumentParser:
    from tagmatch.train.devcorpus import DEFAULT_ROOT as DEV_CORPUS
    from tagmatch.organize.naming import DEFAULT_TEMPLATE, FIELDS
    from tagmatch.organize.tags import TAG_NAMES

    p = argparse.ArgumentParser(prog=PROG, description="Match messy audio files to a tagged reference library.")
    sub = p.add_subparsers(dest="command")

    def common(sp, store=True):
        sp.add_argument("--model", type=Path, help="model file (default: $TAGMATCH_MODEL or the shipped model)")
        if store:
            sp.add_argument("--store", type=Path, help="store file (default: $TAGMATCH_STORE or the user data dir)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    def workers(sp):
        sp.add_argument("--backend", choices=("auto", "local", "joblib", "dask"),
                        help="auto (default: joblib from 64 files, else local), local (this process, a "
                             "thread decoding ahead), joblib (a worker process per core), dask (a cluster; "
                             "see --scheduler)")
        sp.add_argument("--jobs", type=positive, metavar="N", help="worker processes for joblib or a local dask cluster")
        sp.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler, e.g. tcp://HOST:8786 (implies "
                                                               "--backend dask; without it dask starts a local cluster)")

    sp = sub.add_parser("train", help="train an encoder on folders of audio (no labels needed)")
    sp.add_argument("sources", type=Path, nargs="*", help="folders, audio files, or text files listing paths")
    sp.add_argument("--out", type=Path, help="where to write the model file (with --from-decisions: default, "
                                               "the library's own adapter, kept beside its store)")
    from_decisions(sp, "fine-tune the model's query adapter", "; kept (in --out, or beside the store) only if "
                   "the held-out decisions improve")
    sp.add_argument("--model", type=Path, help="with --from-decisions: the model to start from (default: the "
                                               "shipped one)")
    sp.add_argument("--noise", type=Path, nargs="*", help="background recordings for augmentation")
    # Defaults live in train.TrainConfig (not imported here: it pulls in JAX, slow to start).
    sp.add_argument("--steps", type=positive, help="training steps (default 4000)")
    sp.add_argument("--batch", type=positive, help="pairs per step (default 128)")
    sp.add_argument("--lr", type=rate, help="peak learning rate (default 1e-3)")
    sp.add_argument("--loss", choices=("ntxent", "pair-bce"), help="ntxent (default, contrastive) or "
                    "pair-bce (the seed's distance + sigmoid formulation)")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--kind", choices=("window", "shared"), help="encoder: each window on its own (window) or "
                    "convolutions shared by overlapping windows (shared: ~3x cheaper to index)")
    sp.add_argument("--adapter-pairs", type=count, metavar="N", help="(clean, degraded) pairs for the query adapter "
                    "fitted after training, which moves noisy queries towards their originals (default 179200, "
                    "~11 min on 2 cores; 0: none)")
    sp.add_argument("--checkpoint", type=Path, help="checkpoint file: saved periodically, resumed if present")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("calibrate", help="fit a model's confidence threshold on folders of music and write it "
                        "into the model file")
    sp.add_argument("music", type=Path, nargs="*", help="folders of music: 4 songs in 5 are indexed as the known "
                    "ones, the 5th held out as unknown (or see --unknown)")
    sp.add_argument("--unknown", type=Path, nargs="+", help="folders of songs to hold out as the unknown ones")
    sp.add_argument("--noise", type=Path, nargs="+", help="background recordings for the noisy queries "
                    "(default: pink noise)")
    sp.add_argument("--dev-corpus", type=Path, nargs="?", const=DEV_CORPUS, metavar="ROOT",
                    help=f"the development corpus's own split instead (default root {DEV_CORPUS}); this "
                         "reproduces the shipped model's calibration")
    sp.add_argument("--model", type=Path, help="the model file to calibrate (default: $TAGMATCH_MODEL); it is "
                    "rewritten with the new calibration")
    sp.add_argument("--work", type=Path, help="where the reference store and the query files are kept "
                    "(default: the user cache dir); a re-run reuses them")
    sp.add_argument("--seed", type=int, default=1, help="query sets at seed + 1000, + 2000, ... (default 1)")
    sp.add_argument("--sets", type=positive, default=5, help="query sets; the first has known and unknown songs, "
                    "the others unknown ones only (default 5)")
    sp.add_argument("--limit", type=positive, metavar="N", help="at most N songs per side")
    sp.add_argument("--conditions", metavar="A,B", help="only these query conditions (default: all of "
                    "tagmatch.train.queries.CONDITIONS, as the shipped calibration)")
    from_decisions(sp, "refit this library's threshold", ", blended with the model's; kept in the store folder "
                   "and used by its scans")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=cmd_calibrate)

    sp = sub.add_parser("index", help="embed a reference library into the store (incremental)")
    sp.add_argument("ref_dir", type=Path)
    sp.add_argument("--search", choices=("auto", "approximate", "exact"), default="auto",
                    help="how scans search the store: auto (default) keeps an approximate index (faiss "
                         "IVF-PQ) once the store passes 50,000 vectors (~3.5 h of audio); exact removes it")
    sp.add_argument("--prune", action="store_true",
                    help="drop the tracks of missing files even when most of the folder's tracks are missing "
                         "(without it that is refused: an unmounted disk looks the same)")
    sp.add_argument("--check", action="store_true",
                    help="compare every vector with its checksum and embed the tracks of damaged shards again "
                         "(done anyway when the last full check is a week old)")
    workers(sp)
    common(sp)
    sp.set_defaults(func=cmd_index)

    sp = sub.add_parser("scan", help="suggest a reference track for every file in a folder")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--json", type=Path, help="write the results as JSON to this file")
    sp.add_argument("--threshold", type=fraction, default=0.5, help="confidence below which a file is unknown")
    sp.add_argument("--whole-files", action="store_true",
                    help="read every file to its end (default: stop once the first 10 s fragments make the answer "
                         "near-certain, confidence 0.9999)")
    sp.add_argument("--no-verify", action="store_true",
                    help="do not read the reference files to check unsure answers (default: the best 3 "
                         "candidates of an unsure file are compared with their reference audio)")
    workers(sp)
    common(sp)
    sp.set_defaults(func=cmd_scan)

    sp = sub.add_parser("info", help="describe the store")
    common(sp)
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("explain", help="match one file and draw the evidence (spectrograms, similarity) as a PNG")
    sp.add_argument("file", type=Path)
    sp.add_argument("--out", type=Path, help="the PNG to write (default: FILE-evidence.png here)")
    sp.add_argument("--start", type=float, default=0.0, metavar="S", help="the fragment from this second of "
                                                                          "the file (default 0)")
    common(sp)
    sp.set_defaults(func=cmd_explain)

    sp = sub.add_parser("check", help="compare every checksum of the store (each open checks a part); "
                                      "`index` repairs a damaged shard")
    sp.add_argument("--store", type=Path, help="store folder (default: $TAGMATCH_STORE or the user data dir)")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("apply", help="plan renames and retags from a scan; carry them out with --yes")
    sp.add_argument("scan", type=Path, help="scan JSON (from scan --json), with review decisions if any")
    sp.add_argument("--min-confidence", type=fraction, metavar="X",
                    help="also accept unreviewed matches with confidence >= X")
    sp.add_argument("--template", default=DEFAULT_TEMPLATE,
                    help=f"path template (default {DEFAULT_TEMPLATE!r}); fields: " + ", ".join(FIELDS))
    sp.add_argument("--dest", type=Path, help="put files under this folder (default: copy there); "
                                              "without it files are renamed in their own folder")
    how = sp.add_mutually_exclusive_group()
    how.add_argument("--copy", action="store_true", help="leave the originals alone (default with --dest)")
    how.add_argument("--move", action="store_true", help="move files (safe across disks)")
    sp.add_argument("--yes", action="store_true", help="carry the plan out (without it: dry run)")
    sp.add_argument("--id3v23", action="store_true", help="write ID3v2.3 instead of v2.4 (MP3, WAV, AIFF)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_apply)

    sp = sub.add_parser(
        "decide", help="record a review decision (accept, reject, edit tags or path) in a scan JSON",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Record a review decision in the scan JSON, as `tagmatch review` does, then print what "
                    "`tagmatch apply` will do with the file(s).",
        epilog="--accept, --reject and --clear start a new decision (earlier tag and path edits are dropped);\n"
               "--set, --unset and --path alone amend the current one (accepting the match if the file\n"
               "has no accepted decision). VALUE holds several values separated by '; ' (as plans print\n"
               "them; each tag once per command); an empty VALUE removes the tag like --unset.\n"
               "An unknown file (not in the library) is accepted only with tags or a path given here.\n"
               "examples:\n"
               "  tagmatch decide scan.json track07.mp3 --accept 1\n"
               "  tagmatch decide scan.json track07.mp3 --set 'artist=A; B' --unset genre --path 'Mix/Intro'")
    sp.add_argument("scan", type=Path, help="scan JSON (from scan --json); the decision is saved into it")
    sp.add_argument("files", type=Path, nargs="+", metavar="FILE", help="file(s) of the scan")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--accept", type=count, nargs="?", const=0, metavar="N",
                      help="accept the match (0, the default) or alternative N (1..3); put it after FILE")
    what.add_argument("--reject", action="store_true", help="never apply the file")
    what.add_argument("--clear", action="store_true", help="remove the decision (back to unreviewed)")
    sp.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a tag (repeatable); names: " + ", ".join(TAG_NAMES))
    sp.add_argument("--unset", action="append", default=[], metavar="NAME", help="remove a tag (repeatable)")
    sp.add_argument("--path", metavar="P", help="explicit new path, relative to apply's --dest or the file's "
                                                 "folder (extension kept); '' goes back to the template")
    sp.add_argument("--template", default=DEFAULT_TEMPLATE, help="template for the printed preview only")
    sp.add_argument("--dest", type=Path, help="--dest for the printed preview only (pass it to apply too)")
    sp.set_defaults(func=cmd_decide)

    sp = sub.add_parser("dupes", help="find files that hold the same recording; move the extra copies aside")
    sp.add_argument("dirs", type=Path, nargs="*", help="folders to search")
    sp.add_argument("--json", type=Path, help="write the groups as JSON to this file")
    sp.add_argument("--from", dest="from_json", type=Path, metavar="JSON",
                    help="act on a saved report (edit a group's keeper there to choose another)")
    sp.add_argument("--keep", action="append", default=[], metavar="PATH",
                    help="keep this file in its group (with --from: sets the report's keeper; --json saves it)")
    sp.add_argument("--against-library", action="store_true", help="also report files already in the reference store")
    sp.add_argument("--quarantine", type=Path, metavar="DIR",
                    help="move every group's extra copies here (relative paths kept); dry run without --yes")
    sp.add_argument("--yes", action="store_true", help="carry the moves out (journaled: `tagmatch undo` restores)")
    sp.add_argument("--cache", type=Path, help="embedding cache (default: the user cache dir)")
    common(sp)
    sp.set_defaults(func=cmd_dupes)

    sp = sub.add_parser("undo", help="restore the names and tags a run changed (default: the last run)")
    sp.add_argument("run", nargs="?", help="run id (or a unique prefix), see `tagmatch runs`")
    sp.add_argument("-q", "--quiet", action="store_true", help="only refusals and the summary")
    sp.set_defaults(func=cmd_undo)

    sp = sub.add_parser("review", help="review a scan (or a dupes report) in the terminal UI: accept, reject, "
                                       "apply, undo")
    sp.add_argument("scan", type=Path, help="scan JSON (from scan --json; decisions are saved into it) or "
                                            "dupes report (from dupes --json)")
    sp.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"path template (default {DEFAULT_TEMPLATE!r})")
    sp.add_argument("--dest", type=Path, help="copy accepted files under this folder (default: rename in place)")
    sp.set_defaults(func=cmd_review)

    sp = sub.add_parser("serve", help="the terminal UI in a browser (for a library on a NAS or a headless box)")
    sp.add_argument("scan", type=Path, nargs="?", help="open this scan or dupes report (default: the Home screen)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                        "only; anything else lets others change your files)")
    sp.add_argument("--port", type=positive, default=8000, help="port (default 8000)")
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("keys", help="list the terminal UI's keys by id (remap them in the config file)")
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("runs", help="list past runs (or the operations of one run)")
    sp.add_argument("run", nargs="?", help="show this run's operations")
    sp.set_defaults(func=cmd_runs)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not args.command:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):  # scripts and pipes get the help
                parser.print_help()
                return 0
            return run_tui()
        if args.command in ("index", "scan", "calibrate", "explain", "train") or (args.command == "dupes" and not args.from_json):  # they embed
            from tagmatch.threads import one_compute_thread

            one_compute_thread()
        return args.func(args)
    except TagmatchError as exc:
        err(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:  # `tagmatch keys | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
