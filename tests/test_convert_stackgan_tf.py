"""`t2igan convert stackgan-tf`: the TensorFlow StackGAN release (hanzhanggit/StackGAN) -> a pipeline.

Fixture ``tests/data/convert_stackgan_tf.safetensors`` (tensors; variable lists in its metadata)
was written once from a real TensorFlow run of the official code: TensorFlow 2.21 (CPU,
``tf.compat.v1`` graph mode, oneDNN off) with prettytensor 0.7.4, both in a separate virtual
environment, with shims for what TF 2 / Python 3.11 removed (``tf.concat(axis, values)`` argument
order, ``tf.pack``, ``collections.MutableMapping``, ``inspect.getargspec``, and prettytensor's
``scopes.var_and_name_scope`` re-expressed on TF 2's variable-scope store with its own naming rule).
The graph is the one of ``demo/demo.py`` ``build_model`` (``stageII/model.py`` CondGAN,
``pt.Phase.test``: ``g_net`` then ``hr_g_net``) at ``GF_DIM 8`` (official 128), ``EMBEDDING_DIM
128, Z_DIM 100``, 1024-d sentences, 64 -> 256, with the ``tf.truncated_normal`` condition noise
replaced by given ``eps`` (placeholders) and z given. Weights: :func:`tf_weights` below over the
graph's variables (their SHA-256 is in the metadata). Inputs: z and eps drawn as
``Pipeline.latents`` draws them for seed 21, ``sent`` N(0, 1) (seed 20). Stored: the stage-I image
subsampled [::2, ::2], the stage-II image [::8, ::8] (NCHW), both CA means / log-sigmas, the
variable names + shapes of that graph (``vars``) and the extra variables of the official training
graphs (``stageI|stageII/trainer.py`` ``init_opt`` at ``DF_DIM 4``: discriminators, Adam slots,
zero-debias copies, beta powers, ``global_step``: ``train1_extra`` / ``train2_extra``). The same run
saved the graph with ``tf.train.Saver`` in V1 and V2; ``TFCheckpoint`` read both back equal to the
weights (checked then; this test writes its files with the writer of ``test_convert_stackgan``).
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
from test_convert_stackgan import CAPS, write_embeddings_dataset, write_v1, write_v2

from t2igan import T2IError
from t2igan.cli import main
from t2igan.convert import convert
from t2igan.pipeline import Pipeline

FIXTURE = Path(__file__).parent / "data" / "convert_stackgan_tf.safetensors"
SEED = 21


def tf_weights(shapes: dict) -> dict[str, np.ndarray]:
    """Deterministic float32 weights over the sorted names: kernels and matrices N(0, 1/fan_in)
    (fan_in: all dims but the last), BN variances 1 + 0.2|N|, gammas 1 + 0.1 N, other vectors 0.2 N."""
    rng = np.random.default_rng(0)
    out = {}
    for name in sorted(shapes):
        shape = tuple(int(d) for d in shapes[name])
        n = rng.standard_normal(shape, dtype=np.float32)
        leaf = name.rsplit("/", 1)[-1]
        if len(shape) >= 2:
            v = n * np.float32(1.0 / np.sqrt(int(np.prod(shape[:-1]))))
        elif leaf == "variance":
            v = np.abs(n) * np.float32(0.2) + np.float32(1.0)
        elif leaf == "gamma":
            v = np.float32(1.0) + np.float32(0.1) * n
        else:
            v = np.float32(0.2) * n
        out[name] = v.astype(np.float32)
    return out


@pytest.fixture(scope="module")
def ref():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    t = load_file(str(FIXTURE))
    shapes = {n: tuple(s) for n, s in json.loads(meta["vars"])}
    ws = tf_weights(shapes)
    h = hashlib.sha256()
    for k in sorted(ws):
        h.update(k.encode())
        h.update(np.ascontiguousarray(ws[k]).tobytes())
    assert h.hexdigest() == meta["weights_sha256"]  # the weights of the TensorFlow run, bit for bit
    return t, ws, {k: json.loads(v) for k, v in meta.items() if k.endswith("extra")}


def training_checkpoint(ws: dict, extra: list, stage: int) -> dict[str, np.ndarray]:
    """What tf.train.Saver writes after training: the generator(s) plus the training state (zeros;
    large slots kept to their first row so the test stays small: the converter never reads them)."""
    out = {k: v for k, v in ws.items() if stage == 2 or k.startswith("g_net/")}
    for name, shape in extra:
        if name == "global_step":
            out[name] = np.array(164000, dtype=np.int64)
        else:
            out[name] = np.zeros(shape if int(np.prod(shape)) <= 4096 else shape[:1], np.float32)
    return out


def compare(images: list[torch.Tensor], t: dict, steps=(2, 8), unit: bool = True) -> float:
    worst = 0.0
    for k, (img, s) in enumerate(zip(images, steps)):
        official = t[f"out{k}"]
        assert (official.abs() < 0.99).float().mean() > 0.5 and official.std() > 0.1  # not saturated, not flat
        expect = official.add(1).div(2) if unit else official
        d = (img[:, :, ::s, ::s] - expect).abs().max().item()
        assert d <= 1e-5, f"stage {k + 1}: max abs difference {d}"
        worst = max(worst, d)
    print(f"parity stackgan-tf: every stage's image within {worst:.1e} of the TensorFlow run")
    return worst


def test_stage2_training_checkpoint_v1_with_the_dataset_embeddings(ref, tmp_path):
    t, ws, extra = ref
    ck = write_v1(tmp_path / "birds_model_164000.ckpt", training_checkpoint(ws, extra["train2_extra"], 2),
                  split={"g_net/custom_fully_connected/Linear/Matrix": 200}, compress=False)
    emb = write_embeddings_dataset(tmp_path / "birds", t["sent"])
    lines = []
    rep = convert("stackgan-tf", [ck, emb], tmp_path / "out", echo=lines.append)
    assert rep.config == dict(stage1=dict(t_dim=1024, ef_dim=128, nz=100, gf_dim=8, imsize=64), gf_dim=8, ef_dim=128,
                              r_num=4)
    assert rep.used[str(ck)] == len(ws) == 133
    assert len(rep.ignored) == len(extra["train2_extra"]) and any("hr_d_net/" in s for s in rep.ignored)
    assert any(line.startswith("ignored (639)") for line in lines)
    pipe = Pipeline.from_pretrained(tmp_path / "out")
    assert pipe.family == "stackgan_tf_stage2" and pipe.stage_sizes == [64, 256]
    z, eps = pipe.latents(2, SEED)
    assert torch.equal(z, t["z"]) and torch.equal(eps, t["eps"])
    compare(pipe.generate(CAPS, seed=SEED, return_all_stages=True), t)
    with torch.no_grad():  # the stage-II conditioning augmentation (leaky-ReLU mean and log-sigma)
        _, mean, log_sigma = pipe.generator.hr_g_net.condition(t["sent"], eps[:, 128:])
    torch.testing.assert_close(mean, t["mu2"], rtol=0, atol=1e-5)
    torch.testing.assert_close(log_sigma, t["log_sigma2"], rtol=0, atol=1e-5)


def test_stage1_checkpoint_v2_and_stage1_of_a_stage2_file(ref, tmp_path):
    t, ws, extra = ref
    emb = write_embeddings_dataset(tmp_path / "birds", t["sent"])
    prefix = write_v2(tmp_path / "model_82000.ckpt", training_checkpoint(ws, extra["train1_extra"], 1))
    rep = convert("stackgan-tf", [prefix.with_name(prefix.name + ".index"), emb], tmp_path / "s1", echo=None)
    assert rep.config == dict(t_dim=1024, ef_dim=128, nz=100, gf_dim=8, imsize=64)
    pipe = Pipeline.from_pretrained(tmp_path / "s1")
    assert pipe.family == "stackgan_tf_stage1" and pipe.stage_sizes == [64]
    z, eps = pipe.latents(2, SEED)
    assert torch.equal(eps, t["eps"][:, :128])  # stage I draws the g_net block first, as the stage-II file does
    out = pipe.synthesize(z, t["sent"], torch.zeros(2, 0, 0), torch.zeros(2, 0, dtype=torch.bool), eps)
    compare(out.images, t, unit=False)
    torch.testing.assert_close(out.mu, t["mu1"], rtol=0, atol=1e-5)
    # stage=1 from a stage-II file: g_net only, hr_g_net listed as ignored
    ck = write_v1(tmp_path / "birds.ckpt", dict(ws), compress=False)
    rep = convert("stackgan-tf", [ck, emb], tmp_path / "s1b", echo=None, stage="1")
    assert sum("hr_g_net/" in s for s in rep.ignored) == sum(k.startswith("hr_g_net/") for k in ws)
    assert Pipeline.from_pretrained(tmp_path / "s1b").family == "stackgan_tf_stage1"


def refused_conversion(family, tmp_path, sources, match, **options):
    """``family``'s conversion of ``sources`` fails with one line matching ``match``, writing nothing."""
    out = tmp_path / "out"
    with pytest.raises(T2IError, match=match) as e:
        convert(family, sources, out, echo=None, **options)
    assert "\n" not in str(e.value)
    assert not out.exists() and not out.with_name("out.tmp").exists()
    return str(e.value)


