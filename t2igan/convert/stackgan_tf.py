"""TensorFlow StackGAN checkpoints (hanzhanggit/StackGAN, TF 0.12 + prettytensor) -> a t2igan
``stackgan_tf_stage1`` / ``stackgan_tf_stage2`` model folder, with the char-CNN-RNN text path.

Files (recognised by content, any order)::

    MODEL.ckpt             a tf.train.Saver checkpoint of stageI/ or stageII/ run_exp.py (the release:
                           birds_model_164000.ckpt, flowers_model_130000.ckpt: V1, one file), or a
                           V2 bundle given by its .index (the .data-* beside it). Read without TensorFlow
                           (t2igan.convert.tf_checkpoint).
    TEXT (one of)          Reed's char-CNN-RNN .t7, or DATA_DIR/{train,test}/char-CNN-RNN-embeddings.pickle
                           (as for StackGAN-Pytorch: t2igan.convert.stackgan)

The variables are named by prettytensor's method scopes inside ``g_net/`` (stage I) and
``hr_g_net/`` (stage II): ``SCOPE/custom_fully_connected[_k]/Linear/{Matrix,bias}``,
``SCOPE/custom_conv2d[_k]/custom_conv2d[_k]/w`` (HWIO), ``SCOPE/{conv,fc}_batch_norm[_k]/
<bn scope>/{mean,variance,gamma,beta}`` (these names were read off the official graph built with
prettytensor 0.7.4). The table below keys on the outer method scope and accepts any inner scope
name (older prettytensor releases name the inner scope ``conv2d`` / ``batch_norm``).
Training state is listed as ignored and not read: the discriminators (``d_net/``, ``hr_d_net/``),
Adam slots (``.../Adam``, ``.../Adam_1`` ...), the zero-debias copies of the moving averages
(``.../biased``, ``.../local_step``), ``beta1_power*``, ``beta2_power*``, ``global_step``.

Configuration from the shapes: ``g_net/custom_fully_connected/Linear/Matrix [t_dim, 2 ef_dim]``,
``g_net/custom_fully_connected_1/Linear/Matrix [ef_dim + nz, s16^2 * 8 gf_dim]``,
``g_net/custom_conv2d/.../w [1, 1, 8 gf_dim, 2 gf_dim]``; stage II ``hr_g_net/custom_conv2d/.../w
[3, 3, 3, gf_dim]``, its ``custom_fully_connected`` (ef_dim) and its ``custom_conv2d`` count (9 + 2
r_num; official r_num 4). ``--set stage=1`` takes only the stage-I generator of a stage-II file.

Official sampling draws z ~ N(0, 1) and the condition noise with ``tf.truncated_normal`` (redrawn
beyond 2 sigma) for ``g_net`` then ``hr_g_net``; ``Pipeline.latents`` draws z then both eps
blocks from N(0, 1) (the networks are exact: given the same z and eps the images are the same).
"""
from __future__ import annotations

import math
import re

import torch

from t2igan import T2IError
from t2igan.convert.base import (
    Converted,
    Converter,
    KeyTable,
    Report,
    TF_STEP_CKPT,
    Rule,
    Source,
    assign,
    choice,
    take_options,
)
from t2igan.convert.stackgan import TEXT_OPTIONS, TEXT_USAGE, char_text, is_text
from t2igan.models.stackgan_tf import StageIGenerator, StageIIGenerator

WHAT1 = "a TensorFlow StackGAN stage-I generator (g_net/custom_fully_connected*, custom_conv2d*, *batch_norm*)"
WHAT2 = "a TensorFlow StackGAN stage-II generator (g_net/* and hr_g_net/*)"
USAGE = f"MODEL.ckpt (or a V2 MODEL.ckpt.index), and {TEXT_USAGE}"
OPTIONS = {**TEXT_OPTIONS, "stage": (choice("auto", "1", "2"), "auto",
                                     "which generator to take: auto (the last stage in the file), 1 or 2")}

# training state of the official checkpoints: listed as ignored, never read
IGNORE = (r"(?:d_net|hr_d_net)/.*", r".*/Adam(?:_\d+)?", r".*/(?:biased|local_step)", r"beta[12]_power(?:_\d+)?",
          r"global_step")


