"""The classic family: GAN-INT-CLS, StackGAN v1, StackGAN++/HDGAN, AttnGAN, MirrorGAN."""
import json
import math

from types import SimpleNamespace

import pytest
import torch

from t2igan import T2IError
from t2igan.cli import main
from t2igan.train.run import build_training
from t2igan.config import load_config
from t2igan.models import attngan, gan_int_cls, mirrorgan, stackgan, stackganpp
from t2igan.models.blocks import CA_NET, color_consistency_loss, compute_mean_covariance, kl_loss
from t2igan.pipeline import Pipeline
from t2igan.families.stackgan import lr_factor

from conftest import tiny_overrides

CAPS = ["this flower has red petals", "a small flower with a yellow center"]


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [32, 64])
def test_gan_int_cls_shapes(size):
    g, d = gan_int_cls.NetG(t_dim=16, nt=8, nz=10, ngf=4, imsize=size), gan_int_cls.NetD(t_dim=16, nt=8, ndf=4, imsize=size)
    x = g(torch.randn(3, 10), torch.randn(3, 16))
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert d.features(x).shape == (3, 4 * size // 8, 4, 4) and d(x, torch.randn(3, 16)).shape == (3,)


def test_stackgan_v1_shapes_and_names():
    s1 = stackgan.STAGE1_G(t_dim=16, c_dim=8, nz=10, gf_dim=4, imsize=64)
    s2 = stackgan.STAGE2_G(s1.config, gf_dim=8, c_dim=8, r_num=2, imsize=256)
    out = s2.run(torch.randn(2, 10), torch.randn(2, 16))
    assert [i.shape[-1] for i in out.images] == [64, 256] and out.mu.shape == (2, 8)
    d1, d2 = stackgan.STAGE1_D(df_dim=4, c_dim=8, imsize=64), stackgan.STAGE2_D(df_dim=4, c_dim=8, imsize=256)
    f1, f2 = d1(out.images[0]), d2(out.images[1])
    assert f1.shape == f2.shape == (2, 32, 4, 4)
    assert d2.get_cond_logits(f2, out.mu).shape == d2.get_uncond_logits(f2).shape == (2,)
    keys = set(s2.state_dict()) | {f"D.{k}" for k in d2.state_dict()}
    for k in ["STAGE1_G.ca_net.fc.weight", "STAGE1_G.fc.0.weight", "STAGE1_G.upsample4.1.weight", "STAGE1_G.img.0.weight",
              "ca_net.fc.weight", "encoder.0.weight", "hr_joint.0.weight", "residual.1.block.0.weight",
              "upsample4.2.weight", "img.0.weight", "D.encode_img.20.weight", "D.encode_img.21.running_mean", "D.get_cond_logits.outlogits.0.weight",
              "D.get_uncond_logits.outlogits.0.weight"]:
        assert k in keys, k
    assert s1.ca_net.fc.out_features == 16  # v1: fc to 2 * c_dim, ReLU
    assert not any(p.requires_grad for p in s2.STAGE1_G.parameters())
    s2.train()
    assert not s2.STAGE1_G.training and s2.encoder.training


@pytest.mark.parametrize("hdgan", [False, True])
def test_stackganpp_every_scale(hdgan):
    g = stackganpp.G_NET(t_dim=16, c_dim=8, nz=10, gf_dim=16, r_num=1, branch_num=3, base_size=64)
    out = g.run(torch.randn(2, 10), torch.randn(2, 16))
    assert [i.shape[-1] for i in out.images] == [64, 128, 256] and g.ca_net.fc.out_features == 32
    for img in out.images:
        d = stackganpp.D_NET(img.shape[-1], 4, 8, hdgan=hdgan)
        cond, unc = d(img, out.mu)
        assert cond.shape == (2,) and unc.shape == ((2, 16) if hdgan else (2,))
    keys = set(g.state_dict()) | set(stackganpp.D_NET(256, 4, 8).state_dict())
    for k in ["h_net1.fc.0.weight", "h_net1.upsample4.1.weight", "h_net2.jointConv.0.weight", "h_net3.residual.0.block.3.weight",
              "h_net3.upsample.1.weight", "img_net3.img.0.weight", "img_code_s64_2.0.weight", "jointConv.0.weight",
              "logits.0.weight", "uncond_logits.0.weight"]:
        assert k in keys, k


@pytest.mark.parametrize("module", [attngan, mirrorgan])
def test_attention_generators_every_scale(module):
    g = module.G_NET(t_dim=16, c_dim=8, nz=10, gf_dim=4, r_num=1, branch_num=3, base_size=64)
    words, mask = torch.randn(2, 16, 6), torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]).bool()
    out = g.run(torch.randn(2, 10), torch.randn(2, 16), words, mask)
    assert [i.shape[-1] for i in out.images] == [64, 128, 256]
    assert [a.shape for a in out.attention] == [(2, 6, 64, 64), (2, 6, 128, 128)]
    for a in out.attention:  # a distribution over the words at every sub-region; padding gets 0
        torch.testing.assert_close(a.sum(1), torch.ones(2, *a.shape[2:]))
        assert a[0, 3:].abs().max() == 0 and a.min() >= 0
    for img in out.images:
        d = module.D_NET(img.shape[-1], 4, 16)
        code = d(img)
        assert code.shape == (2, 32, 4, 4)
        assert d.COND_DNET(code, torch.randn(2, 16)).shape == d.UNCOND_DNET(code).shape == (2,)
    with pytest.raises(ValueError, match="attends over words"):
        g(torch.randn(2, 10), torch.randn(2, 16))
    keys = set(g.state_dict())
    for k in ["ca_net.fc.weight", "h_net1.fc.0.weight", "h_net2.att.conv_context.weight", "h_net3.upsample.1.weight",
              "img_net3.img.0.weight"]:
        assert k in keys, k
    if module is mirrorgan:
        for k in ["h_net2.att.conv_sentence_vis.weight", "h_net2.att.linear.weight", "h_net2.conv.weight"]:
            assert k in keys, k
    assert "COND_DNET.jointConv.0.weight" in module.D_NET(256, 4, 16).state_dict()