def _refused(tmp_path, sources, match, **options):
    return refused_conversion("stackgan-tf", tmp_path, sources, match, **options)


def test_missing_wrong_shape_unknown_and_foreign_checkpoints_are_one_line(ref, tmp_path):
    t, ws, _ = ref
    emb = write_embeddings_dataset(tmp_path / "d", t["sent"])
    gone = dict(ws)
    del gone["hr_g_net/conv_batch_norm_7/conv_batch_norm_7/variance"]
    ck = write_v1(tmp_path / "missing.ckpt", gone, compress=False)
    _refused(tmp_path, [ck, emb], r"missing\.ckpt: not a TensorFlow StackGAN stage-II .*1 of the 133 weights are "
                                  r"missing .*hr_g_net\.conv_batch_norm_7\.variance")
    g_net = {k: v for k, v in ws.items() if k.startswith("g_net/")}  # a stage-I file: smaller, as telling
    bad = dict(g_net)
    bad["g_net/custom_conv2d_5/custom_conv2d_5/w"] = bad["g_net/custom_conv2d_5/custom_conv2d_5/w"][:, :, :, :-1]
    ck = write_v1(tmp_path / "shape.ckpt", bad, compress=False)
    _refused(tmp_path, [ck, emb], r"shape\.ckpt: 'g_net/custom_conv2d_5/custom_conv2d_5/w' has shape \(7, 8, 3, 3\)"
                                  r".* expects \(8, 8, 3, 3\) for 'custom_conv2d_5\.weight'")
    more = dict(g_net, **{"g_net/custom_conv2d_99/custom_conv2d_99/w": np.zeros((3, 3, 8, 8), np.float32)})
    ck = write_v1(tmp_path / "extra.ckpt", more, compress=False)
    _refused(tmp_path, [ck, emb], r"1 of its 55 keys fit nothing .*custom_conv2d_99")
    foreign = write_v1(tmp_path / "inception.ckpt", {"InceptionV3/Conv2d_1a_3x3/weights": np.zeros((3, 3, 3, 4), np.float32)})
    _refused(tmp_path, [foreign, emb], r"inception\.ckpt: a TensorFlow V1 checkpoint without the StackGAN generator")
    s1 = write_v1(tmp_path / "s1.ckpt", g_net, compress=False)
    _refused(tmp_path, [s1, emb], r"stage=2 asked, but .* no stage-II generator", stage="2")
    _refused(tmp_path, [s1, emb], r"unknown option 'stages'", stages="1")
    _refused(tmp_path, [s1], r"no text file among the sources")
    small = write_embeddings_dataset(tmp_path / "d16", torch.randn(2, 16))
    _refused(tmp_path, [s1, small], r"reads 1024-d sentence embeddings but .* gives 16-d")
    (tmp_path / "cut.ckpt").write_bytes(s1.read_bytes()[:-20])
    _refused(tmp_path, [tmp_path / "cut.ckpt", emb], r"cut\.ckpt: not a readable TensorFlow V1 checkpoint")
    assert main(["convert", "stackgan-tf", str(tmp_path / "s1.ckpt"), str(emb), "--check"]) == 0
    assert not (tmp_path / "out").exists()


def test_the_family_is_generation_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tf.yaml").write_text("task: stackgan_tf\n")
    assert main(["train", "tf.yaml"]) == 2  # one line: generation only, train task stackgan instead
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tf.yaml"]
