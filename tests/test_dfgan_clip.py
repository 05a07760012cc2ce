"""DF-GAN with CLIP: as the text encoder, as the matching term on G (loss.matching=clip), or both.

The CLIP term takes the DAMSM term's place and code path, so it is exact under train.accumulate
through the same gradient cache (checked in float64, as tests/test_accumulate.py does)."""
from __future__ import annotations

import pytest
import torch

from t2igan import T2IError
from t2igan.pipeline import Pipeline
from t2igan.train.run import build_training

from conftest import dfgan_config, first_step


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from clip_fixture import tiny_clip_dir

    return tiny_clip_dir(tmp_path_factory.mktemp("clip"), image_size=32, patch_size=8, width=32, layers=2, proj=16)


def variant(name, tiny_damsm, tiny_clip):
    clip = f"clip:{tiny_clip}"
    return {"damsm": {"text_encoder": str(tiny_damsm), "loss.damsm_lambda": 1.0},
            "cliptext": {"text_encoder": clip},
            "clipdamsm": {"text_encoder": str(tiny_damsm), "loss.matching": "clip", "loss.matching_clip": clip,
                          "loss.clip_lambda": 1.0},
            "clipboth": {"text_encoder": clip, "loss.matching": "clip", "loss.clip_lambda": 1.0}}[name]


def clip_state(task) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in task.matching.model.state_dict().items()}


@pytest.mark.parametrize("name", ["cliptext", "clipdamsm", "clipboth"])
def test_every_variant_trains_with_a_frozen_clip(name, tiny_data, tiny_damsm, tiny_clip, tmp_path):
    """2 steps; the matching CLIP is bit-identical afterwards, without gradients, fingerprinted with
    the checkpoint, and not exported (the pipeline holds the text encoder and the generator)."""
    out = tmp_path / "run"
    tr = build_training(dfgan_config(tiny_data, tiny_damsm, out, **variant(name, tiny_damsm, tiny_clip)), resume=False)
    t = tr.task
    assert (t.matching is not None) == (name != "cliptext") and t.image_encoder is None
    before = clip_state(t) if t.matching is not None else {}
    assert tr.fit()["step"] == 2
    if t.matching is not None:
        after = t.matching.model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k].cpu()) for k in before)
        assert all(p.grad is None and not p.requires_grad for p in t.matching.model.parameters())
        assert set(t.frozen_fingerprints()) == {"matching CLIP"}
        saved = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)["frozen"]
        assert saved == {"matching CLIP": t.matching.clip.fingerprint()}
    else:
        assert t.frozen_fingerprints() == {}
    names = {p.name for p in (out / "pipeline").iterdir()}
    assert names - {"vocab.json"} == {"generator", "text_encoder", "model_index.json"}
    pipe = Pipeline.from_pretrained(out)
    assert pipe.generate([tr.dataset.data.captions[0][0]], seed=1, n=2).shape == (2, 3, 32, 32)


def test_the_step_logs_the_clip_term(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    logs = first_step(build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "run",
                                                  **variant("clipboth", tiny_damsm, tiny_clip)), resume=False))
    assert "g_clip" in logs and "g_damsm" not in logs and logs["g_clip"] > 0
    assert logs["g_loss"] == pytest.approx(logs["g_adv"] + 1.0 * logs["g_clip"], rel=1e-6)


def test_the_clip_loss_alone_moves_the_generator(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    """With G's adversarial term zeroed, clip_lambda 0 leaves G as it was and clip_lambda 1 moves it."""
    moved = {}
    for lam in (0.0, 1.0):
        v = {**variant("clipdamsm", tiny_damsm, tiny_clip), "loss.clip_lambda": lam}
        tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / f"l{lam}", **v), resume=False)
        t = tr.task
        tr.setup_fast_paths()
        critic = t.netC
        t.netC = lambda h, s: critic(h, s) * 0.0  # the G update's critic (D's update keeps the real one)
        g0 = [p.detach().clone() for p in t.netG.parameters()]
        torch.manual_seed(0)
        logs = t.train_step(tr.to_batch(next(tr.batches()), 0), 0)
        assert float(logs["g_adv"]) == 0.0 and ("g_clip" in logs) == (lam > 0)
        moved[lam] = any(not torch.equal(a, b.detach()) for a, b in zip(g0, t.netG.parameters()))
    assert moved == {0.0: False, 1.0: True}


