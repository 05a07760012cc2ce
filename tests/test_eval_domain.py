"""The domain-tuned Inception (family ``inception_domain``, t2igan/eval/domain_inception.py): training
on a dataset's labels, saving/loading, trunk initialisation from a file, and
``t2igan eval RUN --inception-domain DIR`` (accuracy / IS / FID with it). Tiny: 75 px input, a
few steps on the 32 px test SynthFlowers."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from t2igan import T2IError


@pytest.fixture(scope="module")
def domain_dir(tiny_data, tmp_path_factory):
    from t2igan.config import load_config
    from t2igan.families import registry

    out = tmp_path_factory.mktemp("dom") / "dom"
    cfg = load_config(None, [f"data.root={tiny_data}", "data.image_size=32", "model.input_size=75",
                             "train.max_steps=2", "train.batch_size=4", f"train.out_dir={out}", "train.progress=false"],
                      task="inception_domain")
    registry.get("inception_domain").fit(cfg)
    return out


def test_train_save_load(domain_dir, tiny_data):
    from t2igan.data.folder import load_folder
    from t2igan.eval.domain_inception import DomainInception, labels_of

    m = json.loads((domain_dir / "metrics.json").read_text())
    ds = load_folder(tiny_data, "train")
    assert m["classes"] == sorted(set(labels_of(ds, "petal_colour")))
    assert m["train"]["steps"] == 2 and m["train"]["trunk_init"].startswith("random")
    assert set(m["accuracy_real"]) >= {"test"} and 0.0 <= m["accuracy_real"]["test"]["accuracy"] <= 1.0
    model = DomainInception.from_pretrained(domain_dir)
    assert model.describe()["trunk_init"] == "random" and len(model.describe()["weights_sha256"]) == 64
    f = model.features(torch.rand(3, 3, 32, 32))
    assert f["2048"].shape == (3, 2048) and f["logits"].shape == (3, len(m["classes"]))
    # uint8 input is / 255
    u8 = (torch.rand(2, 3, 32, 32) * 255).round().to(torch.uint8)
    assert torch.allclose(model.features(u8)["logits"], model.features(u8.float() / 255)["logits"], atol=1e-5)


def test_trunk_from_file_and_errors(tmp_path, tiny_data):
    import torchvision

    from t2igan.config import load_config
    from t2igan.eval.domain_inception import DomainInception, labels_of

    src = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    p = tmp_path / "inception_v3_google.pth"
    torch.save(src.state_dict(), p)
    m = DomainInception(["a", "b"], "x", 75)
    sha = m.load_trunk(str(p))
    assert len(sha) == 64
    assert torch.equal(m.net.Mixed_7c.branch_pool.conv.weight, src.Mixed_7c.branch_pool.conv.weight)
    assert m.net.fc.weight.shape == (2, 2048)  # the head is new
    state = src.state_dict()
    del state["Mixed_6a.branch3x3.conv.weight"]
    torch.save(state, p)
    with pytest.raises(T2IError, match="no 'Mixed_6a.branch3x3.conv.weight'"):
        m.load_trunk(str(p))
    with pytest.raises(T2IError, match="Inception weights not found"):
        m.load_trunk(str(tmp_path / "missing.pth"))
    with pytest.raises(T2IError, match=r"input_size must be >= 75"):
        DomainInception(["a", "b"], "x", 64)
    with pytest.raises(T2IError, match="model.input_size"):
        load_config(None, ["model.input_size=74"], task="inception_domain")
    from t2igan.data.folder import load_folder

    ds = load_folder(tiny_data, "test")
    with pytest.raises(T2IError, match="has no attribute 'species'"):
        labels_of(ds, "species")
    with pytest.raises(T2IError, match="no class ids"):
        labels_of(ds, "class_id")
    with pytest.raises(T2IError, match="domain Inception folder not found"):
        DomainInception.from_pretrained(tmp_path / "none")


def test_stable_inception_score_equals_torchmetrics():
    from t2igan.eval.domain_inception import inception_score_stable
    from t2igan.eval.metrics import inception_score

    logits = torch.randn(40, 6, generator=torch.Generator().manual_seed(0)) * 2
    a, b = inception_score_stable(logits, 4, seed=3), inception_score(logits, splits=4, seed=3)
    assert abs(a["mean"] - b["mean"]) < 1e-9 and abs(a["std"] - b["std"]) < 1e-9 and a["mean"] > 1.0
    huge = logits * 1e4  # probabilities underflow to 0: torchmetrics gives NaN, the stable form a number
    assert inception_score_stable(huge, 4)["mean"] == inception_score_stable(huge, 4)["mean"]


@pytest.mark.slow  # ~30 s on one core: Inception-v3 on ~60 images
def test_cli_eval_with_domain_inception(domain_dir, tiny_dfgan, tiny_data, tmp_path, monkeypatch, capsys):
    from t2igan.cli import main
    from t2igan.data.folder import load_folder
    from t2igan.eval.evaluator import AttributeEvaluator

    run = shutil.copytree(tiny_dfgan, tmp_path / "run")
    monkeypatch.delenv("T2IGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("T2IGAN_CLIP_WEIGHTS", raising=False)
    ev = tmp_path / "ev"
    AttributeEvaluator(load_folder(tiny_data, "test").attribute_values, width=8, feature_dim=16,
                       image_size=32).save_pretrained(ev)
    args = ["eval", str(run), "--evaluator", str(ev), "--n-samples", "20", "--splits", "test", "--device", "cpu",
            "--batch-size", "10", "--diversity-captions", "0", "--damsm", "none", "--inception-domain"]
    assert main(args + [str(tmp_path / "nope")]) == 2
    assert "domain Inception folder not found" in capsys.readouterr().err
    assert main(args + [str(domain_dir)]) == 0
    out = capsys.readouterr().out
    assert "domain acc." in out and "domain IS" in out and "domain FID" in out
    res = json.loads((run / "eval" / "metrics.json").read_text())
    assert res["inception_domain"]["label"] == "petal_colour" and res["inception_domain"]["trunk_init"] == "random"
    d = res["splits"]["test"]["inception_domain"]
    ds = load_folder(tiny_data, "test")
    n_named = sum("petal_colour" in ds.named[k % len(ds)][(k // len(ds)) % len(ds.captions[k % len(ds)])]
                  for k in range(20))
    assert d["generated"]["accuracy"]["n"] == d["real"]["accuracy"]["n"] == n_named > 0
    assert d["generated"]["is"]["n"] == 20 and d["generated"]["is"]["mean"] >= 1.0
    assert d["generated"]["fid"] > 0 and d["generated"]["n_reference"] == len(ds)
