"""Our DF-GAN training step against the official implementation (tobran/DF-GAN), same CPU.

    python benchmarks/official_dfgan.py PATH/TO/DF-GAN [--ngf 32 --batch 32 --size 64 --threads 1]

PATH is a user's checkout of https://github.com/tobran/DF-GAN (the folder holding
``code/models/GAN.py``). Nothing of it is copied into this project: the script imports
``NetG``/``NetD``/``NetC`` from ``code/models/GAN.py`` and calls the official training loop
``train()`` of ``code/lib/modules.py`` itself (D step with MA-GP, then G step), feeding it
the same batches as our ``DFGANStep``. ``lib/modules.py`` imports scipy, nltk, pandas,
easydict and python-dateutil at module level; install them where the script runs.

Two shims, both outside the official functions: its ``prepare_data`` (which runs the
text encoder) is replaced by our frozen DAMSM text encoder on the same tokens, so both
sides spend the same time on text; and on a machine without CUDA, ``Tensor.cuda`` is made
the identity while the official loop runs, because its ``MA_GP`` builds ``grad_outputs``
with ``.cuda()``.

Measured:
- parity: the official generator loads our generator's state dict by name (strict), and
  both give the same image for the same noise and sentence (max abs difference); then
  both training steps run from the same initial weights on the same batches and seed, and
  every parameter is compared after ``--parity-steps`` steps;
- throughput: training images/s of each, in alternating rounds (ours, theirs, ours, ...)
  so that load on the shared machine hits both alike; the ratio is the median of the
  per-round ratios. Our side runs in its reference configuration and, separately, in each
  ``--variant NAME=OVERRIDE[,OVERRIDE...]`` (fast-path switches, e.g.
  ``fused=train.fused_upsample=true``);
- accuracy: one SGD(lr=1) step of each of our variants in float32 against our reference
  path run in float64 on the same float32 inputs and noise (relative gradient error per
  tensor). A fast path that computes the same function should be as close to float64 as the
  reference path is; a larger error means its float32 arithmetic is worse, not different.
  Measured on two batches: the benchmark's own, whose sentences come from a random-weight
  text encoder and are nearly parallel (so are the random discriminator's features of the
  random images), which makes the matched and mismatched D terms nearly cancel and the
  gradient ill-conditioned; and the same batch with distinct sentences (independent normal
  vectors in place of the encoder's).

Result: ``benchmarks/results/official_dfgan.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from machine import describe  # benchmarks/machine.py (run as a script from the repo root)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2igan.config import load_config  # noqa: E402
from t2igan.data.dataset import Batch  # noqa: E402
from t2igan.data.text import Vocabulary  # noqa: E402
from t2igan.text.damsm import TextEncoder  # noqa: E402
from t2igan.train import fast  # noqa: E402
from t2igan.families.dfgan import DFGANStep  # noqa: E402
from t2igan.text.conditioning import Conditioning  # noqa: E402
from t2igan.text.damsm_encoder import DAMSMCaptionEncoder  # noqa: E402


def import_official(path: Path):
    code = path / "code" if (path / "code" / "models" / "GAN.py").is_file() else path
    if not (code / "models" / "GAN.py").is_file() or not (code / "lib" / "modules.py").is_file():
        raise SystemExit(f"error: {path} is not a DF-GAN checkout (no code/models/GAN.py and code/lib/modules.py)")
    sys.path.insert(0, str(code))
    try:
        gan = importlib.import_module("models.GAN")
        modules = importlib.import_module("lib.modules")
    except ImportError as e:
        raise SystemExit(f"error: importing the official code failed ({e}); its lib/modules.py needs "
                         "`pip install scipy nltk pandas easydict python-dateutil`") from None
    finally:
        sys.path.remove(str(code))
    return gan, modules, code


@contextlib.contextmanager
def cuda_as_identity(active: bool):
    """The official MA_GP calls ``torch.ones(...).cuda()``; on a CPU-only machine make that a no-op."""
    if not active:
        yield
        return
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


def make_batches(n: int, B: int, size: int, ntoken: int, T: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(3, T + 1, (B,), generator=g)
        tokens = torch.randint(1, ntoken, (B, T), generator=g) * (torch.arange(T)[None] < lengths[:, None])
        out.append({"images": torch.rand(B, 3, size, size, generator=g) * 2 - 1, "tokens": tokens, "lengths": lengths})
    return out


def our_batch(b: dict, channels_last: bool = False) -> Batch:
    x = b["images"].clone()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(images=[x], tokens=b["tokens"], lengths=b["lengths"], wrong_tokens=b["tokens"],
                 wrong_lengths=b["lengths"], index=torch.arange(b["images"].size(0)))


def dfgan_text(cfg, vocab, enc, enc_args) -> Conditioning:
    """The DAMSM text side of our DFGANStep: the batch's tokens through ``enc``."""
    return Conditioning(DAMSMCaptionEncoder(enc, vocab, cfg.data.max_words, enc_args), [], "")