def hwio_to_oihw(t: torch.Tensor) -> torch.Tensor:  # TF conv kernel [kh, kw, in, out] -> torch [out, in, kh, kw]
    return t.permute(3, 2, 0, 1)


def matrix_to_weight(t: torch.Tensor) -> torch.Tensor:  # custom_fully_connected Matrix [in, out] -> Linear [out, in]
    return t.t()


def rules(scope: str, target: str) -> list[Rule]:
    """The declared table of one generator scope (``g_net`` / ``hr_g_net``) onto the module prefix ``target``."""
    p = re.escape(scope)
    return [
        Rule(rf"{p}/(custom_fully_connected(?:_\d+)?)/Linear/Matrix", rf"{target}\1.weight", matrix_to_weight),
        Rule(rf"{p}/(custom_fully_connected(?:_\d+)?)/Linear/bias", rf"{target}\1.bias"),
        Rule(rf"{p}/(custom_conv2d(?:_\d+)?)/[^/]+/w", rf"{target}\1.weight", hwio_to_oihw),
        Rule(rf"{p}/((?:conv|fc)_batch_norm(?:_\d+)?)/[^/]+/(mean|variance|gamma|beta)", rf"{target}\1.\2"),
    ]


def is_checkpoint(s: Source) -> bool:
    return s.kind == "raw" and (s.path.suffix.lower() in (".ckpt", ".index") or ".data-" in s.path.name
                                or bool(TF_STEP_CKPT.search(s.path.name)))


def open_checkpoint(s: Source):
    from t2igan.convert.tf_checkpoint import TFCheckpoint

    p = s.path
    if ".data-" in p.name:  # a V2 data shard: its bundle is PREFIX.index
        p = p.with_name(p.name.split(".data-")[0])
    return TFCheckpoint(p)


def _shape(shapes: dict, pattern: str, name: str, what: str, ndim: int) -> tuple[int, ...]:
    rx = re.compile(pattern)
    hits = [k for k in shapes if rx.fullmatch(k)]
    if len(hits) != 1:
        raise T2IError(f"{name}: not {what} (no variable matching {pattern!r})" if not hits else
                       f"{name}: {len(hits)} variables match {pattern!r} ({', '.join(hits[:2])})")
    shape = shapes[hits[0]]
    if len(shape) != ndim:
        raise T2IError(f"{name}: '{hits[0]}' has shape {shape}, {what} has a {ndim}-d tensor there")
    return shape


