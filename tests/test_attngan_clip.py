"""AttnGAN with CLIP: as the text encoder, as the matching loss (model.matching=clip), or both."""
from __future__ import annotations

import pytest
import torch

from t2igan import T2IError
from t2igan.config import load_config
from t2igan.pipeline import Pipeline
from t2igan.text.clip_matching import sentence_losses_of
from t2igan.train.run import build_training

from conftest import first_step, tiny_overrides

SMALL = {"model.gf_dim": 4, "model.df_dim": 4, "model.c_dim": 8, "model.nz": 8, "model.r_num": 1,
         "model.branch_num": 2, "model.base_size": 16, "data.num_scales": 2, "data.crop": False}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from clip_fixture import tiny_clip_dir

    return tiny_clip_dir(tmp_path_factory.mktemp("clip"), image_size=32, patch_size=8, width=32, layers=2, proj=16)


def variant(name, tiny_damsm, tiny_clip):
    clip = f"clip:{tiny_clip}"
    return {"damsm": {"text_encoder": f"damsm:{tiny_damsm}"},
            "cliptext": {"text_encoder": clip, "model.damsm_lambda": 0.0},
            "clipdamsm": {"text_encoder": f"damsm:{tiny_damsm}", "model.damsm_lambda": 0.0, "model.matching": "clip",
                          "model.matching_clip": clip},
            "clipboth": {"text_encoder": clip, "model.damsm_lambda": 0.0, "model.matching": "clip"}}[name]


def config(data, out, **extra):
    return load_config(None, tiny_overrides(data, out, **{**SMALL, **extra}), task="attngan")


def one_step(cfg):
    tr = build_training(cfg, resume=False)
    return tr, first_step(tr)


@pytest.mark.parametrize("name", ["damsm", "cliptext", "clipdamsm", "clipboth"])
def test_every_variant_trains_exports_and_samples(name, tiny_data, tiny_damsm, tiny_clip, tmp_path):
    cfg = config(tiny_data, tmp_path / "run", **variant(name, tiny_damsm, tiny_clip))
    tr = build_training(cfg, resume=False)
    matching = tr.task.matching
    assert (matching is not None) == (name in ("clipdamsm", "clipboth"))
    before = {k: v.clone() for k, v in matching.model.state_dict().items()} if matching is not None else {}
    assert tr.fit()["step"] == 2
    if matching is not None:
        after = matching.model.state_dict()
        assert all(torch.equal(before[k], after[k].cpu()) for k in before)
        assert all(p.grad is None and not p.requires_grad for p in matching.model.parameters())
    pipe = Pipeline.from_pretrained(tmp_path / "run")
    caps = [tr.dataset.data.captions[0][0], tr.dataset.data.captions[1][0]]
    a = pipe.generate(caps, seed=1, n=2)
    assert a.shape == (4, 3, 32, 32)
    names = {p.name for p in (tmp_path / "run" / "pipeline").iterdir()}
    assert names - {"vocab.json"} == {"generator", "text_encoder", "model_index.json"}  # no matching CLIP there


def test_the_clip_loss_alone_moves_the_generator(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    v = variant("clipdamsm", tiny_damsm, tiny_clip)
    zero_adv = {"model.kl_coeff": 0.0}
    moved = {}
    for lam in (0.0, 1.0):
        tr = build_training(config(tiny_data, tmp_path / f"l{lam}", **v, **zero_adv, **{"model.clip_lambda": lam}),
                            resume=False)
        g = tr.task.netG
        # the adversarial terms zeroed: the G loss is the CLIP term only
        tr.task.adv_g = lambda logits: logits.sum() * 0.0
        p0 = [p.detach().clone() for p in g.parameters()]
        torch.manual_seed(0)
        batch = tr.to_batch(next(tr.batches()), 0)
        logs = tr.task.train_step(batch, 0)
        moved[lam] = any(not torch.equal(a, b.detach()) for a, b in zip(p0, g.parameters()))
        assert ("clip_s_loss" in logs) == (lam > 0)
    assert moved == {0.0: False, 1.0: True}


def test_sentence_loss_matches_a_hand_computation():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    txt = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    s0, s1 = sentence_losses_of(img, txt, 10.0)
    sims = torch.tensor([[0.0, 1.0], [0.8, 0.6]]) * 10.0  # cosine(image i, caption j) * gamma3
    lse_rows = torch.logsumexp(sims, 1)
    lse_cols = torch.logsumexp(sims, 0)
    want0 = ((lse_rows[0] - sims[0, 0]) + (lse_rows[1] - sims[1, 1])) / 2
    want1 = ((lse_cols[0] - sims[0, 0]) + (lse_cols[1] - sims[1, 1])) / 2
    assert torch.allclose(s0, want0) and torch.allclose(s1, want1)
    # by hand: image->text rows log(1 + e^10) = 10.00005 and log(e^8 + e^6) - 6 = 2.12693;
    # text->image rows log(1 + e^8) = 8.00034 and log(e^10 + e^6) - 6 = 4.01815
    assert abs(float(s0) - 6.06349) < 1e-4 and abs(float(s1) - 6.00924) < 1e-4


def test_matching_damsm_is_the_default_step(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    v = variant("damsm", tiny_damsm, tiny_clip)
    _, default = one_step(config(tiny_data, tmp_path / "a", **v))
    _, explicit = one_step(config(tiny_data, tmp_path / "b", **v, **{"model.matching": "damsm",
                                                                        "model.clip_lambda": 3.0}))
    assert default == explicit and "s_loss" in default and "w_loss" in default and "clip_s_loss" not in default


@pytest.mark.parametrize("bad, says", [
    ({"model.matching": "foo"}, "model.matching='foo'"),
    ({"model.matching": "clip", "model.damsm_lambda": 0.0}, "needs a CLIP"),
    ({"model.matching": "clip"}, "set model.damsm_lambda=0"),
    ({"model.matching": "clip", "model.damsm_lambda": 0.0, "model.matching_clip": "runs/x"}, "not a clip: spec"),
    ({"model.clip_lambda": -1.0}, "clip_lambda"),
])
def test_bad_matching_options_are_one_line_before_anything_is_written(bad, says, tiny_data, tiny_damsm, tiny_clip,
                                                                      tmp_path):
    v = {**variant("damsm", tiny_damsm, tiny_clip), **bad}
    if bad.get("model.matching") == "clip" and "model.damsm_lambda" not in bad:
        v["model.matching_clip"] = f"clip:{tiny_clip}"
    with pytest.raises(T2IError, match=says) as e:
        build_training(config(tiny_data, tmp_path / "run", **v), resume=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()
