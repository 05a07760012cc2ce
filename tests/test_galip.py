"""GALIP: networks (shapes, the official layer choices for a 12-layer CLIP), the frozen CLIP parts,
two training steps through the real trainer, the MA-GP against a hand computation, export ->
Pipeline, and one-line errors for bad values. Everything on a tiny random CLIP (tests/clip_fixture.py)."""
from __future__ import annotations

import pytest
import torch
from clip_fixture import tiny_clip_dir
from conftest import tiny_overrides

from t2igan import T2IError
from t2igan.config import load_config
from t2igan.models import galip
from t2igan.pipeline import Pipeline
from t2igan.train.run import build_training

SMALL = {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "model.code_ch": 8, "model.mid_ch": 8, "model.map_num": 2}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_clip_dir(tmp_path_factory.mktemp("clip"))  # 32 px, patch 8 (grid 4), width 32, 4 layers, 32-d


@pytest.fixture(scope="module")
def clip(clip_dir):
    from t2igan.text.clip import load_clip

    return load_clip(clip_dir)


def galip_config(data, clip_dir, out, **extra):
    return load_config(None, tiny_overrides(data, out, **{**SMALL, "clip": str(clip_dir), "data.crop": False, **extra}),
                       task="galip")


def vision_dict(**kw):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**kw).to_dict()


# ----------------------------------------------------------------------------- networks
def test_official_layers_for_a_12_layer_clip_and_scaled_ones_otherwise():
    assert galip.d_feature_layers(12) == [1, 4, 8]
    assert galip.mapper_prompt_layers(12) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert galip.d_feature_layers(4) == [0, 1, 3] and galip.mapper_prompt_layers(4) == [1, 2, 3]
    assert galip.d_feature_layers(24) == [2, 8, 16] and galip.mapper_prompt_layers(24) == list(range(1, 17))
    assert galip.d_feature_layers(2) == [0, 1] and galip.mapper_prompt_layers(2) == [1]  # runs/clip_synth64's 2 layers
    assert all(len(galip.d_feature_layers(n)) == 3 for n in range(3, 49))
    # the ViT-B/32 network of the official code: 7x7 code, 768-wide mapper with 8 prompts, blocks up to 224
    g = galip.NetG(ngf=2, nz=4, cond_dim=8, imsize=224, vision_config=vision_dict(hidden_size=768, num_hidden_layers=12,
                   intermediate_size=8, num_attention_heads=12, image_size=224, patch_size=32), code_ch=4, mid_ch=4)
    assert g.code_sz == 7 and g.config["prompt_layers"] == list(range(1, 9))
    assert g.mapping.fc_prompt.out_features == 768 * 8 and g.mapping.conv.in_channels == 768
    assert [b.imsize for b in g.GBlocks] == [8, 16, 32, 64, 128, 224]
    assert galip.head_kernels(7) == (4, 4) and galip.NetC(ndf=64, cond_dim=512).joint_conv[0].in_channels == 1024