def test_matching_damsm_is_the_default_step(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    """The CLIP keys do nothing with loss.matching=damsm: the same logs and weights as the default
    (this is the previous DF-GAN step: the DAMSM term's code path is unchanged)."""
    runs = {}
    for key, extra in (("default", {}), ("explicit", {"loss.matching": "damsm", "loss.clip_lambda": 3.0,
                                                        "loss.matching_clip": f"clip:{tiny_clip}"})):
        tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / key,
                                         **variant("damsm", tiny_damsm, tiny_clip), **extra), resume=False)
        assert tr.task.matching is None
        runs[key] = first_step(tr), {k: v.clone() for k, v in tr.task.netG.state_dict().items()}
    (a, wa), (b, wb) = runs["default"], runs["explicit"]
    assert a == b and "g_damsm" in a and "g_clip" not in a
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_accumulated_steps_equal_the_full_batch_with_the_clip_term(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    """Batch 8, 2 steps in float64: accumulate 2 ends with accumulate 1's weights (the CLIP sentence
    loss contrasts the whole batch: its gradient goes through the matching term's cache)."""
    from test_accumulate import train_double

    extra = {**variant("clipdamsm", tiny_damsm, tiny_clip), "train.max_steps": 2}
    ref, ref_logs, init = train_double(dfgan_config(tiny_data, tiny_damsm, tmp_path / "k1", **extra))
    assert max((ref[k] - init[k]).abs().max() for k in init) > 1e-4
    got, logs, _ = train_double(dfgan_config(tiny_data, tiny_damsm, tmp_path / "k2", **extra, **{"train.accumulate": 2}))
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-9, msg=lambda m: f"{name}: {m}")
    assert all("g_clip" in d for d in ref_logs) and [d.keys() for d in logs] == [d.keys() for d in ref_logs]
    for a, b in zip(logs, ref_logs):
        assert a["g_clip"] == pytest.approx(b["g_clip"], rel=1e-9)


def test_the_micro_batches_reach_the_clip_in_b_over_k_rows(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "run", **variant("clipdamsm", tiny_damsm, tiny_clip),
                                     **{"train.accumulate": 4}), resume=False)
    seen = []
    tr.task.matching.model.vision_model.register_forward_hook(lambda m, args, kw, out: seen.append(kw["pixel_values"].size(0)),
                                                              with_kwargs=True)
    assert "g_clip" in first_step(tr)
    assert seen == [2] * 8  # the cache: 4 micro-batches without a graph; the G update: each one again, with its graph


def test_resume_refuses_another_matching_clip(tiny_data, tiny_damsm, tiny_clip, tmp_path):
    from clip_fixture import tiny_clip_dir

    from t2igan.train.run import train

    out = tmp_path / "run"
    v = {**variant("clipdamsm", tiny_damsm, tiny_clip), "train.max_steps": 1, "train.ckpt_every": 1}
    train(dfgan_config(tiny_data, tiny_damsm, out, **v))
    other = tiny_clip_dir(tmp_path, image_size=32, patch_size=8, width=32, layers=2, proj=16, seed=1)
    v.update({"loss.matching_clip": f"clip:{other}", "train.max_steps": 2})
    with pytest.raises(T2IError, match=r"--resume: the matching CLIP of this config is not the one .* trained with"):
        train(dfgan_config(tiny_data, tiny_damsm, out, **v), resume=True)


@pytest.mark.parametrize("bad, says", [
    ({"loss.matching": "foo"}, "loss.matching='foo'; choose one of damsm, clip"),
    ({"loss.matching": "clip"}, "loss.matching=clip needs a CLIP"),
    ({"loss.matching": "clip", "loss.matching_clip": "runs/x"}, "not a clip: spec"),
    ({"loss.matching": "clip", "loss.damsm_lambda": 1.0, "with_clip": True}, "set loss.damsm_lambda=0"),
    ({"loss.matching": "clip", "loss.damsm_warmup": 10, "with_clip": True}, "set loss.damsm_warmup=0"),
    ({"loss.matching": "clip", "loss.damsm_decay_steps": 10, "with_clip": True}, "set loss.damsm_decay_steps=0"),
    ({"loss.clip_lambda": -1.0}, "loss.clip_lambda"),
])
def test_bad_matching_options_are_one_line_before_anything_is_written(bad, says, tiny_data, tiny_damsm, tiny_clip,
                                                                      tmp_path):
    v = {k: x for k, x in bad.items() if k != "with_clip"}
    if bad.get("with_clip"):
        v["loss.matching_clip"] = f"clip:{tiny_clip}"
    with pytest.raises(T2IError, match=says) as e:
        build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "run", **v), resume=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()