def stage1_config(shapes: dict, name: str) -> dict:
    t_dim, two_ef = _shape(shapes, r"g_net/custom_fully_connected/Linear/Matrix", name, WHAT1, 2)
    fc_in, fc_out = _shape(shapes, r"g_net/custom_fully_connected_1/Linear/Matrix", name, WHAT1, 2)
    k = _shape(shapes, r"g_net/custom_conv2d/[^/]+/w", name, WHAT1, 4)
    gf8, gf = k[2], k[3] // 2
    s16 = math.isqrt(fc_out // gf8) if gf8 and fc_out % gf8 == 0 else 0
    ef = two_ef // 2
    if two_ef % 2 or fc_in <= ef or gf < 1 or gf8 != 8 * gf or s16 < 1 or s16 * s16 * gf8 != fc_out:
        raise T2IError(f"{name}: not {WHAT1}: CA Matrix {t_dim}x{two_ef}, fc Matrix {fc_in}x{fc_out}, "
                       f"first residual kernel {list(k)}")
    return dict(t_dim=t_dim, ef_dim=ef, nz=fc_in - ef, gf_dim=gf, imsize=16 * s16)


def stage2_config(shapes: dict, name: str) -> dict:
    s1 = stage1_config(shapes, name)
    t_dim, two_ef = _shape(shapes, r"hr_g_net/custom_fully_connected/Linear/Matrix", name, WHAT2, 2)
    k = _shape(shapes, r"hr_g_net/custom_conv2d/[^/]+/w", name, WHAT2, 4)
    n_conv = len({m.group(1) for n in shapes if (m := re.fullmatch(r"hr_g_net/(custom_conv2d(?:_\d+)?)/[^/]+/w", n))})
    gf, r2 = k[3], n_conv - 9
    if t_dim != s1["t_dim"] or two_ef % 2 or k[:3] != (3, 3, 3) or gf % 4 or r2 < 0 or r2 % 2:
        raise T2IError(f"{name}: not {WHAT2}: hr CA Matrix {t_dim}x{two_ef} (g_net reads {s1['t_dim']}-d "
                       f"sentences), first hr kernel {list(k)}, {n_conv} hr convolutions")
    return dict(stage1=s1, gf_dim=gf, ef_dim=two_ef // 2, r_num=r2 // 2)


def build(sources: list[Source], options: dict) -> Converted:
    opts = take_options(options, OPTIONS, "TensorFlow StackGAN")
    roles = assign(sources, {"checkpoint": is_checkpoint, "text": is_text}, required=("checkpoint", "text"),
                   title="TensorFlow StackGAN", usage=USAGE)
    src = roles["checkpoint"]
    ck = open_checkpoint(src)
    name = src.name
    shapes = {n: tuple(i.shape) for n, i in ck.tensors.items()}
    has1 = any(n.startswith("g_net/") for n in shapes)
    has2 = any(n.startswith("hr_g_net/") for n in shapes)
    if not has1:
        eg = ", ".join(sorted(shapes)[:2])
        raise T2IError(f"{name}: a TensorFlow {ck.format} checkpoint without the StackGAN generator g_net/* "
                       f"({len(shapes)} tensors, e.g. {eg})")
    stage = {"auto": 2 if has2 else 1, "1": 1, "2": 2}[opts["stage"]]
    if stage == 2 and not has2:
        raise T2IError(f"{name}: stage=2 asked, but the checkpoint holds no stage-II generator hr_g_net/* "
                       "(a stage-I training checkpoint)")
    ignore = list(IGNORE) + ([r"hr_g_net/.*"] if stage == 1 else [])
    rx_ignore = [re.compile(p) for p in ignore]
    ignored = sorted(n for n in shapes if any(p.fullmatch(n) for p in rx_ignore))
    wanted = [n for n in shapes if n not in set(ignored)]
    bad = [n for n in wanted if ck.tensors[n].dtype != "float32"]
    if bad:
        raise T2IError(f"{name}: '{bad[0]}' is {ck.tensors[bad[0]].dtype}, a StackGAN generator weight is float32")
    rep = Report("stackgan-tf", "StackGAN (TensorFlow release)")
    rep.ignored += [f"{name}: {n}" for n in ignored]
    if stage == 1:
        cfg = stage1_config(shapes, name)
        g, what, family, t_dim = StageIGenerator(**cfg), WHAT1, "stackgan_tf_stage1", cfg["t_dim"]
        table = rules("g_net", "")
        rep.files[name] = f"TensorFlow {ck.format} checkpoint: StackGAN stage-I generator g_net ({cfg['imsize']}px)"
    else:
        cfg = stage2_config(shapes, name)
        g, what, family, t_dim = StageIIGenerator(**cfg), WHAT2, "stackgan_tf_stage2", cfg["stage1"]["t_dim"]
        table = rules("g_net", "g_net.") + rules("hr_g_net", "hr_g_net.")
        rep.files[name] = (f"TensorFlow {ck.format} checkpoint: StackGAN stage-II generator hr_g_net with its stage-I "
                           f"g_net ({cfg['stage1']['imsize']} -> {g.imsize}px)")
    if stage == 1 and has2:
        rep.notes.append(f"{name}: stage=1: only g_net is taken (hr_g_net listed as ignored)")
    rep.config.update(cfg)
    text = char_text(roles["text"], opts, rep, t_dim, name)
    state = {n: torch.from_numpy(ck.read(n)) for n in wanted}  # only the generator's tensors are read
    KeyTable(rules=table, ignore=(), optional=()).apply(state, g, name, what, rep)
    return Converted(report=rep, model_family=family, text_encoder=text, generator=g.eval(),
                     index={"image_size": int(g.imsize)})


CONVERTER = Converter(name="stackgan-tf", title="TensorFlow StackGAN", usage=USAGE, build=build)
