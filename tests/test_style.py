"""Gatys style transfer (t2igan.style.gatys, t2igan style) with a random VGG-19.

The VGG-19 file is written by the test in torchvision's own format: the keys and shapes of
``torchvision.models.vgg.make_layers(cfgs["E"])`` (the ``features`` part of ``vgg19()``) under
the ``features.`` prefix, seeded random weights (drawn like torchvision's VGG initialisation),
saved with ``torch.save`` - the same keys, shapes and container as ``vgg19-dcbb9e9d.pth`` less the unused
classifier. Random features are not ImageNet features: these tests check the optimisation
(losses fall, plateau stop, files written), not how the result looks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.models.vgg import LAYERS, load_vgg19
from t2igan.style.gatys import StyleOptions, load_image, stylize


def random_vgg19_state(seed: int = 0) -> dict:
    """torchvision's vgg19 ``features`` state dict (keys and shapes from torchvision's own
    ``make_layers(cfgs["E"])``, built on the meta device) with random weights drawn like
    torchvision's VGG initialisation (Kaiming normal, fan-out; zero biases)."""
    from torchvision.models.vgg import cfgs, make_layers

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"]).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    return {f"features.{k}": torch.randn(s, generator=g) * (2.0 / (s[0] * s[2] * s[3])) ** 0.5 if len(s) == 4
            else torch.zeros(s) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(random_vgg19_state(0), path)
    return path


def _img(path, seed, size=(40, 48), stripes=False):
    rng = np.random.default_rng(seed)
    if stripes:
        a = np.zeros((*size, 3), np.uint8)
        a[:, ::6] = (200, 40, 40)
        a[::5, :] = (30, 30, 220)
    else:
        a = (rng.random((*size, 3)) * 255).astype(np.uint8)
        a[10:30, 12:36] = (250, 250, 250)
    Image.fromarray(a).save(path)
    return path


def test_layer_names_follow_torchvision_indices():
    assert LAYERS[0] == "conv1_1" and LAYERS[21] == "conv4_2" and LAYERS[22] == "relu4_2"
    assert [LAYERS.index(n) for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")] == [1, 6, 11, 20, 29]
    assert len(LAYERS) == 37


def test_two_iteration_cli_run_writes_image_curve_and_json(tmp_path, vgg_file, capsys):
    c, s = _img(tmp_path / "c.png", 0), _img(tmp_path / "s.png", 1, stripes=True)
    out = tmp_path / "out" / "styled.png"
    rc = main(["style", str(c), str(s), "-o", str(out), "--vgg", str(vgg_file), "--size", "48", "--steps", "2", "--quiet"])
    assert rc == 0
    im = Image.open(out)
    assert im.size == (48, 40)
    hist = json.loads(out.with_suffix(".loss.json").read_text())
    assert hist["iteration"] == [1, 2] and len(hist["content"]) == 2 and hist["stopped_by"] == "steps"
    assert out.with_suffix(".loss.png").stat().st_size > 1000
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["iterations"] == 2


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_content_and_style_losses_fall(tmp_path, vgg_file, optimizer):
    torch.set_num_threads(1)
    content = load_image(_img(tmp_path / "c.png", 0), size=32)
    style = load_image(_img(tmp_path / "s.png", 1, stripes=True), hw=tuple(content.shape[-2:]))
    vgg = load_vgg19(vgg_file, pool="avg")
    o = StyleOptions(size=32, steps=30, optimizer=optimizer, init="noise", plateau_patience=0,
                     lr=0.1 if optimizer == "adam" else 0.0)
    h = stylize(content, style, vgg, o, progress=False).history
    assert len(h["total"]) == 30
    drop = 0.5 if optimizer == "lbfgs" else 0.7  # Adam's fixed steps are slower over 30 iterations
    assert h["content"][-1] < drop * h["content"][0], h["content"][::5]
    assert h["style"][-1] < drop * h["style"][0], h["style"][::5]


def test_plateau_stop_ends_early(tmp_path, vgg_file):
    content = load_image(_img(tmp_path / "c.png", 0), size=24)
    vgg = load_vgg19(vgg_file)
    # the content image as style and start: nothing left to optimise, the loss cannot fall
    o = StyleOptions(size=24, steps=200, optimizer="adam", lr=1e-6, init="content", plateau_patience=5, plateau_tol=1e-3)
    h = stylize(content, content, vgg, o, progress=False).history
    assert h["stopped_by"].startswith("plateau") and len(h["total"]) == 6


def test_bad_inputs_one_line(tmp_path, vgg_file, capsys):
    c, s = _img(tmp_path / "c.png", 0), _img(tmp_path / "s.png", 1)
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    notstate = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], notstate)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    out = tmp_path / "o.png"
    cases = [
        ([str(tmp_path / "missing.png"), str(s), "--vgg", str(vgg_file)], "image not found"),
        ([str(c), str(s), "--vgg", str(foreign)], "not a torchvision VGG-19 state dict"),
        ([str(c), str(s), "--vgg", str(notstate)], "expected a state dict"),
        ([str(c), str(s), "--vgg", str(garbage)], "not a readable torchvision VGG-19"),
        ([str(c), str(s), "--vgg", str(tmp_path / "nope.pth")], "VGG-19 weights file not found"),
        ([str(c), str(garbage), "--vgg", str(vgg_file)], "not a readable image"),
        ([str(c), str(s), "--vgg", str(vgg_file), "--steps", "0"], "steps must be at least 1"),
    ]
    for args, msg in cases:
        capsys.readouterr()
        assert main(["style", *args, "-o", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and msg in err and "\n" not in err, err
    assert not out.exists()


def test_no_weights_given_is_refused(monkeypatch):
    from t2igan.models.vgg import ENV_VAR, resolve_weights

    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(T2IError, match="never downloaded"):
        resolve_weights(None)


def test_wrong_shape_is_refused(tmp_path, vgg_file):
    sd = torch.load(vgg_file, weights_only=True)
    sd["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(T2IError, match=r"features\.0\.weight.*shape"):
        load_vgg19(p)
