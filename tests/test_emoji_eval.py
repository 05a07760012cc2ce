"""Emoji benchmark evaluation: nearest-neighbour retrieval, and `t2igan eval` on an emoji run
(tiny npm-layout tarball written by the test, tiny evaluator / DAMSM / DF-GAN from the presets)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_formats import _fake_emoji_tgz

from t2igan import T2IError
from t2igan.cli import main
from t2igan.data.emoji import build_emoji_dataset, emoji_base
from t2igan.eval.report import headline
from t2igan.eval.retrieval import retrieval_hits

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ----------------------------------------------------------------------------- retrieval metric
def test_retrieval_identical_features_hit_everything():
    g = torch.Generator().manual_seed(0)
    gallery = torch.randn(200, 16, generator=g)
    target = torch.randint(0, 200, (1000,), generator=g)
    labels = [i % 7 for i in range(200)]
    r = retrieval_hits(gallery[target] * 3.0, gallery, target, ks=(1, 5), groups={"category": labels})
    assert r["hit@1"] == 1.0 and r["hit@5"] == 1.0
    assert r["chance@1"] == pytest.approx(1 / 200) and r["chance@5"] == pytest.approx(5 / 200)
    assert r["n_queries"] == 1000 and r["gallery_size"] == 200
    cat = r["groups"]["category"]
    assert cat["hit@1"] == 1.0 and cat["n_labels"] == 7
    counts = torch.bincount(torch.tensor(labels)).double() / 200
    assert cat["chance"] == pytest.approx(float(counts[torch.tensor(labels)[target]].mean()))


def test_retrieval_shuffled_features_near_chance():
    g = torch.Generator().manual_seed(1)
    gallery = torch.randn(100, 32, generator=g)
    target = torch.randint(0, 100, (4000,), generator=g)
    wrong = (target + torch.randint(1, 100, (4000,), generator=g)) % 100  # features of another image
    r = retrieval_hits(gallery[wrong], gallery, target, groups={"half": [i < 50 for i in range(100)]})
    assert r["hit@1"] == 0.0  # the nearest is always the other image itself
    assert r["hit@5"] < 4 * r["chance@5"]
    noise = retrieval_hits(torch.randn(4000, 32, generator=g), gallery, target, groups={"half": [i < 50 for i in range(100)]})
    assert abs(noise["hit@1"] - noise["chance@1"]) < 0.01 and abs(noise["hit@5"] - noise["chance@5"]) < 0.02
    assert abs(noise["groups"]["half"]["hit@1"] - 0.5) < 0.05 and noise["groups"]["half"]["chance"] == pytest.approx(0.5)


def test_retrieval_bad_inputs():
    q, gal = torch.randn(4, 8), torch.randn(6, 8)
    t = torch.tensor([0, 1, 2, 3])
    with pytest.raises(T2IError, match="features"):
        retrieval_hits(q, torch.randn(6, 9), t)
    with pytest.raises(T2IError, match="4 queries but 3 targets"):
        retrieval_hits(q, gal, t[:3])
    with pytest.raises(T2IError, match="out of range"):
        retrieval_hits(q, gal, torch.tensor([0, 1, 2, 6]))
    with pytest.raises(T2IError, match="k must be >= 1"):
        retrieval_hits(q, gal, t, ks=(0,))
    with pytest.raises(T2IError, match="non-finite"):
        retrieval_hits(q * float("nan"), gal, t)
    with pytest.raises(T2IError, match="group 'c' has 5 labels for 6"):
        retrieval_hits(q, gal, t, groups={"c": [0] * 5})
    with pytest.raises(T2IError, match="at least one query"):
        retrieval_hits(q[:0], gal, t[:0])
    assert retrieval_hits(q, gal, t, ks=(1, 10))["chance@10"] == 1.0  # k beyond the gallery


def test_emoji_base():
    assert emoji_base("1f44d-1f3fd") == emoji_base("1f44d") == "1f44d"
    assert emoji_base("26f9-1f3fb-200d-2640-fe0f") == emoji_base("26f9-fe0f-200d-2640-fe0f") == "26f9-200d-2640"
    assert emoji_base("1faf1-1f3fb-200d-1faf2-1f3fc") == "1faf1-200d-1faf2"


# ----------------------------------------------------------------------------- eval of an emoji run
@pytest.fixture(scope="module")
def emoji_runs(tmp_path_factory):
    """A tiny emoji dataset, its evaluator, DAMSM and DF-GAN (2 steps each, from the emoji presets)."""
    tmp = tmp_path_factory.mktemp("emoji")
    data = tmp / "emoji_google"
    r = build_emoji_dataset(_fake_emoji_tgz(tmp / "emoji-datasource-google-16.0.0.tgz", extra=300), data)  # 35 test emoji: R-precision needs 100 captions
    assert r["splits"]["test"] == 35
    common = [f"data.root={data}", "data.image_size=32", "train.batch_size=8", "train.max_steps=2",
              "train.progress=false", "train.log_every=1", "train.threads=0"]
    runs = {k: tmp / k for k in ("evaluator", "damsm", "dfgan")}
    assert main(["train", str(CONFIGS / "evaluator_emoji.yaml"), *common, "model.width=8", "model.feature_dim=16",
                 f"train.out_dir={runs['evaluator']}"]) == 0
    # flips are off in the emoji preset (a mirrored emoji is another emoji), and its record says so
    aug = json.loads((runs["evaluator"] / "metrics.json").read_text())["train"]["augmentation"]
    assert aug.startswith("no flips,"), aug
    assert main(["train", str(CONFIGS / "damsm_emoji.yaml"), *common, "text.embed_dim=32", "text.word_dim=16",
                 "image.width=8", "image.image_size=32", "train.ckpt_every=0", f"train.out_dir={runs['damsm']}"]) == 0
    assert main(["train", str(CONFIGS / "dfgan_emoji.yaml"), *common, "model.ngf=4", "model.ndf=4", "model.nz=8",
                 f"text_encoder={runs['damsm']}", "train.max_minutes=0", "train.sample_every=0", "train.ckpt_every=0",
                 "train.snapshot_every=0", f"train.out_dir={runs['dfgan']}"]) == 0
    return data, runs


def test_eval_emoji_run(emoji_runs, capsys):
    data, runs = emoji_runs
    capsys.readouterr()
    assert main(["eval", str(runs["dfgan"]), "--evaluator", str(runs["evaluator"]), "--n-samples", "20",
                 "--batch-size", "6", "--diversity-captions", "2", "--diversity-k", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    res = json.loads((runs["dfgan"] / "eval" / "metrics.json").read_text())
    assert list(res["splits"]) == ["test"]  # no 'novel' split in emoji: skipped, not an error
    assert any("split 'novel' skipped" in n for n in res["notes"])
    assert any("attribute accuracy skipped" in n for n in res["notes"])
    sp = res["splits"]["test"]
    L = sp["n_images"]
    assert sp["n_samples"] == 20 and "attributes" not in sp["generated"] and "attributes" not in sp["real"]
    ret = sp["generated"]["retrieval"]
    assert ret["gallery_size"] == L and ret["n_queries"] == 20
    assert ret["chance@1"] == pytest.approx(1 / L) and ret["chance@5"] == pytest.approx(min(5, L) / L)
    assert 0.0 <= ret["hit@1"] <= ret["hit@5"] <= 1.0
    assert set(ret["groups"]) == {"category", "subcategory", "base_emoji"}
    assert 0.0 < ret["groups"]["category"]["chance"] < 1.0
    assert sp["generated"]["fid_sf"] is not None and "mean" in sp["generated"]["kid_sf"]
    assert "mean" in sp["generated"]["r_precision"]  # the run's text encoder is a DAMSM run
    assert "retrieval" in res["protocol"] and "chance@k = k / L" in res["protocol"]["retrieval"]
    assert "NN hit@1" in out and "NN category@1" in out and "chance level" in out
    head = headline(res)  # the rows of `t2igan eval compare` and of the --eval-every history
    assert head["test generated: NN hit@1"] == ret["hit@1"]
    assert head["test generated: NN same base_emoji@1"] == ret["groups"]["base_emoji"]["hit@1"]


def test_eval_emoji_bad_inputs(emoji_runs, tmp_path, capsys):
    from t2igan.eval.evaluator import AttributeEvaluator

    data, runs = emoji_runs
    other = AttributeEvaluator({"petal_color": ["red", "blue"]}, width=8, feature_dim=16, image_size=32)
    other.save_pretrained(tmp_path / "synth_evaluator")
    capsys.readouterr()
    args = ["--n-samples", "4", "--batch-size", "4", "--diversity-captions", "0", "--damsm", "none",
            "--out", str(tmp_path / "m.json")]
    assert main(["eval", str(runs["dfgan"]), "--evaluator", str(tmp_path / "synth_evaluator"), *args]) == 2
    err = capsys.readouterr().err
    assert "was not trained on this dataset" in err and "evaluator_emoji" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", str(runs["dfgan"]), "--evaluator", str(runs["evaluator"]), "--splits", "novel", *args]) == 2
    assert "split 'novel' not found" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
