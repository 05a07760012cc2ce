"""DAMSM image encoder trained against a frozen pretrained sentence encoder (tiny local BERT in the
MiniLM format), and DF-GAN's DAMSM sentence loss through it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from t2igan import T2IError
from t2igan.train.run import build_training
from t2igan.config import load_config
from t2igan.families.dfgan import DFGANLossConfig

from conftest import dfgan_config, tiny_overrides
from test_encoders import write_tiny_bert

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-minilm")


def frozen_damsm_config(data, bert, out, **extra):
    return load_config(None, tiny_overrides(data, out, **{"text_encoder": f"minilm:{bert}", "loss.words": False,
                                                          "image.width": 8, "image.image_size": 32, **extra}), task="damsm")


@pytest.fixture(scope="module")
def frozen_run(tiny_data, bert, tmp_path_factory):
    """A 2-step image-encoder run against the frozen tiny BERT, with its trainer."""
    out = tmp_path_factory.mktemp("runs") / "damsm_minilm"
    tr = build_training(frozen_damsm_config(tiny_data, bert, out), resume=False)
    text_before = {k: v.clone() for k, v in tr.task.text_encoder.state_dict().items()}
    image_before = {k: v.clone() for k, v in tr.task.image_encoder.state_dict().items()}
    table_before = tr.task.sentences.table.clone()
    tr.fit()
    return out, tr, text_before, image_before, table_before


def test_image_encoder_trains_against_frozen_sentence_encoder(frozen_run, bert):
    from t2igan.text.damsm_encoder import load_image_encoder_for
    from t2igan.text.spec import load_caption_encoder

    out, tr, text_before, image_before, table_before = frozen_run
    task = tr.task
    # only the image encoder is trained and checkpointed; its code has the sentence width
    assert list(task.modules) == ["image_encoder"] and task.image_encoder.nef == 16
    trained = {id(p) for g in task.optimizers["adam"].param_groups for p in g["params"]}
    assert trained == {id(p) for p in task.image_encoder.parameters()}
    assert json.loads((out / "train_summary.json").read_text())["step"] == 2
    # the text side did not change: weights, and the cached vectors the loss reads
    assert all(torch.equal(v, text_before[k]) for k, v in task.text_encoder.state_dict().items())
    assert torch.equal(task.sentences.table, table_before)
    assert not any(p.requires_grad for p in task.text_encoder.parameters())
    # the image encoder did
    after = task.image_encoder.state_dict()
    assert any(not torch.equal(after[k].cpu(), image_before[k]) for k in after if after[k].is_floating_point())
    # the exported run names the frozen encoder by spec and fingerprint, beside an ordinary image encoder
    ref = json.loads((out / "pipeline" / "text_encoder" / "config.json").read_text())
    assert ref["kind"] == "pretrained_text_encoder" and ref["spec"] == f"minilm:{bert}"
    assert load_file(str(out / "checkpoint" / "modules.safetensors")).keys() == {f"image_encoder/{k}" for k in after}
    enc = load_caption_encoder(f"minilm:{bert}")
    img = load_image_encoder_for(out, enc, f"minilm:{bert}")
    assert torch.equal(img.emb_cnn_code.weight, after["emb_cnn_code.weight"].cpu())
    # one loss step on a batch: sentence loss only, finite
    logs = task.losses(tr.to_batch(next(tr.batches()), 0))
    assert set(logs) == {"loss", "s_loss", "i2t_acc"} and torch.isfinite(logs["loss"])


def test_sentence_loss_mask_leaves_pairs_out():
    from t2igan.text import damsm

    torch.manual_seed(0)
    code, sent = torch.randn(4, 6), torch.randn(4, 6)
    sent[2] = sent[1]  # the same caption text for images 1 and 2
    plain = damsm.sentence_loss(code, sent, 10.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, damsm.sentence_loss(code, sent, 10.0, mask=None)))
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1, 2] = mask[2, 1] = True
    s0, s1 = damsm.sentence_loss(code, sent, 10.0, mask=mask)
    scores = torch.nn.functional.normalize(code, dim=1) @ torch.nn.functional.normalize(sent, dim=1).t() * 10.0
    # reference: each row's cross-entropy over the columns it keeps (images 1 and 2 lose each other's caption)
    want = torch.stack([torch.logsumexp(scores[i, [j for j in range(4) if not mask[i, j]]], 0) - scores[i, i]
                        for i in range(4)]).mean()
    assert torch.allclose(s0, want, atol=1e-6) and s0 < plain[0]
    assert torch.allclose(s1, damsm.sentence_loss(sent, code, 10.0, mask=mask)[0], atol=1e-6)


def test_dfgan_damsm_sentence_loss_from_frozen_image_encoder(frozen_run, tiny_data, tiny_damsm, bert, tmp_path):
    out, *_ = frozen_run
    over = {"text_encoder": f"minilm:{bert}", "loss.damsm_lambda": 5.0, "loss.damsm_words": False,
            "loss.damsm_image_encoder": str(out)}
    tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "r", **over), resume=False)
    assert tr.task.image_encoder is not None and tr.task.image_encoder.nef == 16
    enc_before = {k: v.clone() for k, v in tr.task.image_encoder.state_dict().items()}
    logs, step = [], tr.task.train_step
    tr.task.train_step = lambda batch, i: logs.append(step(batch, i)) or logs[-1]
    assert tr.fit()["step"] == 2
    # the sentence term is on G's loss, with its ramp-free weight, and the image encoder stays frozen
    for out_ in logs:
        assert torch.isfinite(out_["g_damsm"]) and out_["g_damsm"] > 0
        assert torch.allclose(out_["g_loss"], out_["g_adv"] + 5.0 * out_["g_damsm"])
    assert all(torch.equal(v, enc_before[k]) for k, v in tr.task.image_encoder.state_dict().items())
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "r" / "checkpoint" / "modules.safetensors")).values())


def test_dfgan_damsm_words_switch_on_damsm_encoder(tiny_data, tiny_damsm, tmp_path):
    """The fair control: the DAMSM text encoder's DF-GAN with the sentence term alone."""
    import copy
    import dataclasses

    tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "r", **{"loss.damsm_lambda": 5.0}), resume=False)
    sent_only = copy.deepcopy(tr.task)  # the same initial weights
    sent_only.cfg = dataclasses.replace(tr.task.cfg, loss=dataclasses.replace(tr.task.cfg.loss, damsm_words=False))
    raw = next(tr.batches())
    logs = {}
    for words, task in ((True, tr.task), (False, sent_only)):
        torch.manual_seed(0)  # the same noise
        logs[words] = task.train_step(tr.to_batch(raw, 0), 0)
    # same weights, batch and noise: D's losses agree; the DAMSM term loses its word part
    assert torch.equal(logs[True]["d_loss"], logs[False]["d_loss"])
    assert torch.equal(logs[True]["g_adv"], logs[False]["g_adv"])
    assert logs[True]["g_damsm"] > logs[False]["g_damsm"] > 0


