"""SRNet: networks, losses, the family through the one trainer, inference in eval mode,
`t2igan edit` and `t2igan srnet-eval`.

The reference's parameter names and shapes: the state dicts of Niwhskal/SRNet ``model.py``
``Generator(3)`` (687 entries) and ``Discriminator(6)`` (30) were compared key by key with
ours (same keys, same shapes); the counts and a few shapes are asserted below."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.config import load_config
from t2igan.data.birds import load_any
from t2igan.data.srnet_synth import render_standard, write_srnet_synth
from t2igan.families import srnet as fam
from t2igan.models import srnet

TINY = ["model.cnum=4", "model.ndf=8", "train.batch_size=4", "train.max_minutes=0", "train.log_every=1",
        "train.progress=false", "train.threads=1"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("srnet") / "pairs"
    write_srnet_synth(root, 12, (32, 64), seed=0, test_fraction=0.25, progress=False)
    return root


@pytest.fixture(scope="module")
def run(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("srnet_run") / "run"
    assert main(["train", "configs/srnet_synth.yaml", f"data.root={pairs}", f"train.out_dir={out}",
                 "train.max_steps=4", *TINY]) == 0
    return out


def test_reference_names_and_shapes():
    sd = srnet.Generator(3).state_dict()
    assert len(sd) == 687 and len(srnet.Discriminator(6).state_dict()) == 30
    assert sd["_tcn._t_encoder._conv1_1._conv.weight"].shape == (32, 3, 3, 3)
    assert sd["_tcn._sk_decoder._conv1_1._conv.weight"].shape == (256, 512, 3, 3)
    assert sd["_bin._decoder._conv2_1._conv.weight"].shape == (128, 256, 3, 3)  # skip connection: mt=2
    assert sd["_fn._decoder._conv1_1._conv.weight"].shape == (256, 512, 3, 3)  # fused with the inpainting decoder
    assert sd["_tcn._t_res._block1._conv1.weight"].shape == (64, 256, 1, 1)


def test_shapes():
    g = srnet.Generator(3, cnum=4)
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        o_sk, o_t, o_b, o_f = g(x, x)
    assert o_sk.shape == (2, 1, 32, 64) and o_t.shape == o_b.shape == o_f.shape == (2, 3, 32, 64)
    assert 0 <= float(o_sk.min()) and float(o_sk.max()) <= 1 and float(o_f.abs().max()) <= 1
    assert srnet.Discriminator(6, 8)(torch.randn(2, 6, 32, 64)).shape == (2, 1, 2, 4)


def test_losses():
    t = (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert float(fam.dice_loss(t, t)) < 1e-6 and abs(float(fam.dice_loss(t, 1 - t)) - 1) < 1e-6
    real, fake = torch.full((2, 1, 2, 2), 0.9), torch.full((2, 1, 2, 2), 0.1)
    assert float(fam.d_loss("clamp_log", real, fake, 1e-8)) < float(fam.d_loss("clamp_log", fake, real, 1e-8))
    assert float(fam.d_loss("wgan", real, fake, 0)) == pytest.approx(-0.8)
    assert float(fam.g_adv("wgan", fake, 0)) == pytest.approx(-0.1)
    # the reference's loss on raw (unsigmoided) scores: a score <= 0 hits the clamp floor
    assert float(fam.g_adv("clamp_log", torch.full((1,), -3.0), 1e-8)) == pytest.approx(-np.log(1e-8), rel=1e-5)


def test_trains_through_the_trainer_and_resumes(run, pairs):
    summ = json.loads((run / "train_summary.json").read_text())
    assert summ["step"] == 4 and summ["task"] == "srnet"
    info = json.loads((run / "pipeline" / "model_index.json").read_text())
    assert info["family"] == "srnet" and info["image_size"] == [32, 64]
    assert (run / "samples" / "step_0000004.png").is_file()
    resumed = run.parent / "resumed"
    shutil.copytree(run, resumed)
    assert main(["train", str(resumed / "config.yaml"), f"train.out_dir={resumed}", "train.max_steps=6", *TINY,
                 "--resume"]) == 0
    assert json.loads((resumed / "train_summary.json").read_text())["step"] == 6


def test_generator_losses_fall(pairs):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = load_config("configs/srnet_synth.yaml", [f"data.root={pairs}", *TINY, "optim.lr_g=0.002"])
    step, _ = fam.build(cfg, load_any(pairs, "train"), False)
    idx = torch.arange(4)
    logs = [step.train_step(SimpleNamespace(index=idx), k) for k in range(40)]
    f_l1 = [float(x["g_f_l1"]) for x in logs[1::2]]
    b_l1 = [float(x["g_b_l1"]) for x in logs[1::2]]
    assert np.mean(f_l1[-4:]) < 0.85 * np.mean(f_l1[:4]), f_l1  # 20 generator updates
    assert np.mean(b_l1[-4:]) < 0.85 * np.mean(b_l1[:4]), b_l1
    assert "g_loss" not in logs[0] and "g_loss" in logs[1]  # G every 2nd step, D every step
    assert max(float(p.detach().abs().max()) for p in step.D1.parameters()) <= 0.01 + 1e-9  # D weights clipped


def test_inference_uses_eval_mode(run):
    """The black-dots bug: BatchNorm in train mode at inference uses the statistics of the one
    image edited. edit() must give the eval-mode output and leave the running statistics alone."""
    g, _ = fam.load_generator(run)
    assert not g.training
    i_s = torch.rand(1, 3, 32, 64) * 2 - 1
    g.train()  # as a caller might leave it
    before = {k: v.clone() for k, v in g.state_dict().items()}
    out = fam.edit(g, i_s, "Hello")
    assert not g.training
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in before.items())  # running stats untouched
    with torch.no_grad():
        ref = g.eval()(out["i_t"], i_s)[3]
        trained_mode = g.train()(out["i_t"], i_s)[3]
    assert torch.equal(out["o_f"], ref)
    assert not torch.allclose(trained_mode, ref, atol=1e-3)  # train mode would give another (speckled) image
    g.load_state_dict(before)


def test_sample_grid_in_eval_mode_restores_train_mode(run, pairs):
    cfg = load_config(str(run / "config.yaml"), [])
    step, _ = fam.build(cfg, load_any(pairs, "train"), False)
    step.G.train()
    grid = step.sample([], 0, 4, None)
    assert grid.shape == (4 * 3, 3, 32, 64) and step.G.training  # 3 test pairs x (i_s, i_t, o_b, o_f)


def test_edit_cli_writes_edit_and_parts(run, pairs, tmp_path, capsys):
    src = tmp_path / "word.png"
    Image.open(pairs / "i_s" / "000009.png").resize((96, 48)).save(src)
    out = tmp_path / "edit.png"
    assert main(["edit", str(run), str(src), "Coffee", "-o", str(out)]) == 0
    assert Image.open(out).size == (96, 48)
    assert Image.open(tmp_path / "edit_parts.png").size == (64 * 6, 32)
    for args, msg in [([str(run), str(tmp_path / "nope.png"), "x"], "image not found"),
                      ([str(run), str(src), " "], "the new word"),
                      ([str(tmp_path), str(src), "x"], "not a t2igan pipeline")]:
        capsys.readouterr()
        assert main(["edit", *args, "-o", str(tmp_path / "e2.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err


def test_srnet_eval_reports_model_and_baselines(run, pairs, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["srnet-eval", str(run), "--data", str(pairs), "--ocr", "off", "--out", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert r["pairs"] == 3 and r["ocr"] == "off"
    m = r["metrics"]
    assert set(m) == {"srnet (o_f)", "baseline: input i_s", "baseline: background t_b"}
    # the background is the target outside the new word: closer than the untrained edit, finite PSNR
    assert 0 < m["baseline: background t_b"]["mse"] < m["srnet (o_f)"]["mse"]
    assert m["baseline: background t_b"]["psnr"] > m["srnet (o_f)"]["psnr"]
    assert all(0 < v["ssim"] <= 1 for v in m.values())
    assert "| srnet (o_f) |" in capsys.readouterr().out


@pytest.mark.skipif(fam.tesseract_path() is None, reason="needs Tesseract (apt-get install tesseract-ocr tesseract-ocr-eng)")
def test_ocr_reads_plain_words():
    words = ["Garden", "SILVER", "coffee"]
    imgs = [np.asarray(Image.fromarray(render_standard(w, (64, 160)))) for w in words]
    read = fam.ocr_words(imgs)
    acc = fam.word_accuracy(read, words)
    assert acc["word_acc"] == 1.0, read
    assert fam.word_accuracy(["Garden", "x", "COFFEE"], words) == {"word_acc": 2 / 3, "word_acc_case": 1 / 3}


def test_bad_configs_refused_in_one_line(pairs, tmp_path, capsys):
    for over, msg in [(["data.flip=true"], "data.flip=false"), (["loss.gan=hinge"], "loss.gan='hinge'"), (["loss.gan=wgan"], "loss.gan='wgan': SRNet's discriminators"),
                      (["train.precision=fp16"], "needs a CUDA device"),
                      (["train.accumulate=2"], "does not support it"),
                      (["train.compile=true"], "does not support it"),
                      (["train.fused_upsample=true"], "does not support it"),
                      (["train.adam=foreach"], "does not support it"),
                      ([f"data.root={tmp_path}"], "")]:
        capsys.readouterr()
        rc = main(["train", "configs/srnet_synth.yaml", f"data.root={pairs}", f"train.out_dir={tmp_path / 'r'}",
                   "train.max_steps=1", *TINY, *over])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith("error:") and msg in err[-1], err
    assert not (tmp_path / "r").exists()
    with pytest.raises(T2IError, match="no srnet.json"):
        from t2igan.data.srnet_synth import read_meta
        read_meta(tmp_path)


def test_served_edit_tab(run, pairs):
    """`t2igan serve SRNET_RUN`: /v1/editors lists it, /v1/edit returns the six parts (eval mode:
    the same edit as edit()), bad inputs are one JSON error; the page has the Edit-text tab."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import base64
    import io

    from fastapi.testclient import TestClient

    from t2igan.serve.app import create_app

    app = create_app({"words": str(run)})
    try:
        c = TestClient(app)
        assert c.get("/v1/editors").json() == {"editors": [{"name": "words", "image_size": [32, 64]}]}
        raw = (pairs / "i_s" / "000010.png").read_bytes()
        r = c.post("/v1/edit", json={"image_base64": base64.b64encode(raw).decode(), "word": "Coffee"})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["order"] == list(fam.PARTS)
        o_f = np.asarray(Image.open(io.BytesIO(base64.b64decode(d["parts"]["o_f"]))))
        g, _ = fam.load_generator(run)
        ref = fam.to_uint8(fam.edit(g, fam.image_to_tensor(Image.open(pairs / "i_s" / "000010.png"), (32, 64)),
                                    "Coffee")["o_f"])
        assert np.array_equal(o_f, ref)
        for body, code, msg in [({"image_base64": "%%%", "word": "x"}, 422, "base64"),
                                ({"image_base64": base64.b64encode(b"nope").decode(), "word": "x"}, 422, "not a readable image"),
                                ({"image_base64": base64.b64encode(raw).decode(), "word": "x", "model": "m"}, 404, "unknown SRNet")]:
            r = c.post("/v1/edit", json=body)
            assert r.status_code == code and msg in r.json()["error"], r.text
        assert 'id="edit-panel"' in c.get("/").text
        r = c.post("/v1/generate", json={"captions": ["a red flower"]})  # no text-to-image model here
        assert r.status_code == 404 and "only SRNet" in r.json()["error"]
    finally:
        app.state.close()