def test_network_shapes_on_the_tiny_clip(clip):
    vc = clip.model.vision_model.config.to_dict()
    g = galip.NetG(ngf=4, nz=8, cond_dim=clip.embed_dim, imsize=32, vision_config=vc, code_ch=8, mid_ch=8)
    g.load_clip(clip.model.vision_model)
    x = g(torch.randn(3, 8), torch.randn(3, clip.embed_dim))
    assert x.shape == (3, 3, 32, 32)
    enc = galip.CLIP_IMG_ENCODER(clip.model.vision_model, clip.model.visual_projection, [0, 1, 3], clip.image_size,
                                 clip.image_mean, clip.image_std)
    feats, emb = enc(x)
    assert feats.shape == (3, 3, clip.vision_width, clip.grid, clip.grid) and emb.shape == (3, clip.embed_dim)
    # the embedding is CLIP's own (the bundle's encode_image, normalised), the features its hidden states
    assert torch.allclose(torch.nn.functional.normalize(emb, dim=-1), clip.encode_image(x), atol=1e-5)
    hs = clip.model.vision_model(pixel_values=clip.pixel_values(x), output_hidden_states=True).hidden_states
    assert torch.allclose(feats[:, 2], hs[4][:, 1:].transpose(1, 2).reshape(3, -1, clip.grid, clip.grid), atol=1e-5)
    out = galip.NetC(ndf=4, cond_dim=clip.embed_dim, grid=clip.grid)(galip.NetD(ndf=4, CLIP_ch=clip.vision_width)(feats),
                                                                      torch.randn(3, clip.embed_dim))
    assert out.shape == (3, 1, 1, 1)
    # without prompts the mapper is CLIP's own transformer on the given tokens (no patch embedding)
    m = g.mapping.CLIP_ViT
    tokens = torch.randn(2, clip.vision_width, clip.grid, clip.grid)
    m_no = galip.CLIP_Mapper(vc, [])
    m_no.load_from(clip.model.vision_model)
    vm = clip.model.vision_model
    h = torch.cat((vm.embeddings.class_embedding.expand(2, 1, -1), tokens.flatten(2).transpose(1, 2)), 1)
    h = vm.encoder(inputs_embeds=vm.pre_layrnorm(h + vm.embeddings.position_embedding.weight)).last_hidden_state
    assert torch.allclose(m_no(tokens, torch.zeros(2, 0, clip.vision_width)),
                          h[:, 1:].transpose(1, 2).reshape(2, -1, clip.grid, clip.grid), atol=1e-5)
    assert not any(p.requires_grad for p in m.parameters()) and not m.training and not g.mapping.CLIP_ViT.train().training


# ----------------------------------------------------------------------------- training
def test_two_steps_train_g_keep_clip_frozen_and_export_to_the_pipeline(tiny_data, clip_dir, tmp_path):
    cfg = galip_config(tiny_data, clip_dir, tmp_path / "run", **{"train.ema_decay": 0.5})
    tr = build_training(cfg, resume=False)
    step = tr.task
    assert step.d_layers == [0, 1, 3] and step.prompt_layers == [1, 2, 3]
    clip_before = {k: v.clone() for k, v in step.clip.model.state_dict().items()}
    mapper = step.netG.mapping.CLIP_ViT
    mapper_before = {k: v.clone() for k, v in mapper.state_dict().items()}
    trainable = {n: p.detach().clone() for n, p in step.netG.named_parameters() if p.requires_grad}
    # the mapper's copy starts as the CLIP's layers, bit for bit
    vm = step.clip.model.vision_model
    assert torch.equal(mapper.layers[2].mlp.fc1.weight, vm.encoder.layers[2].mlp.fc1.weight)
    recorded = []
    run_step = step.train_step
    step.train_step = lambda batch, i: recorded.append(run_step(batch, i)) or recorded[-1]  # the trainer's calls
    assert tr.fit()["step"] == 2 and len(recorded) == 2
    for logs in recorded:
        assert {"d_loss", "d_real", "d_mis", "d_fake", "ma_gp", "g_loss", "g_adv", "g_sim"} <= set(logs)
        assert all(bool(torch.isfinite(v).all()) for v in logs.values())
    # frozen: the CLIP (D's image encoder and the text tower) and the generator's copy unchanged, no grads
    for k, v in step.clip.model.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    assert all(p.grad is None and not p.requires_grad for p in step.clip.model.parameters())
    for k, v in mapper.state_dict().items():
        assert torch.equal(v, mapper_before[k]), k
    assert all(p.grad is None for p in mapper.parameters())
    changed = [n for n, p in step.netG.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert "mapping.fc_prompt.weight" in changed and "to_rgb.1.weight" in changed
    # export -> Pipeline: the generator rebuilt from its own folder (with its CLIP copy), same images per seed
    pipe = Pipeline.from_pretrained(tmp_path / "run")
    assert pipe.family == "galip" and pipe.text_encoder.spec == step.clip.spec
    caps = [tr.dataset.data.captions[0][0], tr.dataset.data.captions[1][0]]
    a = pipe.generate(caps, seed=3, n=2)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, pipe.generate(caps, seed=3, n=2))
    assert not torch.equal(a, pipe.generate(caps, seed=4, n=2))
    with torch.no_grad():
        sent = step.text.captions(caps)[1].repeat_interleave(2, 0)
        z = pipe.noise(4, 3)
        own = tr.ema(z, sent).float().add(1).div(2).clamp(0, 1)
    assert torch.allclose(own, a, atol=1e-6)
    pipe.save_pretrained(tmp_path / "copy")
    assert torch.equal(a, Pipeline.from_pretrained(tmp_path / "copy").generate(caps, seed=3, n=2))