def test_glam_sentence_attention_is_a_channel_softmax():
    att = mirrorgan.GLAttentionGeneral(idf=6, cdf=5, ncf=4)
    w, s, wa, sa = att(torch.randn(2, 6, 3, 3), torch.randn(2, 4), torch.randn(2, 5, 7), torch.ones(2, 7).bool())
    assert w.shape == s.shape == sa.shape == (2, 6, 3, 3) and wa.shape == (2, 7, 3, 3)
    torch.testing.assert_close(sa.sum(1), torch.ones(2, 3, 3))


# ----------------------------------------------------------------------------- numerics
def test_kl_matches_closed_form():
    mu = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.0, 3.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.25)], [-1.0, 2.0, 0.0]])
    closed = 0.5 * (logvar.exp() + mu ** 2 - 1 - logvar)  # KL(N(mu, s^2) || N(0, 1)) per dimension
    torch.testing.assert_close(kl_loss(mu, logvar), closed.mean())
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).mean()
    torch.testing.assert_close(kl_loss(mu, logvar), ref)
    assert kl_loss(torch.zeros(4, 3), torch.zeros(4, 3)).item() == 0.0


def test_reparametrisation_statistics():
    torch.manual_seed(0)
    mu = torch.tensor([2.0, -1.0]).expand(200_000, 2)
    logvar = torch.tensor([math.log(0.25), math.log(9.0)]).expand(200_000, 2)
    c = CA_NET.reparametrize(mu, logvar)
    torch.testing.assert_close(c.mean(0), torch.tensor([2.0, -1.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(c.std(0), torch.tensor([0.5, 3.0]), atol=0.03, rtol=0)
    eps = torch.randn(3, 2)
    torch.testing.assert_close(CA_NET.reparametrize(mu[:3], logvar[:3], eps), mu[:3] + eps * torch.tensor([0.5, 3.0]))


def test_ca_net_glu_and_relu_variants():
    torch.manual_seed(0)
    v1, v2 = CA_NET(16, 8, glu=False), CA_NET(16, 8, glu=True)
    assert v1.fc.out_features == 16 and v2.fc.out_features == 32
    for ca in (v1, v2):
        c, mu, logvar = ca(torch.randn(5, 16))
        assert c.shape == mu.shape == logvar.shape == (5, 8)
    _, _, lv = v1(torch.randn(5, 16))
    assert lv.min() >= 0  # v1 applies ReLU before the split, as the official code


def test_colour_consistency():
    img = torch.rand(2, 3, 8, 8)
    mu, cov = compute_mean_covariance(img)
    x = img[0].reshape(3, -1)
    torch.testing.assert_close(cov[0], torch.cov(x, correction=0))
    torch.testing.assert_close(mu[0, :, 0, 0], x.mean(1))
    up = torch.nn.functional.interpolate(img, scale_factor=2, mode="nearest")  # same colour statistics
    assert color_consistency_loss(up, img, 50.0).item() == pytest.approx(0.0, abs=1e-10)
    shifted = color_consistency_loss(up + 0.5, img, 50.0)
    assert shifted.item() == pytest.approx(50.0 * 0.25, rel=1e-5)  # mean term only: cov unchanged


def test_lr_halving_schedule():
    assert [lr_factor(s, 10, 2) for s in (0, 19, 20, 39, 40, 60)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    assert lr_factor(10 ** 6, 10, 0) == 1.0


# ----------------------------------------------------------------------------- training + pipeline
def classic_config(task, tiny_data, tiny_damsm, out, **extra):
    return load_config(None, tiny_overrides(tiny_data, out, **{"text_encoder": str(tiny_damsm), **extra}), task=task)


SMALL = {
    "gan_int_cls": {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "model.nt": 8},
    "stackgan1": {"model.gf_dim": 4, "model.df_dim": 4, "model.c_dim": 8, "model.nz": 8, "model.stage1_size": 16,
                  "data.image_size": 16},
    "stackganpp": {"model.gf_dim": 8, "model.df_dim": 4, "model.c_dim": 8, "model.nz": 8, "model.r_num": 1,
                   "model.branch_num": 2, "model.base_size": 16, "data.num_scales": 2, "model.color_loss": 50.0},
    "attngan": {"model.gf_dim": 4, "model.df_dim": 4, "model.c_dim": 8, "model.nz": 8, "model.r_num": 1,
                "model.branch_num": 2, "model.base_size": 16, "data.num_scales": 2},
}


def _pipeline_checks(run, sizes, tmp_path, attention=False):
    pipe = Pipeline.from_pretrained(run)
    with pytest.raises(T2IError, match="fused_upsample is for DF-GAN generators"):
        Pipeline.from_pretrained(run, fused_upsample=True)
    a = pipe.generate(CAPS, seed=1, n=2)
    assert a.shape == (4, 3, sizes[-1], sizes[-1]) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, pipe.generate(CAPS, seed=1, n=2))
    assert not torch.equal(a, pipe.generate(CAPS, seed=2, n=2))
    stages = pipe.generate(CAPS, seed=1, n=2, return_all_stages=True)
    assert [s.shape[-1] for s in stages] == sizes and torch.equal(stages[-1], a)
    pipe.save_pretrained(tmp_path / "copy")
    again = Pipeline.from_pretrained(tmp_path / "copy")
    assert torch.equal(a, again.generate(CAPS, seed=1, n=2))
    out = pipe.generate_stages(CAPS, seed=1, n=1)
    if attention:
        assert out["attention"] and all(m.shape[:2] == (2, pipe.max_words) for m in out["attention"])
        lens = out["mask"].sum(1)
        for m in out["attention"]:
            torch.testing.assert_close(m.sum(1), torch.ones(2, *m.shape[2:]))
            assert m[0, int(lens[0]):].abs().max() == 0
    else:
        assert out["attention"] == []
    return pipe


def _fit(cfg):
    s = build_training(cfg, resume=False).fit()
    assert s["step"] == 2 and s["images_per_s"] > 0
    return s


def test_gan_int_cls_trains_and_round_trips(tiny_data, tiny_damsm, tmp_path):
    run = tmp_path / "run"
    _fit(classic_config("gan_int_cls", tiny_data, tiny_damsm, run, **SMALL["gan_int_cls"]))
    assert json.loads((run / "pipeline" / "model_index.json").read_text())["family"] == "gan_int_cls"
    _pipeline_checks(run, [32], tmp_path)


def test_stackgan_two_stages(tiny_data, tiny_damsm, tmp_path):
    s1 = tmp_path / "s1"
    _fit(classic_config("stackgan", tiny_data, tiny_damsm, s1, **SMALL["stackgan1"]))
    _pipeline_checks(s1, [16], tmp_path / "a")
    s2 = tmp_path / "s2"
    cfg = classic_config("stackgan", tiny_data, tiny_damsm, s2, **{**SMALL["stackgan1"], "model.stage": 2,
                                                                    "model.stage1": str(s1), "data.image_size": 32,
                                                                    "model.r_num": 1, "train.sample_every": 1})
    tr = build_training(cfg, resume=False)
    before = {k: v.clone() for k, v in tr.task.netG.STAGE1_G.state_dict().items()}
    tr.fit()
    after = tr.task.netG.STAGE1_G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # stage I frozen (weights and BN statistics)
    assert (s2 / "samples" / "step_0000002.png").is_file()
    pipe = _pipeline_checks(s2, [16, 32], tmp_path / "b")
    # the stage-I image of the stage-II pipeline is the stage-I run's image for the same seed
    p1 = Pipeline.from_pretrained(s1)
    torch.testing.assert_close(pipe.generate(CAPS, seed=3, return_all_stages=True)[0], p1.generate(CAPS, seed=3))
    with pytest.raises(T2IError, match="not a StackGAN stage-I run"):
        build_training(classic_config("stackgan", tiny_data, tiny_damsm, tmp_path / "x",
                                      **{**SMALL["stackgan1"], "model.stage": 2, "model.stage1": str(tiny_damsm)}), resume=False)


@pytest.mark.parametrize("hdgan", [False, True])
def test_stackganpp_trains(tiny_data, tiny_damsm, tmp_path, hdgan):
    run = tmp_path / "run"
    s = _fit(classic_config("stackganpp", tiny_data, tiny_damsm, run, **SMALL["stackganpp"], **{"model.hdgan": hdgan}))
    assert s["task"] == "stackganpp"
    if not hdgan:
        _pipeline_checks(run, [16, 32], tmp_path)
    with pytest.raises(T2IError, match="data.num_scales=2"):
        build_training(classic_config("stackganpp", tiny_data, tiny_damsm, tmp_path / "bad",
                                      **{**SMALL["stackganpp"], "data.num_scales": 1}), resume=False)


@pytest.mark.parametrize("task,small", [("stackgan", "stackgan1"), ("stackganpp", "stackganpp")])
def test_stackgan_families_take_the_damsm_loss_as_an_option(tiny_data, tiny_damsm, tmp_path, task, small):
    """Off by default (official StackGAN / StackGAN++); with model.damsm_lambda the generator
    also gets AttnGAN's DAMSM word + sentence loss of its last image, through the frozen image
    encoder of the text encoder's run."""
    off = build_training(classic_config(task, tiny_data, tiny_damsm, tmp_path / "off", **SMALL[small]), resume=False)
    assert off.task.image_encoder is None
    assert "w_loss" not in off.task.train_step(off.to_batch(next(off.batches()), 0), 0)
    tr = build_training(classic_config(task, tiny_data, tiny_damsm, tmp_path / "on",
                                       **SMALL[small], **{"model.damsm_lambda": 5.0}), resume=False)
    enc = tr.task.image_encoder
    assert enc is not None and not any(p.requires_grad for p in enc.parameters())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    logs = tr.task.train_step(tr.to_batch(next(tr.batches()), 0), 0)
    assert logs["w_loss"] > 0 and logs["s_loss"] > 0 and torch.isfinite(logs["g_loss"])
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())  # the image encoder stays frozen
    # the term reaches the generator: its gradient differs from the adversarial-only gradient
    torch.manual_seed(0)
    b = tr.to_batch(next(tr.batches()), 0)
    words, sent, mask = tr.task.encode(b)
    img = tr.task.netG.run(tr.task.noise(sent.size(0), sent.device), sent).images[-1]
    loss = sum(tr.task.damsm_loss(img, words, sent, mask).values())
    grads = torch.autograd.grad(loss, [p for p in tr.task.netG.parameters() if p.requires_grad], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert tr.fit()["step"] == 2


def test_attngan_trains_with_damsm_loss(tiny_data, tiny_damsm, tmp_path, capsys):
    run = tmp_path / "run"
    tr = build_training(classic_config("attngan", tiny_data, tiny_damsm, run, **SMALL["attngan"]), resume=False)
    assert tr.task.image_encoder is not None
    logs = tr.task.train_step(tr.to_batch(next(tr.batches()), 0), 0)
    assert logs["w_loss"] > 0 and logs["s_loss"] > 0 and torch.isfinite(logs["g_loss"])
    assert tr.fit()["step"] == 2
    _pipeline_checks(run, [16, 32], tmp_path, attention=True)
    out = tmp_path / "s.png"
    assert main(["sample", str(run), CAPS[0], "-n", "2", "-o", str(out), "--all-stages"]) == 0
    from PIL import Image

    w, h = Image.open(out).size
    assert w > h  # stages side by side
    assert "stages 16, 32" in capsys.readouterr().out
    # t2igan eval runs on a multi-stage attention model (an untrained evaluator: only the plumbing is checked)
    from t2igan.data.folder import load_folder
    from t2igan.eval.evaluator import AttributeEvaluator

    ev = tmp_path / "ev"
    AttributeEvaluator(load_folder(tiny_data, "test").attribute_values, width=8, feature_dim=16,
                       image_size=32).save_pretrained(ev)
    assert main(["eval", str(run), "--evaluator", str(ev), "--n-samples", "16", "--splits", "test", "--device", "cpu",
                 "--batch-size", "8"]) == 0
    res = json.loads((run / "eval" / "metrics.json").read_text())
    assert res["generated_image_size"] == [32, 32] and "test" in res["splits"]


def test_mirrorgan_with_stream(tiny_data, tiny_damsm, tmp_path):
    stream = tmp_path / "stream"
    _fit(classic_config("stream", tiny_data, tiny_damsm, stream, **{"model.embed_size": 16, "model.hidden_size": 8,
                                                                     "model.width": 4, "model.image_size": 32}))
    run = tmp_path / "run"
    cfg = classic_config("mirrorgan", tiny_data, tiny_damsm, run, **SMALL["attngan"], **{"stream": str(stream)})
    tr = build_training(cfg, resume=False)
    cnn_before = {k: v.clone() for k, v in tr.task.caption_cnn.state_dict().items()}
    logs = tr.task.train_step(tr.to_batch(next(tr.batches()), 0), 0)
    assert logs["cap_loss"] > 0 and "w_loss" not in logs  # official birds config: DAMSM lambda 0
    assert all(torch.equal(v, tr.task.caption_cnn.state_dict()[k]) for k, v in cnn_before.items())  # STREAM frozen
    assert tr.fit()["step"] == 2
    _pipeline_checks(run, [16, 32], tmp_path, attention=True)
    with pytest.raises(T2IError, match="not an image generator|has no generator"):
        Pipeline.from_pretrained(stream)


@pytest.mark.parametrize("name", ["gan_int_cls", "stackgan_stage1", "stackgan", "stackganpp", "attngan", "mirrorgan",
                                  "stream"])
def test_presets_load(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / f"{name}_synth64.yaml")
    assert cfg.data.root == "data/synthflowers64" and cfg.text_encoder == "runs/damsm_synth64"
    if hasattr(cfg.model, "branch_num"):  # the multi-scale presets are consistent with their data section
        assert cfg.data.image_size == cfg.model.base_size * 2 ** (cfg.model.branch_num - 1)
        assert cfg.data.num_scales == cfg.model.branch_num


def test_hdgan_losses_are_least_squares():
    from t2igan.families.classic import lsgan
    from t2igan.families.stackganpp import StackGANppStep

    assert lsgan(torch.tensor([1.0, 3.0]), True).item() == pytest.approx(2.0)
    assert lsgan(torch.tensor([1.0, 3.0]), False).item() == pytest.approx(5.0)
    ones, zeros = torch.ones(4), torch.zeros(4)
    step = SimpleNamespace(adv_d=lsgan)  # the official loss of model.hdgan (gan.loss: official)
    perfect = StackGANppStep.d_loss_hdgan(step, [ones, torch.ones(4, 16)], [zeros, torch.ones(4, 16)], [zeros, torch.zeros(4, 16)])
    assert perfect.item() == 0.0  # real pair 1, wrong pair 0, fake pair 0; real patches 1, fake patches 0
    worst = StackGANppStep.d_loss_hdgan(step, [zeros, torch.zeros(4, 16)], [ones, torch.zeros(4, 16)], [ones, torch.ones(4, 16)])
    assert worst.item() == pytest.approx(1 + 1 + 1 + 1)


# ----------------------------------------------------------------------------- parity with the official code
def fill_weights(net):
    """Deterministic weights: one generator (seed 0) over the sorted state-dict keys, N(0, 0.2^2);
    BN running variances kept positive. tests/data/official_parity.safetensors holds what the
    official model.py definitions output with weights filled this way."""
    g = torch.Generator().manual_seed(0)
    state = net.state_dict()
    new = {}
    for k in sorted(state):
        v = state[k]
        if v.is_floating_point():
            v = torch.randn(v.shape, generator=g) * 0.2
            if k.endswith("running_var"):
                v = v.abs() + 0.5
        new[k] = v
    net.load_state_dict(new)
    return net.eval()


def _official():
    from pathlib import Path

    from safetensors.torch import load_file

    return load_file(str(Path(__file__).parent / "data" / "official_parity.safetensors"))


@pytest.mark.parametrize("name", ["stackgan_stage2", "stackganpp", "attngan", "mirrorgan"])
def test_outputs_match_the_official_code(name):
    """Same weights (same key names, same order) and same CA noise -> the official outputs, to 1e-5."""
    ref = {k.split("/", 1)[1]: v for k, v in _official().items() if k.startswith(name + "/")}
    if name == "stackgan_stage2":
        s1 = stackgan.STAGE1_G(t_dim=16, c_dim=4, nz=10, gf_dim=4, imsize=64)
        g = stackgan.STAGE2_G(s1.config, gf_dim=4, c_dim=4, r_num=1, imsize=256)
        steps = (8, 32)
    elif name == "stackganpp":
        g = stackganpp.G_NET(t_dim=16, c_dim=4, nz=10, gf_dim=8, r_num=1, branch_num=2, base_size=64)
        steps = (8, 16)
    else:
        g = {"attngan": attngan, "mirrorgan": mirrorgan}[name].G_NET(t_dim=16, c_dim=100, nz=10, gf_dim=4, r_num=1,
                                                                      branch_num=2, base_size=64)
        steps = (8, 16)
    fill_weights(g)
    with torch.no_grad():
        out = g.run(ref["z"], ref["sent"], ref.get("words"), None, eps=ref["eps"])
    for k, (img, s) in enumerate(zip(out.images, steps)):
        expect = ref[f"out{k}"]
        assert (expect.abs() < 0.99).float().mean() > 0.3  # not saturated: the comparison means something
        torch.testing.assert_close(img[:, :, ::s, ::s], expect, rtol=1e-5, atol=1e-5)
    if "att0" in ref:
        torch.testing.assert_close(out.attention[0][:, :, ::8, ::8], ref["att0"], rtol=1e-5, atol=1e-6)
