"""`t2igan convert stackgan-inception`: StackGAN's fine-tuned TF-slim Inception-v3 -> a domain Inception folder.

Fixture ``tests/data/stackgan_inception.safetensors`` (tensors; variable lists in its metadata) was
written once from a real TensorFlow run of the official code, outside the repository: TensorFlow
2.21 (CPU, ``tf.compat.v1`` graph mode, oneDNN off, 1 thread) in a separate virtual environment,
with hanzhanggit/StackGAN-inception-model's ``inception/slim`` package (the tensorflow/models
TF-slim ``inception_v3``) whose only change was ``import tensorflow.compat.v1 as tf``, and
``inception_score.py``'s ``inference`` function taken from its source unchanged. The graph is
``main``'s: ``inputs`` [2, S, S, 3], ``inference(inputs, 51)`` (birds: 50 classes + background),
``pred_op = softmax(logits[:, 1:])``, restored by ``tf.train.Saver(ExponentialMovingAverage(0.9999)
.variables_to_restore())``. Weights: :func:`weight` below (seed 0) for every variable of that graph.
A first TensorFlow run saved a training-style checkpoint with ``tf.train.Saver`` in V1 and V2
(every variable raw from seed 1, its ``ExponentialMovingAverage`` shadow, created by ``apply`` over
the trainable and moving-average variables as ``inception_train.py`` does, from seed 0, and
``global_step``); the outputs below come from restoring that V1 file as the official code does.
``TFCheckpoint`` + this converter read both TF-written files (checked then, outside the suite). Inputs: ``images_u8_256`` = uint8
``default_rng(2).integers(0, 256, (2, 256, 256, 3))``; ``images_u8_299`` = their PIL bilinear
resize to 299 (what ``scipy.misc.imresize(..., interp='bilinear')`` did; Pillow 13); the network
ran on ``images_u8_299 / 127.5 - 1`` (S = 299) and on its crop ``[:, 96:203, 80:187]`` (S = 107, the
smallest input the graph's aux head accepts; at 107 px its kernel is 1x1, so that run restored every
variable but ``aux_logits/*``, which no output below depends on).
Stored: logits (all 51), pred_op, the 2048-d pool features, ``mixed_35x35x256a`` subsampled
``[:, ::4, ::4, ::8]`` (NHWC), the variable names + shapes of the evaluation graph (``eval_vars``),
of that saved checkpoint (``train_vars``: raw variables, shadows, ``global_step``; the official
training's RMSProp slots were not built here) and the SHA-256 of the seed-0 weights.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_convert_stackgan import write_v1, write_v2
from test_convert_stackgan_tf import refused_conversion

from t2igan.cli import main
from t2igan.convert import convert
from t2igan.eval.domain_inception import DomainInception, _tf_slim_mixed

FIXTURE = Path(__file__).parent / "data" / "stackgan_inception.safetensors"
EMA = "/ExponentialMovingAverage"


def weight(name: str, shape, seed: int) -> np.ndarray:
    """float32 N(0, 1) from ``default_rng(first 8 bytes of sha256(f"{seed}:{name}"), little-endian)``,
    scaled: kernels sqrt(2 / (kh kw cin)), matrices sqrt(1 / rows), moving_variance 0.8 + 0.4 |N|,
    other vectors (beta, biases, moving_mean) 0.1 N."""
    shape = tuple(int(d) for d in shape)
    h = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    n = np.random.default_rng(int.from_bytes(h[:8], "little")).standard_normal(shape, dtype=np.float32)
    if len(shape) == 4:
        return n * np.float32(np.sqrt(2.0 / (shape[0] * shape[1] * shape[2])))
    if len(shape) == 2:
        return n * np.float32(np.sqrt(1.0 / shape[0]))
    if name.endswith("moving_variance"):
        return np.float32(0.8) + np.float32(0.4) * np.abs(n)
    return np.float32(0.1) * n


@pytest.fixture(scope="module")
def ref():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    t = load_file(str(FIXTURE))
    eval_vars = json.loads(meta["eval_vars"])
    train_vars = json.loads(meta["train_vars"])
    main_vars = {n: s for n, s in eval_vars.items() if not n.startswith("aux_logits/")}
    ws = {n: weight(n, s, 0) for n, s in main_vars.items()}
    return t, meta, eval_vars, train_vars, ws


def training_checkpoint(ws: dict, train_vars: dict, raw_few: int = 3) -> dict[str, np.ndarray]:
    """Every variable TensorFlow saved in the training-style checkpoint (``train_vars``). The network's
    moving-average shadows hold the fixture's weights; the raw variables of ``raw_few`` of them hold
    other values (seed 1) to show that the shadows are taken. What the converter lists as ignored
    and never reads (the other raw variables, the aux head) is cut to a scalar to keep the file
    small, and an RMSProp slot is added; ``global_step`` is int64."""
    out: dict[str, np.ndarray] = {}
    raw = sorted(ws)[:raw_few]
    for name, shape in train_vars.items():
        base = name[: -len(EMA)] if name.endswith(EMA) else None
        if name == "global_step":
            out[name] = np.array(5000, dtype=np.int64)
        elif base in ws:
            out[name] = ws[base]
        elif name in raw:
            out[name] = weight(name, shape, 1)
        else:
            out[name] = np.zeros((), np.float32)
    out["conv0/weights/RMSProp"] = np.zeros((), np.float32)
    return out


def _net_input(u8: torch.Tensor) -> torch.Tensor:  # NHWC uint8 -> NCHW [0, 1]
    return u8.permute(0, 3, 1, 2).float() / 255


def check_parity(model: DomainInception, t: dict) -> dict:
    """The converted network against the TensorFlow run: the official 299 px network input through
    ``features`` (what ``t2igan eval --inception-domain`` calls), its 107 px crop (also the first
    mixed block), and the folder's resize of the 256 px images against PIL's."""
    d = {}
    feats = model.features(_net_input(t["images_u8_299"]))  # 299 px already: no resize
    d["pool_299"] = (feats["2048"] - t["pool_299"]).abs().max().item()
    d["logits_299"] = (feats["logits"] - t["logits_299"][:, 1:]).abs().max().item()
    d["pred_299"] = (feats["logits"].softmax(1) - t["pred_299"]).abs().max().item()
    n = model.net
    x = t["images_u8_299"][:, 96:203, 80:187].permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        stem = x
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2"):
            stem = getattr(n, name)(stem)
        mixed = _tf_slim_mixed(n.Mixed_5b, stem).permute(0, 2, 3, 1)[:, ::4, ::4, ::8]
        model.input_size = 107  # the crop is the network's input already: no resize
        try:
            logits = n.fc(model.pool((x + 1) / 2))
        finally:
            model.input_size = 299
    d["mixed_107"] = (mixed - t["mixed_35x35x256a_107_sub"]).abs().max().item()
    d["logits_107"] = (logits - t["logits_107"][:, 1:]).abs().max().item()
    for size in (299, 107):
        assert t[f"logits_{size}"].std() > 0.2 and t[f"pool_{size}"].std() > 0.05  # not flat
        assert t[f"pred_{size}"].max() < 0.9  # not saturated
    assert max(d.values()) < 1e-4 and d["pred_299"] < 1e-5, d
    # the folder's preprocessing of the 256 px images against PIL's bilinear resize (the official input)
    y = model._prep(_net_input(t["images_u8_256"]))
    levels = ((y - (t["images_u8_299"].permute(0, 3, 1, 2).float() / 127.5 - 1)).abs() * 127.5).round()
    d["resize_max_levels"], d["resize_frac_off"] = levels.max().item(), (levels > 0).float().mean().item()
    assert d["resize_max_levels"] <= 1 and d["resize_frac_off"] < 0.01
    print(f"parity stackgan-inception: {d}")
    return d


def _refused(tmp_path, sources, match, **options):
    return refused_conversion("stackgan-inception", tmp_path, sources, match, **options)


def test_fixture_weights_and_official_names(ref):
    t, meta, eval_vars, train_vars, ws = ref
    h = hashlib.sha256()
    for name in sorted(eval_vars):
        h.update(name.encode())
        h.update(weight(name, eval_vars[name], 0).tobytes())
    assert h.hexdigest() == meta["weights_sha256_seed0"]  # the weights of the TensorFlow run, bit for bit
    from t2igan.convert.stackgan_inception import FC, variable_table

    table = variable_table(DomainInception(["a", "b"], "x").net.state_dict())
    # every variable of the evaluation graph is in the table (or the classifier), with its TF shape; aux aside
    assert set(table) | set(FC) == set(ws) and len(ws) == 94 * 4 + 2
    assert all(tuple(eval_vars[k]) == shape for k, (_, shape) in table.items())
    assert eval_vars[FC[0]] == [2048, 51] and not any(k.endswith("gamma") for k in eval_vars)
    assert set(json.loads(meta["restore_map"])) == {k + EMA for k in eval_vars}  # the official eval restores shadows
    assert all(k + EMA in train_vars for k in eval_vars)


def test_v1_training_checkpoint_converts_and_matches_tensorflow(ref, tmp_path):
    t, _, _, train_vars, ws = ref
    ck = write_v1(tmp_path / "model.ckpt-5000", training_checkpoint(ws, train_vars), compress=False)
    lines: list[str] = []
    rep = convert("stackgan-inception", [ck], tmp_path / "inc", echo=lines.append)
    assert rep.used[str(ck)] == len(ws) and len(rep.ignored) == len(train_vars) - len(ws) + 1
    assert rep.config["classes"] == 50
    model = DomainInception.from_pretrained(tmp_path / "inc")  # what `t2igan eval --inception-domain` calls
    assert model.variant == "tf-slim" and model.resize == "pil-bilinear" and len(model.classes) == 50
    assert model.classes[0] == "label_1" and model.label == "class_id"
    cfg = json.loads((tmp_path / "inc" / "config.json").read_text())
    sha = hashlib.sha256(ck.read_bytes()).hexdigest()
    assert cfg["init_sha256"] == sha and cfg["source"]["files_sha256"] == {str(ck): sha}
    assert cfg["source"]["weights"] == "ExponentialMovingAverage shadows"
    d = model.describe()
    assert d["variant"] == "tf-slim" and "antialias=True" in d["resize"] and d["trunk_init_sha256"] == sha
    # every weight landed by value (the shadows, not the seed-1 raw variables), BN scale 1, background row dropped
    s = model.net.state_dict()
    torch.testing.assert_close(s["Conv2d_1a_3x3.conv.weight"], torch.from_numpy(ws["conv0/weights"]).permute(3, 2, 0, 1),
                               rtol=0, atol=0)
    torch.testing.assert_close(s["Mixed_7c.branch3x3dbl_3b.bn.running_var"],
                               torch.from_numpy(ws["mixed_8x8x2048b/branch3x3dbl/Conv_3/BatchNorm/moving_variance"]),
                               rtol=0, atol=0)
    torch.testing.assert_close(s["fc.weight"], torch.from_numpy(ws["logits/logits/weights"][:, 1:].T), rtol=0, atol=0)
    assert all(bool((v == 1).all()) for k, v in s.items() if k.endswith("bn.weight"))
    check_parity(model, t)


def test_v2_checkpoint_raw_weights_class_names_and_cli(ref, tmp_path, capsys):
    t, _, _, train_vars, ws = ref
    plain = dict(ws, global_step=np.array(5000, dtype=np.int64))  # raw variables only: no shadows
    prefix = write_v2(tmp_path / "model.ckpt-5000", plain)
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"{c}\n" for c in range(151, 201)))
    assert main(["convert", "stackgan-inception", str(prefix.with_name(prefix.name + ".index")), "--out",
                 str(tmp_path / "inc2"), "--set", f"classes={names}"]) == 0
    assert f"t2igan eval RUN --inception-domain {tmp_path / 'inc2'}" in capsys.readouterr().out  # not a pipeline
    model = DomainInception.from_pretrained(tmp_path / "inc2")
    assert model.classes == [str(c) for c in range(151, 201)]
    cfg = json.loads((tmp_path / "inc2" / "config.json").read_text())
    assert cfg["source"]["format"] == "V2" and cfg["source"]["weights"] == "raw variables"
    assert len(cfg["source"]["files_sha256"]) == 2  # .index + .data-00000-of-00001
    model.input_size = 107  # the official input, cropped (as the fixture's second run): no resize
    with torch.no_grad():
        logits = model.net.fc(model.pool(_net_input(t["images_u8_299"][:, 96:203, 80:187])))
    torch.testing.assert_close(logits, t["logits_107"][:, 1:], rtol=0, atol=1e-4)
    # weights=ema on a file without shadows: one line
    _refused(tmp_path, [prefix.with_name(prefix.name + ".index")], r"no 'conv0/weights/ExponentialMovingAverage'"
             r".*weights=raw takes the raw variables", weights="ema")
    _refused(tmp_path, [prefix.with_name(prefix.name + ".index")], r"gives 3 names .* 50 classes", classes="a,b,c")


def test_foreign_missing_misshaped_unknown_and_corrupt_checkpoints_are_one_line(ref, tmp_path, monkeypatch):
    _, _, _, _, ws = ref
    small = {"g_net/custom_conv2d/custom_conv2d/w": np.zeros((3, 3, 4, 8), np.float32)}
    ck = write_v1(tmp_path / "stackgan.ckpt", small)
    _refused(tmp_path, [ck], r"stackgan\.ckpt: not StackGAN's fine-tuned TF-slim Inception-v3 .*no 'logits/logits/weights'")
    ck = write_v1(tmp_path / "two.ckpt", {"logits/logits/weights": np.zeros((2048, 2), np.float32)})
    _refused(tmp_path, [ck], r"'logits/logits/weights' has shape \(2048, 2\)")
    # faults of the variable list: the converter checks names and shapes from the checkpoint's table before it
    # reads any tensor, so these run on a stand-in table (a real bundle of the full network is converted above)
    from t2igan.convert import stackgan_inception as si
    from t2igan.convert.tf_checkpoint import TFCheckpoint, TensorInfo

    def table_of(shapes: dict):
        ck = TFCheckpoint.__new__(TFCheckpoint)
        ck.format, ck.source = "V2", "stand-in"
        ck.tensors = {n: TensorInfo(n, tuple(sh), "float32") for n, sh in shapes.items()}
        return ck

    shapes = {k: v.shape for k, v in ws.items()}
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(b"")
    for change, match in (
            ({"drop": "mixed_17x17x768c/branch7x7dbl/Conv_3/BatchNorm/moving_mean"},
             r"fake\.ckpt: not .*no 'mixed_17x17x768c/branch7x7dbl/Conv_3/BatchNorm/moving_mean' \(1 of its 378"),
            ({"mixed_8x8x2048a/branch3x3/Conv_1/weights": (3, 1, 384, 384)},  # 1x3 <-> 3x1
             r"'mixed_8x8x2048a/branch3x3/Conv_1/weights' has shape \(3, 1, 384, 384\), .* has \(1, 3, 384, 384\)"),
            ({"mixed_8x8x2048c/branch1x1/Conv/weights": (1,)}, r"'mixed_8x8x2048c/branch1x1/Conv/weights' fits nothing"),
            ({"conv0/weights/ExponentialMovingAverage": shapes["conv0/weights"]},  # some shadows, not all
             r"no 'conv0/BatchNorm/beta/ExponentialMovingAverage' \(377 of 378 shadows missing\)")):
        sh = dict(shapes)
        sh.pop(change.pop("drop", None), None)
        sh.update(change)
        monkeypatch.setattr(si, "open_checkpoint", lambda src, sh=sh: table_of(sh))
        _refused(tmp_path, [fake], match)
    monkeypatch.undo()
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "two.ckpt").read_bytes()[:-20])
    _refused(tmp_path, [tmp_path / "cut.ckpt"], r"cut\.ckpt: not a readable TensorFlow V1 checkpoint")
    _refused(tmp_path, [tmp_path / "two.ckpt"], r"unknown option 'weight'", weight="raw")