def test_gradients_reach_g_through_the_frozen_clip(tiny_data, clip_dir, tmp_path):
    step = build_training(galip_config(tiny_data, clip_dir, tmp_path / "g"), resume=False).task
    noise, sent = torch.randn(2, 8), torch.nn.functional.normalize(torch.randn(2, step.clip.embed_dim), dim=-1)
    feats, emb = step.image_encoder(step.netG(noise, sent))
    sim = torch.nn.functional.cosine_similarity(emb, sent).mean()
    (-step.netC(step.netD(feats), sent).mean() - 4 * sim).backward()
    grads = {n: p.grad for n, p in step.netG.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert grads["fc_code.weight"].abs().sum() > 0 and grads["mapping.fc_prompt.weight"].abs().sum() > 0
    assert all(p.grad is None for p in step.clip.model.parameters())
    assert all(p.grad is None for p in step.netG.mapping.CLIP_ViT.parameters())


def test_ma_gp_is_the_hand_computation(tiny_data, clip_dir, tmp_path):
    from t2igan.models.dfgan import matching_aware_gp

    step = build_training(galip_config(tiny_data, clip_dir, tmp_path / "gp"), resume=False).task
    torch.manual_seed(0)
    for p in step.netD.parameters():  # gamma / beta start at 0: make every path count
        torch.nn.init.normal_(p, std=0.2)
    feats = torch.randn(3, 3, step.clip.vision_width, step.clip.grid, step.clip.grid, requires_grad=True)
    sent = torch.randn(3, step.clip.embed_dim, requires_grad=True)
    pred = step.netC(step.netD(feats), sent)
    gp = matching_aware_gp(pred, feats, sent, 2.0, 6.0)
    norms = []
    for i in range(3):  # one image at a time: the gradient of its own score
        f, s = feats[i:i + 1].detach().requires_grad_(True), sent[i:i + 1].detach().requires_grad_(True)
        gf, gs = torch.autograd.grad(step.netC(step.netD(f), s).sum(), (f, s))
        norms.append(torch.cat((gf.flatten(), gs.flatten())).norm())
    assert torch.allclose(gp, 2.0 * torch.stack(norms).pow(6).mean(), rtol=1e-4)
    assert gp.requires_grad  # it trains D (create_graph)


# ----------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(("extra", "message"), [
    ({"model.clip_resize": "area"}, "model.clip_resize must be one of"),
    ({"model.d_layers": "[0,4]"}, r"model.d_layers=\[0, 4\]: give increasing, distinct layer indices of the CLIP's 0..3"),
    ({"model.prompt_layers": "[2,1]"}, "model.prompt_layers"),
    ({"text_encoder": "minilm"}, "is not the text tower of clip="),
    ({"clip": "/nonexistent/clip"}, "/nonexistent/clip"),
    ({"train.fused_upsample": "true"}, "does not support it"),
])
def test_bad_values_are_one_line_errors_before_anything_is_written(tiny_data, clip_dir, tmp_path, extra, message):
    cfg = galip_config(tiny_data, clip_dir, tmp_path / "bad", **extra)
    cache = tiny_data / ".cache" / "text_embeddings"
    before = sorted(cache.rglob("*")) if cache.is_dir() else []
    with pytest.raises(T2IError, match=message) as e:
        build_training(cfg, resume=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "bad").exists()
    assert (sorted(cache.rglob("*")) if cache.is_dir() else []) == before


