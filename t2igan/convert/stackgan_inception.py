"""StackGAN's released fine-tuned Inception-v3 (hanzhanggit/StackGAN-inception-model,
``inception_finetuned_models``: a TensorFlow checkpoint) -> a domain Inception folder for
``t2igan eval RUN --inception-domain DIR`` (:class:`t2igan.eval.domain_inception.DomainInception`,
``variant="tf-slim"``, ``resize="pil-bilinear"``).

    t2igan convert stackgan-inception inception_finetuned_models/birds_valid299/model.ckpt-5000 --out models/inc_birds

The network is the TF-slim ``inception_v3`` of tensorflow/models (``inception/slim/inception_model.py``,
built by ``inception_score.py``'s ``inference``): the layout of torchvision's ``Inception3``
(aux head not used at evaluation), with these differences, all handled here or by the variant:

* variables (``slim/ops.py``): ``SCOPE/weights`` (HWIO), batch norm ``SCOPE/BatchNorm/{beta,
  moving_mean,moving_variance}`` with no ``gamma`` (``scale=False``: the converted weight is 1),
  epsilon 0.001 (torchvision's too); the classifier ``logits/logits/{weights,biases}``
  (``[2048, C + 1]``). Unnamed convolutions are ``Conv``, ``Conv_1``, ... inside each branch scope
  (:data:`BLOCKS` lists them in creation order against torchvision's module names).
* the 3x3 average pools of the mixed blocks exclude the padding (TF ``avg_pool`` 'SAME'); the
  stride-2 reductions use max pools, the last two blocks average pools, as torchvision's.
* class 0 is a background class never used: ``inception_score.py`` takes the softmax of
  ``logits[:, 1:]``; its row is dropped here, so the softmax over the ``C`` classes is that one.
* the official evaluation restores the ``ExponentialMovingAverage`` shadows
  (``NAME/ExponentialMovingAverage``, decay 0.9999) of every weight and batch-norm statistic
  instead of the raw variables (``variables_to_restore()``); so does this converter when the
  checkpoint has them (``--set weights=raw`` takes the raw ones).

Listed as ignored, never read: the aux head ``aux_logits/*``, the other copy (raw or shadow) of
every weight, optimizer slots (``*/RMSProp``, ``*/RMSProp_1``, ``Momentum``, ``Adam``), the
zero-debias copies of the batch-norm averages (``*/biased``, ``*/local_step``), ``global_step``.
Any other variable, a missing one or one of another shape refuses the file in one line.

Classes: the checkpoint does not name them; they are ``label_1`` ... ``label_C`` (which match no
dataset label, so accuracy is not scored: IS and FID are), or ``--set classes=FILE`` (one name
per line, in label order 1..C, e.g. the dataset's class ids, then ``model.label`` ``class_id``).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.convert.base import Converted, Converter, Report, Source, assign, choice, take_options
from t2igan.convert.stackgan_tf import hwio_to_oihw, is_checkpoint, open_checkpoint

WHAT = "StackGAN's fine-tuned TF-slim Inception-v3 (conv0/weights, mixed_*/branch*/Conv*/..., logits/logits/*)"
USAGE = "MODEL.ckpt-N (a V1 file, or a V2 MODEL.ckpt-N.index with its .data-* beside it)"
EMA = "/ExponentialMovingAverage"
OPTIONS = {
    "weights": (choice("auto", "ema", "raw"), "auto",
                "auto: the ExponentialMovingAverage shadows when the checkpoint has them (as the official "
                "evaluation), else the raw variables; ema / raw: force one"),
    "classes": (str, "", "a text file with one class name per line (label order 1..C), or comma-separated names"),
    "label": (str, "class_id", "the dataset label the class names are values of (model.label)"),
}
IGNORE = (r"aux_logits/.*", r"global_step", r".*/(?:RMSProp|RMSProp_1|Momentum|Adam|Adam_1)(?:/ExponentialMovingAverage)?",
          r".*/(?:biased|local_step)(?:/ExponentialMovingAverage)?", r"beta[12]_power")

STEM = (("conv0", "Conv2d_1a_3x3"), ("conv1", "Conv2d_2a_3x3"), ("conv2", "Conv2d_2b_3x3"),
        ("conv3", "Conv2d_3b_1x1"), ("conv4", "Conv2d_4a_3x3"))
_A = {"branch1x1": ("branch1x1",), "branch5x5": ("branch5x5_1", "branch5x5_2"),
      "branch3x3dbl": ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), "branch_pool": ("branch_pool",)}
_B = {"branch3x3": ("branch3x3",), "branch3x3dbl": ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")}
_C = {"branch1x1": ("branch1x1",), "branch7x7": ("branch7x7_1", "branch7x7_2", "branch7x7_3"),
      "branch7x7dbl": tuple(f"branch7x7dbl_{i}" for i in range(1, 6)), "branch_pool": ("branch_pool",)}
_D = {"branch3x3": ("branch3x3_1", "branch3x3_2"), "branch7x7x3": tuple(f"branch7x7x3_{i}" for i in range(1, 5))}
_E = {"branch1x1": ("branch1x1",), "branch3x3": ("branch3x3_1", "branch3x3_2a", "branch3x3_2b"),
      "branch3x3dbl": ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b"),
      "branch_pool": ("branch_pool",)}
# TF-slim block scope -> (torchvision block, {branch scope: torchvision convs in the order TF created Conv, Conv_1, ...})
BLOCKS = (("mixed_35x35x256a", "Mixed_5b", _A), ("mixed_35x35x288a", "Mixed_5c", _A), ("mixed_35x35x288b", "Mixed_5d", _A),
          ("mixed_17x17x768a", "Mixed_6a", _B), ("mixed_17x17x768b", "Mixed_6b", _C), ("mixed_17x17x768c", "Mixed_6c", _C),
          ("mixed_17x17x768d", "Mixed_6d", _C), ("mixed_17x17x768e", "Mixed_6e", _C),
          ("mixed_17x17x1280a", "Mixed_7a", _D), ("mixed_8x8x2048a", "Mixed_7b", _E), ("mixed_8x8x2048b", "Mixed_7c", _E))
FC = ("logits/logits/weights", "logits/logits/biases")


def conv_pairs() -> list[tuple[str, str]]:
    """(TF-slim conv scope, torchvision BasicConv2d name) for all 94 convolutions of the network."""
    out = list(STEM)
    for scope, block, branches in BLOCKS:
        for branch, convs in branches.items():
            out += [(f"{scope}/{branch}/Conv{'_' + str(i) if i else ''}", f"{block}.{m}") for i, m in enumerate(convs)]
    return out


def variable_table(own: dict[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """TF variable -> (torchvision key in ``DomainInception.net``, the TF shape it must have); the classifier aside."""
    table = {}
    for tf_scope, m in conv_pairs():
        w = own[f"{m}.conv.weight"]
        table[f"{tf_scope}/weights"] = (f"{m}.conv.weight", tuple(w.permute(2, 3, 1, 0).shape))
        n = (int(w.shape[0]),)
        table[f"{tf_scope}/BatchNorm/beta"] = (f"{m}.bn.bias", n)
        table[f"{tf_scope}/BatchNorm/moving_mean"] = (f"{m}.bn.running_mean", n)
        table[f"{tf_scope}/BatchNorm/moving_variance"] = (f"{m}.bn.running_var", n)
    return table


def _classes(spec: str, n: int, name: str) -> list[str]:
    if not spec:
        return [f"label_{i}" for i in range(1, n + 1)]
    p = Path(spec)
    names = ([ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()] if p.is_file()
             else [c.strip() for c in spec.split(",") if c.strip()])
    if len(names) != n or len(set(names)) != n:
        raise T2IError(f"{name}: classes={spec!r} gives {len(names)} names ({len(set(names))} distinct); the checkpoint's "
                       f"classifier has {n} classes (+ the background class 0)")
    return names


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(sources: list[Source], options: dict) -> Converted:
    from t2igan.eval.domain_inception import DomainInception

    opts = take_options(options, OPTIONS, "StackGAN Inception")
    src = assign(sources, {"checkpoint": is_checkpoint}, required=("checkpoint",), title="StackGAN Inception",
                 usage=USAGE)["checkpoint"]
    ck = open_checkpoint(src)
    name = src.name
    shapes = {n: tuple(i.shape) for n, i in ck.tensors.items()}
    if FC[0] not in shapes and FC[0] + EMA not in shapes:
        eg = ", ".join(sorted(shapes)[:2])
        raise T2IError(f"{name}: not {WHAT}: no '{FC[0]}' ({ck.format} checkpoint of {len(shapes)} tensors, e.g. {eg})")
    fc_shape = shapes.get(FC[0] + EMA, shapes.get(FC[0]))
    if len(fc_shape) != 2 or fc_shape[0] != 2048 or fc_shape[1] < 3:
        raise T2IError(f"{name}: '{FC[0]}' has shape {fc_shape}, {WHAT} has [2048, classes + 1]")
    n_cls = fc_shape[1] - 1
    model = DomainInception(_classes(opts["classes"], n_cls, name), opts["label"], 299, variant="tf-slim",
                            resize="pil-bilinear")
    own = model.net.state_dict()
    table = variable_table(own)
    table[FC[0]] = ("fc.weight", (2048, n_cls + 1))
    table[FC[1]] = ("fc.bias", (n_cls + 1,))
    has_ema = [n for n in table if n + EMA in shapes]
    mode = opts["weights"]
    if mode == "auto":
        mode = "ema" if has_ema else "raw"
    if mode == "ema":
        lacking = [n for n in table if n + EMA not in shapes]
        if lacking:
            raise T2IError(f"{name}: not {WHAT} with its moving averages: no '{lacking[0] + EMA}' "
                           f"({len(lacking)} of {len(table)} shadows missing{'' if has_ema else '; weights=raw takes the raw variables'})")
    wanted = {(n + EMA if mode == "ema" else n): n for n in table}
    other = {(n if mode == "ema" else n + EMA) for n in table}
    rx_ignore = [re.compile(p) for p in IGNORE]
    ignored, unknown = [], []
    for n in shapes:
        if n in wanted:
            continue
        (ignored if n in other or any(p.fullmatch(n) for p in rx_ignore) else unknown).append(n)
    missing = [k for k in wanted if k not in shapes]
    if missing:
        raise T2IError(f"{name}: not {WHAT}: no '{missing[0]}' ({len(missing)} of its {len(wanted)} variables missing)")
    if unknown:
        raise T2IError(f"{name}: not {WHAT}: '{sorted(unknown)[0]}' fits nothing ({len(unknown)} unknown variables)")
    for k, base in wanted.items():
        if shapes[k] != table[base][1]:
            raise T2IError(f"{name}: '{k}' has shape {shapes[k]}, {WHAT} has {table[base][1]} there")
        if ck.tensors[k].dtype != "float32":
            raise T2IError(f"{name}: '{k}' is {ck.tensors[k].dtype}, the network's weights are float32")
    state: dict[str, torch.Tensor] = {}
    for k, base in wanted.items():
        t = torch.from_numpy(ck.read(k).copy())
        target = table[base][0]
        if base == FC[0]:
            t = t[:, 1:].t()  # drop the background class 0; [in, out] -> Linear [out, in]
        elif base == FC[1]:
            t = t[1:]
        elif t.dim() == 4:
            t = hwio_to_oihw(t)
        state[target] = t.contiguous()
    for k, v in own.items():
        if k.endswith(".bn.weight"):
            state[k] = torch.ones_like(v)  # TF-slim batch norm without scale
        elif k.endswith("num_batches_tracked"):
            state[k] = v.clone()
    from t2igan.core.weights import load_state_strict

    load_state_strict(model.net, state, name)
    files = ([ck.prefix] if ck.format == "V1" else
             [ck.prefix.with_name(ck.prefix.name + ".index")]
             + sorted(ck.prefix.parent.glob(ck.prefix.name + ".data-*")))
    shas = {str(f): _sha256(f) for f in files}
    model.init = str(ck.prefix)
    model.init_sha256 = shas[str(files[-1])]  # V1: the file; V2: the (last) data shard
    model.source = {"converted_from": "stackgan-inception", "format": ck.format, "files_sha256": shas,
                    "weights": "ExponentialMovingAverage shadows" if mode == "ema" else "raw variables",
                    "background_class": "logit 0 dropped (inception_score.py: softmax over logits[:, 1:])",
                    "tf_classes": n_cls + 1}
    model.eval()
    rep = Report("stackgan-inception", "StackGAN fine-tuned Inception-v3 (TF-slim)")
    rep.files[name] = (f"TensorFlow {ck.format} checkpoint: TF-slim Inception-v3, {n_cls} classes + background, "
                       f"{'moving-average shadows' if mode == 'ema' else 'raw variables'}")
    rep.used[name] = len(wanted)
    rep.ignored += [f"{name}: {n}" for n in sorted(ignored)]
    rep.config.update(classes=n_cls, label=opts["label"], variant="tf-slim", resize="pil-bilinear")
    rep.notes.append(f"{name}: batch norm without scale: every bn.weight is 1; background logit 0 dropped")
    if mode == "raw" and not has_ema:
        rep.notes.append(f"{name}: no ExponentialMovingAverage shadows in the file: the raw variables are used (the "
                         "official evaluation restores the shadows and would refuse this file)")
    if not opts["classes"]:
        rep.notes.append(f"classes named label_1..label_{n_cls} (not dataset labels: accuracy is not scored; "
                         "--set classes=FILE names them)")

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        DomainInception.from_pretrained(tmp)  # loads the way --inception-domain loads it

    return Converted(report=rep, model_family="domain_inception", extra=write)


CONVERTER = Converter(name="stackgan-inception", title="StackGAN Inception", usage=USAGE, build=build,
                      use="score with it: t2igan eval RUN --inception-domain {out}")