def test_defaults_keep_the_word_loss_and_no_extra_encoder():
    L = DFGANLossConfig()
    assert L.damsm_words is True and L.damsm_image_encoder == ""
    cfg = load_config(CONFIGS / "dfgan_synth64.yaml")
    assert cfg.loss.damsm_words is True and cfg.loss.damsm_image_encoder == ""
    assert load_config(CONFIGS / "damsm_synth64.yaml").text_encoder == "" and load_config(None, task="damsm").loss.words


def test_presets_differ_from_the_damsm_ones_only_in_the_text_side():
    import dataclasses

    a, b = load_config(CONFIGS / "dfgan_synth64.yaml"), load_config(CONFIGS / "dfgan_minilm_synth64.yaml")
    assert b.text_encoder == "minilm" and b.loss.damsm_image_encoder == "runs/damsm_minilm_synth64"
    assert dataclasses.replace(b.loss, damsm_words=True, damsm_image_encoder="") == a.loss
    assert (b.data, b.model, b.optim) == (a.data, a.model, a.optim)
    assert dataclasses.replace(b.train, out_dir=a.train.out_dir) == a.train
    d, m = load_config(CONFIGS / "damsm_synth64.yaml"), load_config(CONFIGS / "damsm_minilm_synth64.yaml")
    assert m.text_encoder == "minilm" and m.loss.words is False and m.train.out_dir == "runs/damsm_minilm_synth64"
    assert (m.data, m.image, m.optim.lr_g, m.train.batch_size, m.train.max_steps) == \
           (d.data, d.image, d.optim.lr_g, d.train.batch_size, d.train.max_steps)


