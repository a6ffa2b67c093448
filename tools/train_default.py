"""Train the shipped default model on the development corpus (`make train-default`).

Resumable: state is checkpointed under ~/.cache/tagmatch/ every 100 steps; re-running continues.
Songs held out by `tagmatch.train.devcorpus` (the benchmark's unknowns) are never trained on.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from tagmatch.audio.augment import AugmentConfig
from tagmatch.train.devcorpus import DEFAULT_ROOT, corpus_available, load_corpus
from tagmatch.model.encoder import ModelConfig
from tagmatch.train.loop import TrainConfig, decode_folder, train


def augment_config(overrides: list[str]) -> AugmentConfig:
    """`FIELD=VALUE` strings -> an AugmentConfig; tuples are written `lo,hi`."""
    changes = {}
    for item in overrides:
        name, _, value = item.partition("=")
        default = getattr(AugmentConfig(), name, None)
        if default is None or not value:
            raise SystemExit(f"--augment {item!r}: expected FIELD=VALUE with FIELD one of {list(asdict(AugmentConfig()))}")
        changes[name] = tuple(float(v) for v in value.split(",")) if isinstance(default, tuple) else type(default)(value)
    return replace(AugmentConfig(), **changes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--out", type=Path, default=Path("tagmatch/default_model/model.joblib"))
    ap.add_argument("--checkpoint", type=Path, default=Path.home() / ".cache/tagmatch/train-default.ckpt")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--loss", default="ntxent", choices=["ntxent", "pair-bce"])
    ap.add_argument("--init-from", type=Path, help="start from this model's weights (fine-tune)")
    ap.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    ap.add_argument("--augment", action="append", default=[], metavar="FIELD=VALUE",
                    help="override an AugmentConfig field, e.g. snr_db=-6,15 or reverb_p=0.8 (repeatable)")
    ap.add_argument("--same-source-share", type=float, default=0.0,
                    help="hard negatives: this share of each batch from one source package's tracks")
    ap.add_argument("--teacher", type=Path, help="distil this model into the one trained (see --distill-weight)")
    ap.add_argument("--distill-weight", type=float, default=1.0, help="with --teacher: weight of the distillation term")
    ap.add_argument("--channels", help="encoder channels, e.g. 8,16,32,64,64 (default: ModelConfig's)")
    ap.add_argument("--hidden", type=int, help="encoder hidden units (default: ModelConfig's)")
    ap.add_argument("--kind", choices=["window", "shared"], help="encoder kind (default: ModelConfig's; see tagmatch/model/encoder.py)")
    ap.add_argument("--batch-pairs", type=int, default=TrainConfig.batch_pairs)
    args = ap.parse_args(argv)
    if not corpus_available(args.corpus):
        print(f"dev corpus not found at {args.corpus}: run ../shared/corpus/fetch-dev-corpus", file=sys.stderr)
        return 1
    corpus = load_corpus(args.corpus)
    t0 = time.time()
    decoded: list[Path] = []  # the files that decoded, in the order of `music`
    music = decode_folder([t.path for t in corpus.known], 8000,
                          on_progress=lambda p: decoded.append(Path(p.item)) if p.error is None else None)
    noise = decode_folder(corpus.train_noise, 8000)
    hours = sum(len(m) for m in music) / 8000 / 3600
    print(f"decoded {len(music)} tracks ({hours:.1f} h) and {len(noise)} noise recordings in {time.time() - t0:.0f} s", flush=True)
    model_cfg = ModelConfig()
    if args.channels:
        model_cfg = replace(model_cfg, channels=tuple(int(c) for c in args.channels.split(",")))
    if args.hidden:
        model_cfg = replace(model_cfg, hidden=args.hidden)
    if args.kind:
        model_cfg = replace(model_cfg, kind=args.kind)
    cfg = TrainConfig(steps=args.steps, loss=args.loss, learning_rate=args.learning_rate, batch_pairs=args.batch_pairs,
                      augment=augment_config(args.augment), same_source_share=args.same_source_share,
                      model=model_cfg, distill_weight=args.distill_weight if args.teacher else 0.0)
    # a track's source: its Debian package folder (one game's soundtrack)
    sources = [p.resolve().relative_to(corpus.root.resolve()).parts[0] for p in decoded]

    def progress(p):
        if p.done % 10 == 0 or p.done == p.total:
            print(f"step {p.done}/{p.total} {p.info} [{time.strftime('%H:%M:%S')}]", flush=True)

    meta = {"data": f"dev corpus: {len(music)} tracks, {hours:.1f} h; {len(noise)} ambience recordings"}
    if args.init_from:
        from tagmatch.model.modelfile import load_model
        start = load_model(args.init_from)
        # Its reference hop may have been changed after training (tools/fit_projection.py); the
        # rest of the front end must match, and _init_encoder checks that.
        cfg = replace(cfg, features=replace(cfg.features, ref_hop_frames=start.feature_config.ref_hop_frames))
        meta["init_from"] = {"model_id": start.model_id, "steps": start.meta.get("steps"),
                             "init_from": start.meta.get("init_from")}
    summary = train(music, args.out, cfg, noise=noise, checkpoint=args.checkpoint, progress=progress, meta=meta,
                    init_from=args.init_from, sources=sources, teacher=args.teacher)
    print(f"saved {args.out} (model id {summary['model_id']}) after {summary['steps']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
