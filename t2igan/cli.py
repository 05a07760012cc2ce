"""The ``t2igan`` command: data, train, sample, eval.

Errors caused by input (files, configs, captions) print as one ``error:`` line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2igan import T2IError


# ----------------------------------------------------------------------------- data
def cmd_data_synth(a) -> None:
    from t2igan.data.synth import write_synthflowers

    try:
        summary = write_synthflowers(a.out, n=a.n, size=a.size, seed=a.seed, workers=a.workers,
                                     overwrite=a.overwrite, progress=not a.quiet)
    except (ValueError, FileExistsError) as e:
        raise T2IError(str(e)) from None
    print(f"SynthFlowers written to {summary['path']}: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))


def cmd_data_check(a) -> None:
    """Detect the layout (StackGAN/AttnGAN pickles, COCO json, t2igan/plain folder), load every
    split, decode every image; each problem is printed as one line and the command fails."""
    import numpy as np

    from t2igan.data.birds import BoxedImages, detect_format, list_splits, load_any, load_image_box

    root = Path(a.dir)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    fmt = detect_format(root)
    if fmt is None:
        raise T2IError(f"{root}: no known dataset layout (no train/filenames.pickle, annotations/captions_*.json, "
                       "dataset.json, captions.jsonl or <image>.txt caption files)")
    print(f"{root}: {fmt} layout")
    problems: list[str] = []
    for s in list_splits(root, fmt):
        try:
            d = load_any(root, s)
        except T2IError as e:
            problems.append(f"{s}: {e}")
            continue
        boxes = d.boxes if isinstance(d, BoxedImages) and d.boxes else None
        bad = 0
        for i, p in enumerate(d.image_paths):  # decode every image once (raises on unreadable files)
            try:
                load_image_box(p, 8, boxes[i] if boxes else None)
            except T2IError as e:
                bad += 1
                if bad <= 5:
                    problems.append(f"{s}: {e}")
        if bad > 5:
            problems.append(f"{s}: ... and {bad - 5} more unreadable images")
        extra = [", attributes"] if d.attributes else []
        if d.meta.get("embeddings") is not None:
            extra.append(f", embeddings {list(d.meta['embeddings'].shape)}")
        if d.meta.get("class_ids") is not None:
            extra.append(f", {len(np.unique(d.meta['class_ids']))} classes")
        if boxes:
            extra.append(", bounding boxes")
        print(f"{s}: {len(d)} images, {sum(len(c) for c in d.captions)} captions" + "".join(extra))
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    if problems:
        raise T2IError(f"{root}: {len(problems)} problem(s) found")
    print(f"{root}: OK")


def cmd_data_emoji(a) -> None:
    from t2igan.data.emoji import build_emoji_dataset

    r = build_emoji_dataset(a.tgz, a.out, overwrite=a.overwrite)
    print(f"{r['name']} written to {r['path']}: {r['n']} images, {r['captions']} captions ("
          + ", ".join(f"{k} {v}" for k, v in r["splits"].items())
          + (f"; {r['skipped']} emoji without an image skipped" if r["skipped"] else "") + ")")


# ----------------------------------------------------------------------------- train
def build_training(cfg, resume: bool):
    """Return a Trainer for the run config (damsm | dfgan | evaluator handled by caller)."""
    import torch

    from t2igan.data.birds import load_any
    from t2igan.data.dataset import TextImageDataset
    from t2igan.data.text import Vocabulary
    from t2igan.train.trainer import Trainer

    data = load_any(cfg.data.root, cfg.data.split)  # folder, StackGAN/AttnGAN birds/flowers or COCO layout
    torch.manual_seed(cfg.train.seed)  # weight initialisation is part of the seeded run
    if cfg.task == "damsm":
        from t2igan.train.steps import DAMSMStep

        vocab_path = Path(cfg.train.out_dir) / "pipeline" / "vocab.json"
        if resume and vocab_path.is_file():
            vocab = Vocabulary.load(vocab_path)
        else:
            vocab = Vocabulary.build((c for caps in data.captions for c in caps), cfg.data.min_word_count)
        task = DAMSMStep(cfg, vocab)
    elif cfg.task == "dfgan":
        from t2igan.pipeline import load_text_encoder
        from t2igan.train.steps import DFGANStep

        enc, args, vocab, max_words = load_text_encoder(cfg.text_encoder)
        if max_words != cfg.data.max_words:
            raise T2IError(f"data.max_words={cfg.data.max_words} but the text encoder in {cfg.text_encoder} uses {max_words}")
        task = DFGANStep(cfg, vocab, enc, args)
    elif cfg.task in ("gan_int_cls", "stackgan", "stackganpp", "attngan", "mirrorgan", "stream"):
        from t2igan.train.classic import build_classic_step

        task, vocab = build_classic_step(cfg, len(data))
    else:
        raise T2IError(f"task {cfg.task!r} is not trained by the GAN trainer")
    dataset = TextImageDataset(data, vocab, cfg.data.image_size, cfg.data.max_words, cfg.data.crop,
                               progress=cfg.train.progress)
    captions = list(cfg.train.sample_captions) or default_sample_captions(cfg.data.root, data)
    return Trainer(cfg, task, dataset, captions, resume=resume)


def default_sample_captions(root, train_data, k: int = 8) -> list[str]:
    from t2igan.data.birds import load_any

    try:
        d = load_any(root, "test")
    except T2IError:
        d = train_data
    step = max(1, len(d) // k)
    return [d.captions[i][0] for i in range(0, len(d), step)][:k]


def cmd_train(a) -> None:
    from t2igan.config import load_config

    cfg = load_config(a.config, a.overrides)
    if cfg.task == "evaluator":
        from t2igan.eval.evaluator import train_evaluator

        out = train_evaluator(cfg)
        print(f"evaluator saved to {out}")
        return
    trainer = build_training(cfg, a.resume)
    s = trainer.fit()
    print(f"trained {cfg.task} to step {s['step']} ({s['stopped_by']}) in {s['wall_seconds']:.0f} s, "
          f"{s['images_per_s']:.1f} images/s on {s['device']}")
    print(f"run folder: {trainer.out}  (pipeline: {s['pipeline']}; samples: {s['samples']}; "
          f"TensorBoard: tensorboard --logdir {trainer.out / 'logs'})")


# ----------------------------------------------------------------------------- sample
def cmd_sample(a) -> None:
    from torchvision.utils import save_image

    from t2igan.pipeline import Pipeline

    if a.n < 1 or a.n > 64:
        raise T2IError(f"-n must be between 1 and 64, got {a.n}")
    pipe = Pipeline.from_pretrained(a.run, device=a.device)
    stages = pipe.generate(a.captions, seed=a.seed, n=a.n, truncation=a.truncation, return_all_stages=True)
    imgs, nrow, note = stages[-1], a.n, ""
    if a.all_stages and len(stages) > 1:  # each image's stages side by side, upsampled to the final size
        import torch
        import torch.nn.functional as F

        size = stages[-1].shape[-1]
        up = [F.interpolate(s, size=(size, size), mode="nearest") for s in stages]
        imgs, nrow = torch.stack(up, 1).flatten(0, 1), a.n * len(stages)
        note = f", stages {', '.join(str(s.shape[-1]) for s in stages)} side by side"
    if pipe.last_dropped_words:
        print(f"note: words not in the model's vocabulary were ignored: {', '.join(pipe.last_dropped_words)}", file=sys.stderr)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise T2IError(f"output must end in .png, .jpg or .webp: {out}")
    save_image(imgs, out, nrow=nrow, padding=2 if imgs.size(0) > 1 else 0)
    print(f"wrote {stages[-1].size(0)} image(s) ({len(a.captions)} caption(s) x {a.n}, seed {a.seed}{note}) to {out}")


# ----------------------------------------------------------------------------- eval
def cmd_eval(a) -> None:
    from t2igan.eval.run import evaluate_run, format_table

    splits = tuple(s for s in a.splits.split(",") if s)
    res = evaluate_run(a.run, a.evaluator, n_samples=a.n_samples, splits=splits, seed=a.seed,
                       batch_size=a.batch_size, device=a.device, data_root=a.data_root)
    print(format_table(res))
    print(f"metrics written to {Path(a.run) / 'eval' / 'metrics.json'}")


# ----------------------------------------------------------------------------- demo
def cmd_demo(a) -> None:
    """The main job on built-in defaults: SynthFlowers -> DAMSM -> DF-GAN -> sample images."""
    from t2igan.config import load_config
    from t2igan.data.synth import write_synthflowers
    from t2igan.pipeline import Pipeline

    out = Path(a.out)
    data = out / "synthflowers64"
    if not (data / "dataset.json").is_file():
        print(f"[1/4] writing SynthFlowers ({a.n} images, 64x64) to {data}")
        write_synthflowers(data, n=a.n, size=64, seed=0, progress=True)
    else:
        print(f"[1/4] using SynthFlowers at {data}")
    stages = [
        ("damsm", out / "damsm", [f"train.max_steps={a.damsm_steps}", "train.batch_size=32", "image.width=16",
                                 "train.threads=0", "train.ckpt_every=0"]),
        ("dfgan", out / "dfgan", [f"train.max_minutes={a.minutes}", "train.max_steps=1000000", "model.ngf=16",
                                 "model.ndf=16", f"text_encoder={out / 'damsm'}", "train.sample_every=100",
                                 "train.ckpt_every=200"]),
    ]
    for n, (task, run, extra) in enumerate(stages, 2):
        if (run / "pipeline" / "model_index.json").is_file():
            print(f"[{n}/4] {task}: using the trained run in {run}")
            continue
        print(f"[{n}/4] training {task} -> {run}")
        cfg = load_config(None, [f"data.root={data}", f"train.out_dir={run}", *extra], task=task)
        s = build_training(cfg, resume=False).fit()
        print(f"      {s['step']} steps in {s['wall_seconds']:.0f} s ({s['images_per_s']:.1f} images/s)")
    pipe = Pipeline.from_pretrained(out / "dfgan")
    caps = ["this flower has red petals and a yellow center", "a flower with thin blue petals",
            "the petals of this flower are white and the middle is black", "a large orange flower with five round petals"]
    from torchvision.utils import save_image

    path = out / "samples.png"
    save_image(pipe.generate(caps, seed=0, n=4), path, nrow=4)
    (out / "samples.txt").write_text("one row per caption:\n" + "\n".join(caps) + "\n", encoding="utf-8")
    print(f"[4/4] samples for {len(caps)} captions (one row each) written to {path}")
    print(f"      training grids: {out / 'dfgan' / 'samples'}; model: {out / 'dfgan' / 'pipeline'}")
    print(f"      try: t2igan sample {out / 'dfgan'} \"this flower has pink petals\" -n 4 -o pink.png")


# ----------------------------------------------------------------------------- serve
def cmd_serve(a) -> None:
    from t2igan.serve.options import main as serve_main

    serve_main(a)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t2igan", description="Text-to-image synthesis with GANs.")
    sub = p.add_subparsers(dest="command", required=True)

    dm = sub.add_parser("demo", help="the main job on built-in defaults: SynthFlowers, DAMSM, DF-GAN, samples")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--n", type=int, default=3000, help="SynthFlowers images to write")
    dm.add_argument("--damsm-steps", type=int, default=150)
    dm.add_argument("--minutes", type=float, default=4.0, help="DF-GAN training time")
    dm.set_defaults(func=cmd_demo)

    d = sub.add_parser("data", help="make or check datasets").add_subparsers(dest="data_command", required=True)
    s = d.add_parser("synth", help="write SynthFlowers (the built-in procedural dataset)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n", type=int, default=10000, help="number of images")
    s.add_argument("--size", type=int, default=64, help="image side, 32..256")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_data_synth)
    c = d.add_parser("check", help="validate a dataset folder: folder, StackGAN/AttnGAN birds/flowers, COCO")
    c.add_argument("dir")
    c.set_defaults(func=cmd_data_check)
    em = d.add_parser("emoji", help="build an emoji dataset from an emoji-datasource-<set> npm tarball")
    em.add_argument("--from", dest="tgz", required=True, metavar="PACKAGE.tgz",
                    help="e.g. emoji-datasource-google-16.0.0.tgz from `npm pack emoji-datasource-google@16.0.0`")
    em.add_argument("--out", required=True, help="output folder")
    em.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    em.set_defaults(func=cmd_data_emoji)

    t = sub.add_parser("train", help="train from a YAML config, e.g. configs/dfgan_synth64.yaml train.batch_size=32")
    t.add_argument("config", help="YAML run config")
    t.add_argument("overrides", nargs="*", help="dotted overrides key.path=value")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in train.out_dir")
    t.set_defaults(func=cmd_train)

    sm = sub.add_parser("sample", help="generate images for captions")
    sm.add_argument("run", help="run folder or pipeline folder")
    sm.add_argument("captions", nargs="+")
    sm.add_argument("-o", "--output", default="samples.png")
    sm.add_argument("-n", type=int, default=1, help="images per caption")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--truncation", type=float, default=None, help="clamp noise to [-t, t]")
    sm.add_argument("--device", default="cpu")
    sm.add_argument("--all-stages", action="store_true",
                    help="multi-stage models (StackGAN, StackGAN++, AttnGAN, MirrorGAN): every stage side by side")
    sm.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="attribute accuracy and FID/KID in the evaluator space (SynthFlowers)")
    e.add_argument("run", help="run folder")
    e.add_argument("--evaluator", default="runs/evaluator_synth64", help="attribute evaluator folder")
    e.add_argument("--n-samples", type=int, default=5000)
    e.add_argument("--splits", default="test,novel")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--device", default="auto")
    e.add_argument("--data-root", default=None, help="dataset folder (default: the run's data.root)")
    e.set_defaults(func=cmd_eval)

    from t2igan.serve.options import add_arguments as add_serve_arguments

    sv = sub.add_parser("serve", help="web page + HTTP API (FastAPI) for one or more trained models")
    add_serve_arguments(sv)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except T2IError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