class Ours:
    def __init__(self, cfg, vocab, enc, enc_args, init: dict[str, dict]):
        self.step = DFGANStep(cfg, dfgan_text(cfg, vocab, enc, enc_args), vocab)
        for name, m in self.step.modules.items():
            m.load_state_dict(init[name])
        fast.prepare_step(self.step, cfg.train, torch.device("cpu"))  # the trainer's fast-path switches
        self.channels_last = cfg.train.channels_last
        self.k = 0

    def run(self, batches: list[dict]) -> None:
        for m in self.step.modules.values():
            m.train()
        for b in batches:
            self.step.train_step(our_batch(b, self.channels_last), self.k)
            self.k += 1

    def sgd(self) -> "Ours":
        """Plain SGD(lr=1): one step's update is minus the gradient."""
        self.step.optimizers = {"G": torch.optim.SGD(self.step.g_params, lr=1.0),
                                "D": torch.optim.SGD(self.step.d_params, lr=1.0)}
        return self

    def params(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v.detach().clone() for n, m in self.step.modules.items() for k, v in m.state_dict().items()}


class DistinctSentences(nn.Module):
    """Text-encoder stand-in: an independent normal sentence vector per caption row."""

    def __init__(self, nef: int):
        super().__init__()
        self.nef = nef

    def forward(self, tokens, lengths):
        g = torch.Generator().manual_seed(int(tokens.sum()))
        sent = torch.randn(tokens.size(0), self.nef, generator=g).to(torch.get_default_dtype())
        return None, sent, None


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    x = nn.functional.normalize(x.double().flatten(1), dim=1)
    c = x @ x.t()
    n = c.size(0)
    return ((c.sum() - c.diagonal().sum()) / (n * (n - 1))).item()


class Theirs:
    def __init__(self, gan, modules, args, enc, init: dict[str, dict]):
        self.modules, self.enc, self.args = modules, enc, args
        self.netG = gan.NetG(args.ngf, args.z_dim, args.cond_dim, args.imsize, 3)
        self.netD = gan.NetD(args.ngf, args.imsize, 3)
        self.netC = gan.NetC(args.ngf, args.cond_dim)
        self.netG.load_state_dict(init["netG"], strict=True)  # our names are the official names
        self.netD.load_state_dict(init["netD"], strict=True)
        self.netC.load_state_dict(init["netC"], strict=True)
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=0.0001, betas=(0.0, 0.9))  # as code/src/train.py
        self.optD = torch.optim.Adam(list(self.netD.parameters()) + list(self.netC.parameters()), lr=0.0004, betas=(0.0, 0.9))

    def prepare_data(self, data, text_encoder):
        with torch.no_grad():
            words, sent, _ = self.enc(data["tokens"], data["lengths"])
        return data["images"].clone(), sent, words, None

    def run(self, batches: list[dict]) -> None:
        self.modules.prepare_data = self.prepare_data  # the text encoder: ours, for both sides
        with cuda_as_identity(not torch.cuda.is_available()):
            self.modules.train(batches, self.netG, self.netD, self.netC, self.enc, self.optG, self.optD, self.args)

    def params(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v.detach().clone() for n, m in (("netG", self.netG), ("netD", self.netD), ("netC", self.netC))
                for k, v in m.state_dict().items()}


@contextlib.contextmanager
def float64_with_float32_draws():
    """Default dtype float64, but ``torch.randn`` draws float32 numbers (then cast), so that a
    float64 run of the step sees the same noise as the float32 runs."""
    saved_randn, saved_dtype = torch.randn, torch.get_default_dtype()

    def randn(*size, dtype=None, **kw):
        return saved_randn(*size, dtype=torch.float32, **kw).to(dtype or torch.get_default_dtype())

    torch.randn = randn
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.randn = saved_randn
        torch.set_default_dtype(saved_dtype)