# ----------------------------------------------------------------------------- errors
def test_frozen_dfgan_damsm_errors(frozen_run, tiny_data, tiny_damsm, bert, tmp_path):
    from t2igan.core import weights as ckpt
    from t2igan.text.damsm import ImageEncoder

    out, *_ = frozen_run
    base = {"text_encoder": f"minilm:{bert}", "loss.damsm_lambda": 1.0, "loss.damsm_words": False}

    def fails(match, **kw):
        with pytest.raises(T2IError, match=match):
            build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "r", **{**base, **kw}), resume=False)

    fails("needs loss.damsm_image_encoder")
    fails("damsm_words=true needs word features", **{"loss.damsm_image_encoder": str(out), "loss.damsm_words": True})
    fails("not trained against a frozen text encoder", **{"loss.damsm_image_encoder": str(tiny_damsm)})
    fails("model folder not found", **{"loss.damsm_image_encoder": str(tmp_path / "nowhere")})
    # the same network with another identity (max_length) is another encoder
    other = tmp_path / "other-bert"
    shutil.copytree(bert, other)
    (other / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16, "do_lower_case": False}))
    fails("trained against the text encoder", **{"text_encoder": f"minilm:{other}", "loss.damsm_image_encoder": str(out)})
    # a hand-made folder whose image encoder has another width
    bad = tmp_path / "bad"
    shutil.copytree(out / "pipeline", bad)
    enc = ImageEncoder(nef=8, width=8, image_size=32)
    ckpt.save_component(enc, bad / "image_encoder", "damsm_image_encoder", dict(nef=8, width=8, image_size=32))
    fails("nef=8 but", **{"loss.damsm_image_encoder": str(bad)})
    # with the DAMSM text encoder the image encoder is its run's
    with pytest.raises(T2IError, match="is for a frozen text encoder"):
        build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "r",
                                    **{"loss.damsm_lambda": 1.0, "loss.damsm_image_encoder": str(out)}), resume=False)


def test_frozen_damsm_task_errors(tiny_data, bert, tmp_path):
    with pytest.raises(T2IError, match="loss.words=true needs word features"):
        build_training(frozen_damsm_config(tiny_data, bert, tmp_path / "r", **{"loss.words": True}), resume=False)
    with pytest.raises(T2IError, match="trains its own text encoder"):
        build_training(frozen_damsm_config(tiny_data, bert, tmp_path / "r", **{"text_encoder": "damsm:runs/x"}), resume=False)


def test_damsm_task_sentence_loss_only(tiny_data, tmp_path):
    """loss.words=false on the jointly trained DAMSM encoders: the sentence loss alone."""
    over = {"text.embed_dim": 32, "text.word_dim": 16, "image.width": 8, "image.image_size": 32}
    tr = build_training(load_config(None, tiny_overrides(tiny_data, tmp_path / "r", **over, **{"loss.words": False}),
                                    task="damsm"), resume=False)
    assert list(tr.task.modules) == ["text_encoder", "image_encoder"]
    logs = tr.task.losses(tr.to_batch(next(tr.batches()), 0))
    assert "w_loss" not in logs and torch.equal(logs["loss"], logs["s_loss"]) and torch.isfinite(logs["loss"])
