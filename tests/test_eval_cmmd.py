"""CMMD (t2igan/eval/cmmd.py) against a direct evaluation of the reference formula, and the per-image
scores with the top/bottom grid of ``t2igan eval RUN --clip DIR --per-image`` (tiny random CLIP).

The reference formula (google-research/cmmd ``distance.py``): with k(x, y) = exp(-||x-y||^2 / (2 * 10^2)),
CMMD = 1000 * (mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j)) over all pairs
(diagonal included), computed here with explicit loops in float64 on L2-normalised embeddings.
"""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from t2igan import T2IError


def _loop_cmmd(x, y, sigma=10.0, scale=1000.0):
    def unit(v):
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    x, y = [unit(v) for v in x.tolist()], [unit(v) for v in y.tolist()]

    def k(a, b):
        return math.exp(-sum((p - q) ** 2 for p, q in zip(a, b)) / (2 * sigma ** 2))

    def m(a, b):
        return sum(k(p, q) for p in a for q in b) / (len(a) * len(b))

    return scale * (m(x, x) + m(y, y) - 2 * m(x, y))


def test_cmmd_equals_the_reference_formula():
    from t2igan.eval.cmmd import cmmd, mmd, normalise, split_scores, witness

    g = torch.Generator().manual_seed(0)
    real = torch.randn(30, 8, generator=g) + 2.0
    gen = torch.randn(20, 8, generator=g) * 1.5 + 2.0
    got = cmmd(gen, real)
    assert got > 0.1
    assert math.isclose(got, _loop_cmmd(gen, real), rel_tol=1e-9)
    assert abs(cmmd(real, real)) < 1e-9  # the same set: zero
    # the kernel is on normalised embeddings: scaling an embedding changes nothing
    assert math.isclose(cmmd(gen * 3.0, real), got, rel_tol=1e-6)  # (float32 input rounding)
    # chunked kernel means equal the unchunked ones
    from t2igan.eval.cmmd import _kernel_mean

    a, b = normalise(gen), normalise(real)
    assert torch.allclose(_kernel_mean(a, b, 10.0, chunk=7), _kernel_mean(a, b, 10.0))
    assert math.isclose(mmd(a, b), got, rel_tol=1e-12)
    # the witness: images among the real ones score higher than those far from them
    mixed = torch.cat([real[:10], -real[:10]])  # half like the real set, half pointing away from it
    w = witness(mixed, real)
    assert w.shape == (20,) and float(w[:10].min()) > float(w[10:].max())
    s = split_scores(gen, real, seed=0)
    assert s["generated"]["n_generated"] == 20 and s["real"]["n_generated"] == 15
    assert s["real"]["value"] < s["generated"]["value"]  # two halves of one set are closer than gen vs real
    with pytest.raises(T2IError, match="CMMD needs two non-empty embedding sets"):
        mmd(torch.zeros(0, 8), real)
    with pytest.raises(T2IError, match="CMMD needs two non-empty embedding sets"):
        mmd(gen, torch.zeros(5, 4))


def test_top_bottom_regenerates_exact_images(tmp_path):
    from t2igan.eval.cmmd import regenerate, save_top_bottom

    class Pipe:  # generate(captions, seed) -> images depending on caption and batch seed only
        def generate(self, caps, seed, n=1):
            g = torch.Generator().manual_seed(seed)
            base = torch.rand(len(caps), 3, 8, 8, generator=g)
            return base * torch.tensor([len(c) for c in caps]).view(-1, 1, 1, 1) / 10

    caps = [f"caption {'x' * (i % 7)}" for i in range(10)]
    pipe, bs = Pipe(), 4
    full = torch.cat([pipe.generate(caps[i:i + bs], seed=3 + i // bs) for i in range(0, 10, bs)]).clamp(0, 1)
    got = regenerate(pipe, caps, [9, 0, 5], bs, seed=3)
    assert all(torch.equal(got[k], full[k]) for k in (9, 0, 5))
    score = torch.arange(10, dtype=torch.float64)
    r = save_top_bottom(pipe, caps, score, tmp_path / "grid.png", bs, seed=3, n=3)
    assert [e["k"] for e in r["top"]] == [9, 8, 7] and [e["k"] for e in r["bottom"]] == [0, 1, 2]
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size == (2 + 3 * 10, 2 + 2 * 10)  # 3 columns, 2 rows of 8 px + padding
    with pytest.raises(T2IError, match="at least 2 samples"):
        save_top_bottom(pipe, caps[:1], score[:1], tmp_path / "g1.png", bs, seed=3)


@pytest.fixture()
def run_copy(tiny_dfgan, tmp_path):
    return shutil.copytree(tiny_dfgan, tmp_path / "run")


def test_cli_cmmd_and_per_image(run_copy, tiny_data, tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    from test_eval_clip import write_tiny_clip

    from t2igan.cli import main

    clip = write_tiny_clip(tmp_path / "clip")
    monkeypatch.delenv("T2IGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("T2IGAN_CLIP_WEIGHTS", raising=False)
    from t2igan.data.folder import load_folder
    from t2igan.eval.evaluator import AttributeEvaluator

    ev = tmp_path / "ev"
    AttributeEvaluator(load_folder(tiny_data, "test").attribute_values, width=8, feature_dim=16,
                       image_size=32).save_pretrained(ev)
    args = ["eval", str(run_copy), "--evaluator", str(ev), "--n-samples", "20", "--splits",
            "test", "--device", "cpu", "--batch-size", "8", "--diversity-captions", "0", "--damsm", "none"]
    # --per-image without CLIP: one line, nothing written
    assert main(args + ["--per-image"]) == 2
    assert "--per-image ranks images by CLIP score" in capsys.readouterr().err
    assert not (run_copy / "eval" / "metrics.json").exists()
    assert main(args + ["--clip", str(clip), "--per-image"]) == 0
    out = capsys.readouterr().out
    assert "CMMD" in out
    res = json.loads((run_copy / "eval" / "metrics.json").read_text())
    t = res["splits"]["test"]
    assert t["generated"]["cmmd"]["n_generated"] == 20 and t["generated"]["cmmd"]["n_reference"] == t["n_images"]
    # a biased MMD^2 is a squared norm: never negative; the two sides differ
    assert t["generated"]["cmmd"]["value"] >= -1e-9 and t["real"]["cmmd"]["value"] >= -1e-9
    assert t["generated"]["cmmd"]["value"] != t["real"]["cmmd"]["value"]
    assert "sigma=10" in res["protocol"]["cmmd"]
    per = t["generated"]["per_image"]
    lines = [json.loads(x) for x in (run_copy / "eval" / "per_image_test.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and {"k", "caption", "clip_score", "cmmd_witness"} <= set(lines[0])
    best = max(lines, key=lambda r: r["clip_score"])
    assert per["top_bottom_grid"]["top"][0]["k"] == best["k"]
    # the mean of the per-image CLIP scores is the CLIP score (torchmetrics: 100 x mean cosine, clamped at 0)
    mean = sum(r["clip_score"] for r in lines) / 20
    assert math.isclose(max(mean, 0.0), t["generated"]["clip_score"]["mean"], rel_tol=1e-4, abs_tol=1e-4)
    assert (run_copy / "eval" / "top_bottom_test.png").is_file()