def sgd_update(runner: Ours, init: dict[str, dict], batch: dict, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Parameter change of one SGD(lr=1) step (= minus the gradient), in float64."""
    for m in runner.step.modules.values():
        m.to(dtype)
    runner.step.text_encoder.to(dtype)
    runner.sgd()
    b = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    torch.manual_seed(3)
    ctx = float64_with_float32_draws() if dtype == torch.float64 else contextlib.nullcontext()
    with ctx:
        runner.run([b])
    p0 = {f"{m}.{k}": v.double() for m, sd in init.items() for k, v in sd.items()}
    return {k: v.double() - p0[k] for k, v in runner.params().items()}


def relative_errors(update: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> dict:
    rel = {k: ((update[k] - truth[k]).norm() / truth[k].norm()).item() for k in truth if truth[k].norm() > 0}
    worst = max(rel, key=rel.get)
    return {"median_rel_gradient_error": statistics.median(rel.values()),
            "max_rel_gradient_error": rel[worst], "worst_param": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("official", type=Path, help="checkout of github.com/tobran/DF-GAN")
    ap.add_argument("--ngf", type=int, default=32, help="ngf = ndf (official: 32)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="training steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parity-steps", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE...]",
                    help="one of our fast-path variants (repeatable; default: fused_upsample, + channels_last, + compile)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "official_dfgan.json")
    a = ap.parse_args()
    specs = a.variant or ["fused_upsample=train.fused_upsample=true",
                          "fused_upsample+channels_last=train.fused_upsample=true,train.channels_last=true",
                          "fused_upsample+channels_last+compile=train.fused_upsample=true,train.channels_last=true,train.compile=true"]
    variants = {}
    for spec in specs:
        name, _, ov = spec.partition("=")
        if not name or not ov:
            raise SystemExit(f"error: --variant {spec!r} is not NAME=OVERRIDE[,OVERRIDE...]")
        variants[name] = ov.split(",")
    torch.set_num_threads(a.threads)
    gan, modules, code = import_official(a.official)
    modules.tqdm = functools.partial(modules.tqdm, disable=True)  # its loop draws a progress bar per call

    ntoken, T, nef = 200, 18, 256
    torch.manual_seed(0)
    enc_args = dict(ntoken=ntoken, ninput=300, nhidden=nef, nlayers=1, drop_prob=0.5)
    enc = TextEncoder(**enc_args).eval().requires_grad_(False)
    vocab = Vocabulary.build([" ".join(f"w{i}" for i in range(ntoken - 2))])

    def cfg_with(extra):
        o = {"data.image_size": a.size, "model.ngf": a.ngf, "model.ndf": a.ngf, "model.nz": 100,
             "train.batch_size": a.batch, "text_encoder": "unused"}
        return load_config(None, [f"{k}={v}" for k, v in o.items()] + list(extra), task="dfgan")

    cfg = cfg_with([])
    init_step = DFGANStep(cfg, dfgan_text(cfg, vocab, enc, enc_args), vocab)
    init = {n: copy.deepcopy(m.state_dict()) for n, m in init_step.modules.items()}
    args = SimpleNamespace(batch_size=a.batch, device=torch.device("cpu"), current_epoch=0, max_epoch=1, z_dim=100,
                           multi_gpus=False, ngf=a.ngf, imsize=a.size, cond_dim=nef)

    # ---------------- parity: generator forward
    theirs = Theirs(gan, modules, args, enc, init)
    g = torch.Generator().manual_seed(1)
    noise, sent = torch.randn(8, 100, generator=g), torch.randn(8, nef, generator=g)
    ours_g = init_step.netG.eval()
    with torch.no_grad():
        # weights as after some training: the identity-initialised affines would hide differences
        for p in ours_g.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        theirs.netG.load_state_dict(ours_g.state_dict(), strict=True)
        theirs.netG.eval()
        gen_diff = (ours_g(noise, sent) - theirs.netG(noise, sent)).abs().max().item()
    theirs.netG.load_state_dict(init["netG"])

    # ---------------- parity: training steps from the same weights, batches and seed
    # (1) one step with SGD(lr=1) on both sides: the update is the gradient itself, compared per
    #     tensor as |ours - official| / |official| (Frobenius norms);
    # (2) --parity-steps steps with the official Adam settings: max abs parameter difference
    #     (Adam divides by the gradient RMS, so elements whose gradients nearly cancel turn
    #     float rounding into differences up to ~lr; the figure is reported, not asserted).
    batches = make_batches(a.parity_steps, a.batch, a.size, ntoken, T, seed=2)
    parity = {}
    for label, extra in (("reference", []), *variants.items()):
        rec = {}
        for opt in ("sgd_lr1_one_step", "adam_official"):
            ours = Ours(cfg_with(extra), vocab, enc, enc_args, init)
            theirs = Theirs(gan, modules, args, enc, init)
            n = 1 if opt.startswith("sgd") else a.parity_steps
            if opt.startswith("sgd"):
                ours.sgd()
                theirs.optG = torch.optim.SGD(theirs.netG.parameters(), lr=1.0)
                theirs.optD = torch.optim.SGD(list(theirs.netD.parameters()) + list(theirs.netC.parameters()), lr=1.0)
            torch.manual_seed(3)
            ours.run(batches[:n])
            torch.manual_seed(3)
            theirs.run(batches[:n])
            po, pt = ours.params(), theirs.params()
            assert po.keys() == pt.keys(), sorted(set(po) ^ set(pt))[:5]
            if opt.startswith("sgd"):
                p0 = {f"{m}.{k}": v for m, sd in init.items() for k, v in sd.items()}
                rel = {k: ((po[k] - pt[k]).norm() / (pt[k] - p0[k]).norm().clamp(min=1e-30)).item()
                       for k in po if (pt[k] - p0[k]).norm() > 0}
                worst = max(rel, key=rel.get)
                rec[opt] = {"max_rel_gradient_diff": rel[worst], "worst_param": worst,
                            "median_rel_gradient_diff": statistics.median(rel.values())}
            else:
                diff = {k: (po[k] - pt[k]).abs().max().item() for k in po}
                worst = max(diff, key=diff.get)
                rec[opt] = {"steps": n, "max_abs_param_diff": diff[worst], "worst_param": worst,
                            "lr_d": 0.0004}
        parity[label] = rec
        print(f"parity ({label}): {json.dumps(rec)}", flush=True)

    # ---------------- accuracy: float32 paths against our reference path in float64
    with torch.no_grad():
        _, sent0, _ = enc(batches[0]["tokens"], batches[0]["lengths"])
        feats0 = init_step.netD(batches[0]["images"])
    accuracy = {"conditioning": {
        "benchmark_batch_sentence_mean_pairwise_cosine": mean_pairwise_cosine(sent0),
        "benchmark_batch_real_feature_mean_pairwise_cosine": mean_pairwise_cosine(feats0)}}
    for batch_label, text in (("benchmark_batch", enc), ("distinct_sentences", DistinctSentences(nef))):
        truth = sgd_update(Ours(cfg, vocab, copy.deepcopy(text), enc_args, init), init, batches[0], torch.float64)
        rec = {}
        for label, extra in (("reference", []), *variants.items()):
            upd = sgd_update(Ours(cfg_with(extra), vocab, copy.deepcopy(text), enc_args, init), init, batches[0])
            rec[label] = relative_errors(upd, truth)
            print(f"float32 vs float64 ({batch_label}, {label}): {json.dumps(rec[label])}", flush=True)
        accuracy[batch_label] = rec

    # ---------------- throughput
    batches = make_batches(a.steps, a.batch, a.size, ntoken, T, seed=4)
    runners = {"official": Theirs(gan, modules, args, enc, init),
               "ours": Ours(cfg, vocab, enc, enc_args, init),
               **{f"ours_{k}": Ours(cfg_with(v), vocab, enc, enc_args, init) for k, v in variants.items()}}
    for r in runners.values():  # warm-up: one untimed round (allocator, oneDNN primitives, compilation)
        r.run(batches)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(a.rounds):
        for k, r in runners.items():
            t = time.perf_counter()
            r.run(batches)
            times[k].append(time.perf_counter() - t)
    ips = {k: [a.steps * a.batch / t for t in v] for k, v in times.items()}
    ratio = {k: statistics.median(o / t for o, t in zip(ips[k], ips["official"])) for k in runners if k != "official"}
    result = {
        "benchmark": "DF-GAN training step: t2igan vs official tobran/DF-GAN (code/lib/modules.py train())",
        "official_checkout": str(a.official), "machine": describe(), "threads": torch.get_num_threads(),
        "settings": {"image_size": a.size, "ngf": a.ngf, "ndf": a.ngf, "nz": 100, "cond_dim": nef, "batch_size": a.batch,
                     "steps_per_round": a.steps, "rounds": a.rounds, "variants": variants,
                     "text_encoder": "t2igan DAMSM TextEncoder (random weights) on both sides"},
        "images_per_s_median": {k: round(statistics.median(v), 2) for k, v in ips.items()},
        "images_per_s_rounds": {k: [round(x, 2) for x in v] for k, v in ips.items()},
        "ratio_ours_over_official": {k: round(v, 3) for k, v in ratio.items()},
        "target_ratio": 1.5,
        "generator_same_weights_max_abs_diff": gen_diff,
        "training_parity": parity,
        "float32_vs_float64_one_sgd_step": accuracy,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("images_per_s_median", "ratio_ours_over_official",
                                              "generator_same_weights_max_abs_diff")}, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