def test_config_range_errors(tiny_data, clip_dir, tmp_path):
    with pytest.raises(T2IError, match="loss.sim_w"):
        galip_config(tiny_data, clip_dir, tmp_path / "x", **{"loss.sim_w": -1})
    with pytest.raises(T2IError, match="model.map_num"):
        galip_config(tiny_data, clip_dir, tmp_path / "x", **{"model.map_num": 0})


def test_fast_paths_bf16_and_channels_last_train(tiny_data, clip_dir, tmp_path):
    cfg = galip_config(tiny_data, clip_dir, tmp_path / "fast", **{"train.precision": "bf16", "train.channels_last": "true",
                                                                   "train.max_steps": 1})
    tr = build_training(cfg, resume=False)
    recorded = []
    run_step = tr.task.train_step
    tr.task.train_step = lambda batch, i: recorded.append(run_step(batch, i)) or recorded[-1]
    assert tr.fit()["step"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in recorded[0].values())
    assert tr.task.netG.GBlocks[0].c1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("loss", ["wgan-gp", "r1", "lsgan"])
def test_shared_gan_losses_take_their_penalty_in_clip_feature_space(tiny_data, clip_dir, tmp_path, loss):
    tr = build_training(galip_config(tiny_data, clip_dir, tmp_path / loss, **{"gan.loss": loss}), resume=False)
    logs = tr.task.train_step(tr.to_batch(next(tr.batches()), 0), 0)
    assert ("d_penalty" in logs) == (loss != "lsgan") and "ma_gp" not in logs
    assert all(bool(torch.isfinite(v).all()) for v in logs.values())


def test_a_two_layer_clip_reads_two_layers(tiny_data, tmp_path):
    """The preset's CLIP (runs/clip_synth64) has 2 vision layers: D reads both, one prompt layer."""
    d = tiny_clip_dir(tmp_path, layers=2)
    tr = build_training(galip_config(tiny_data, d, tmp_path / "two"), resume=False)
    assert tr.task.d_layers == [0, 1] and tr.task.prompt_layers == [1] and len(tr.task.netD.DBlocks) == 1
    logs = tr.task.train_step(tr.to_batch(next(tr.batches()), 0), 0)
    assert all(bool(torch.isfinite(v).all()) for v in logs.values())


def test_resume_refuses_a_changed_clip_before_anything_is_written(tiny_data, clip_dir, tmp_path):
    """The run's CLIP is read from its folder, not checkpointed: its fingerprint is saved with the
    checkpoint, and --resume with other weights at that path is one line, the run folder untouched."""
    import shutil

    from t2igan.train.run import train

    clip_copy = tmp_path / "clip"
    shutil.copytree(clip_dir, clip_copy)
    out = tmp_path / "run"
    cfg = galip_config(tiny_data, clip_copy, out, **{"train.max_steps": 1, "train.ckpt_every": 1})
    train(cfg)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".lock" not in p.name}
    shutil.rmtree(clip_copy)
    tiny_clip_dir(tmp_path, seed=1, name="clip")  # the same architecture, other weights, same path
    with pytest.raises(T2IError, match=r"--resume: the CLIP of this config is not the one .* trained with"):
        train(galip_config(tiny_data, clip_copy, out, **{"train.max_steps": 2, "train.ckpt_every": 1}), resume=True)
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".lock" not in p.name}
    assert after == before
    shutil.rmtree(clip_copy)
    shutil.copytree(clip_dir, clip_copy)  # the original back: the run continues
    assert train(galip_config(tiny_data, clip_copy, out, **{"train.max_steps": 2, "train.ckpt_every": 1}),
                 resume=True)["summary"]["step"] == 2