def test_vgg_terms_with_a_vgg19_file(pairs, tmp_path):
    """loss.vgg19: the perceptual and Gram terms on a VGG-19 file in torchvision's format (random
    weights here), frozen and not checkpointed."""
    from torchvision.models.vgg import cfgs, make_layers

    with torch.device("meta"):  # torchvision's keys and shapes; random weights
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"]).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}, path)
    cfg = load_config("configs/srnet_synth.yaml", [f"data.root={pairs}", *TINY, f"loss.vgg19={path}"])
    step, _ = fam.build(cfg, load_any(pairs, "train"), False)
    assert "vgg" not in step.modules and step.frozen == [step.vgg]
    logs = [step.train_step(SimpleNamespace(index=torch.arange(4)), k) for k in range(2)]
    assert float(logs[1]["g_vgg_per"]) > 0 and float(logs[1]["g_vgg_style"]) > 0
    assert all(not p.requires_grad for p in step.vgg.parameters())


def test_optim_grad_clip_bounds_each_update(pairs):
    """optim.grad_clip clips the gradient norm of G, D1 and D2, each on its own (0, the reference: untouched)."""
    def norms(clip: float) -> dict[str, float]:
        torch.manual_seed(0)
        cfg = load_config("configs/srnet_synth.yaml", [f"data.root={pairs}", *TINY, f"optim.grad_clip={clip}"])
        step, _ = fam.build(cfg, load_any(pairs, "train"), False)
        idx = torch.arange(4)
        step.train_step(SimpleNamespace(index=idx), 0)
        step.train_step(SimpleNamespace(index=idx), 1)  # D1, D2 and the generator update
        return {n: float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()
                                                               if p.grad is not None])))
                for n, net in (("G", step.G), ("D1", step.D1), ("D2", step.D2))}

    free, clipped = norms(0.0), norms(1e-3)
    assert all(v > 1e-2 for v in free.values()), free
    assert all(v <= 1e-3 * (1 + 1e-4) for v in clipped.values()), clipped
