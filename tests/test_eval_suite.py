"""Evaluation suite: R-precision, diversity, evaluate_run with DAMSM, --eval-every, report and compare."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from t2igan import T2IError
from t2igan.eval.metrics import pairwise_diversity
from t2igan.eval.rprecision import draw_mismatched, r_precision


def test_r_precision_perfect_random_and_bins():
    g = torch.Generator().manual_seed(0)
    sents = torch.randn(300, 16, generator=g)
    true = torch.arange(200)
    cands = draw_mismatched(true, [f"caption {i}" for i in range(300)], 99, seed=0)
    assert cands.shape == (200, 100) and torch.equal(cands[:, 0], true)
    assert not (cands[:, 1:] == true[:, None]).any()
    perfect = r_precision(sents[:200], cands, sents, bins=10)  # image code = its caption's code
    assert perfect["mean"] == 1.0 and perfect["std"] == 0.0 and perfect["bins"] == 10 and perfect["candidates"] == 100
    rnd = r_precision(torch.randn(200, 16, generator=g), cands, sents, bins=10)
    assert rnd["mean"] < 0.1 and len(rnd["per_bin"]) == 10  # chance is 1 %
    with pytest.raises(T2IError, match="at least 10 samples"):
        r_precision(sents[:5], cands[:5], sents)


def test_mismatched_captions_never_share_text_or_image():
    text = ["red"] * 50 + [f"other {i}" for i in range(150)]
    owner = [i // 2 for i in range(200)]
    cands = draw_mismatched(torch.tensor([0, 60]), text, 99, seed=1, owner=owner)
    for row in cands.tolist():
        t = row[0]
        assert all(text[c] != text[t] and owner[c] != owner[t] for c in row[1:])
    with pytest.raises(T2IError, match="fewer than 99 captions differ"):
        draw_mismatched(torch.tensor([0]), ["same"] * 50 + [f"x{i}" for i in range(98)], 99)


def test_diversity_detects_collapse():
    g = torch.Generator().manual_seed(0)
    collapsed = torch.randn(5, 1, 8, generator=g).expand(5, 4, 8).reshape(20, 8)
    assert pairwise_diversity(collapsed, 5)["mean"] == 0.0
    varied = pairwise_diversity(torch.randn(20, 8, generator=g), 5)
    assert varied["mean"] > 1.0 and varied["images_per_caption"] == 4
    with pytest.raises(T2IError, match=">= 2 images"):
        pairwise_diversity(torch.randn(5, 8), 5)


@pytest.fixture()
def run_copy(tiny_dfgan, tmp_path):
    return shutil.copytree(tiny_dfgan, tmp_path / "run")


def test_evaluate_run_r_precision_report_and_compare(run_copy, tmp_path, monkeypatch):
    from t2igan.eval.report import compare_runs, write_report
    from t2igan.eval.run import evaluate_run, format_table

    monkeypatch.delenv("T2IGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("T2IGAN_CLIP_WEIGHTS", raising=False)
    res = evaluate_run(run_copy, None, n_samples=20, splits=("test",), batch_size=8, device="cpu", progress=False)
    t = res["splits"]["test"]
    for side in ("generated", "real"):
        rp = t[side]["r_precision"]
        assert rp["n"] == 20 and rp["candidates"] == 100 and 0.0 <= rp["mean"] <= 1.0
    assert res["damsm"]["weights_sha256"] and "R-precision" in format_table(res)
    assert any("Inception" in n for n in res["notes"])
    assert res["clip"] is None and any("CLIP score / CLIP R-precision skipped" in n for n in res["notes"])
    on_disk = json.loads((run_copy / "eval" / "metrics.json").read_text())
    assert on_disk["splits"]["test"]["generated"]["r_precision"] == t["generated"]["r_precision"]

    report = write_report(run_copy, res)
    text = report.read_text()
    assert "![test](samples_test.png)" in text and "losses.png" in text and "R-precision" in text
    assert (report.parent / "samples_test.png").stat().st_size > 0 and (report.parent / "losses.png").is_file()

    other = shutil.copytree(run_copy, tmp_path / "run_b")
    evaluate_run(other, None, n_samples=20, splits=("test",), batch_size=8, device="cpu", progress=False, seed=1)
    cmp = compare_runs([run_copy, other], out=tmp_path / "cmp" / "compare.md")
    assert "test generated: R-precision" in cmp["table"]
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"] == [str(run_copy), str(other)]
    assert (tmp_path / "cmp" / "compare.png").is_file()
    with pytest.raises(T2IError, match="run `t2igan eval"):
        compare_runs([run_copy, tmp_path], out=tmp_path / "x.md")


def test_eval_every_appends_history(tiny_data, tiny_damsm, tmp_path):
    from conftest import dfgan_config

    from t2igan.train.run import build_training

    out = tmp_path / "dfgan"
    cfg = dfgan_config(tiny_data, tiny_damsm, out, **{"train.eval_every": 1, "train.eval_samples": 10})
    build_training(cfg, resume=False).fit()
    rows = [json.loads(x) for x in (out / "eval_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["n_samples"] == 10 and 0 <= r["metrics"]["test generated: R-precision"] <= 1 for r in rows)


def test_cli_eval_errors(tmp_path, capsys):
    from t2igan.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "ref").mkdir()
    assert main(["eval", "images", str(tmp_path / "empty"), "--ref", str(tmp_path / "ref")]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path)]) == 2
    assert "at least two run folders" in capsys.readouterr().err
