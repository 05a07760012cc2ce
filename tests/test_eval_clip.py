"""CLIP score and CLIP R-precision (t2igan/eval/clip.py) with a tiny random Hugging Face CLIP written here:
a byte-level vocabulary without merges, a 2-layer 32-wide text and vision transformer on 32x32 images."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from t2igan import T2IError

transformers = pytest.importorskip("transformers", reason="CLIP score needs transformers (pip install 't2igan[clip]')")

CAPTIONS = ["this flower has five pink petals", "a small yellow flower with round petals",
            "the petals are thin and blue", "a large red flower on a green background",
            "this flower has pointed white petals and a yellow center", "purple petals around an orange middle"]


def write_tiny_clip(path, seed: int = 0):
    """A random CLIPModel + CLIPProcessor saved with save_pretrained (no downloads).

    The vision post-layernorm and the text final layernorm share a large bias and both projections
    the same matrix, so every image-caption cosine is positive (far from the CLIPScore clamp)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **small),
                     vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        shared = 3 * torch.randn(32)
        model.vision_model.post_layernorm.bias.copy_(shared)
        model.text_model.final_layer_norm.bias.copy_(shared)
        model.text_projection.weight.copy_(model.visual_projection.weight)
    model.save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_clip")


def _images(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _projected(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_clip_score_equals_manual_cosines(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    from t2igan.eval.clip import CLIPScorer, to_uint8

    scorer = CLIPScorer.from_pretrained(tiny_clip)
    imgs = _images(len(CAPTIONS))
    pairs = scorer.pairs()
    pairs.update(imgs[:4], CAPTIONS[:4])  # two batches: the metric accumulates
    pairs.update(imgs[4:], CAPTIONS[4:])
    got = pairs.score()

    model, proc = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    u8 = (imgs * 255).round().to(torch.uint8)
    assert torch.equal(to_uint8(imgs), u8)
    with torch.no_grad():
        px = proc(images=list(u8), return_tensors="pt")["pixel_values"]
        assert px.shape == (6, 3, 32, 32)
        img = _projected(model.get_image_features(pixel_values=px)).double()
        t = proc.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
        txt = _projected(model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"])).double()
    cos = F.cosine_similarity(img, txt, dim=1)
    assert (cos > 0.05).all()  # the clamp of CLIPScore does not act: the per-pair and the mean clamp agree
    assert got["n"] == 6
    assert got["mean"] == pytest.approx(float((100 * cos.clamp(min=0)).mean()), abs=1e-3)
    # the embeddings kept for R-precision are the ones the score used, and text codes match the manual ones
    assert torch.allclose(pairs.image_codes().double(), img, atol=1e-5)
    assert torch.allclose(scorer.text_codes(CAPTIONS, batch_size=4).double(), txt, atol=1e-5)
    # a different caption order changes the score (it reads the pairs)
    other = scorer.pairs()
    other.update(imgs, CAPTIONS[1:] + CAPTIONS[:1])
    assert abs(other.score()["mean"] - got["mean"]) > 1e-3
    assert scorer.count_too_long(CAPTIONS) == 0 and scorer.count_too_long(["a" * 200, "short"]) == 1
    desc = scorer.describe()
    assert len(desc["weights_sha256"]) == 64 and desc["weights_files"] == ["model.safetensors"]
    assert desc["preprocess"]["crop_size"] == {"height": 32, "width": 32} and desc["preprocess"]["resample"] == "bicubic"
    assert desc["projection_dim"] == 16


def test_clip_r_precision_perfect_and_shuffled(tiny_clip):
    """Images whose CLIP embeddings are made equal to their captions' (visual projection solved by least
    squares on 20 images): R-precision 1.0; the same images with shuffled captions: near chance."""
    from t2igan.eval.clip import CLIPScorer
    from t2igan.eval.rprecision import draw_mismatched, r_precision

    scorer = CLIPScorer.from_pretrained(tiny_clip)
    captions = [f"flower number {i} with red petals" for i in range(150)]
    n = 20
    imgs = _images(n, seed=1)
    texts = scorer.text_codes(captions)  # (150, 16)
    model = scorer.features.model
    with torch.no_grad():
        px = scorer.processor(images=list((imgs * 255).round().to(torch.uint8)), return_tensors="pt")["pixel_values"]
        pooled = model.vision_model(pixel_values=px).pooler_output.double()  # (20, 32), rank 20
        w = torch.linalg.lstsq(pooled, texts[:n].double()).solution  # (32, 16): pooled @ w = texts[:n]
        model.visual_projection.weight.copy_(w.t().float())
    cands = draw_mismatched(torch.arange(n), captions, 99, seed=0)
    pairs = scorer.pairs()
    pairs.update(imgs, captions[:n])
    assert torch.allclose(pairs.image_codes(), texts[:n], atol=1e-3)
    perfect = r_precision(pairs.image_codes(), cands, texts, bins=10)
    assert perfect["mean"] == 1.0 and perfect["std"] == 0.0 and perfect["n"] == n

    perm = torch.roll(torch.arange(n), 1)  # image i is shown with caption i - 1 as its "true" caption
    shuffled = scorer.pairs()
    shuffled.update(imgs, [captions[int(j)] for j in perm])
    cands_s = draw_mismatched(perm, captions, 99, seed=0)
    rnd = r_precision(shuffled.image_codes(), cands_s, texts, bins=10)
    assert rnd["mean"] <= 0.15  # chance is 1 %
    assert shuffled.score()["mean"] < pairs.score()["mean"]


def test_clip_bad_input(tiny_clip, tmp_path):
    from safetensors.torch import load_file, save_file

    from t2igan.eval.clip import CLIPScorer

    with pytest.raises(T2IError, match=r"CLIP weights not found: .*missing.*--clip PATH or T2IGAN_CLIP_WEIGHTS"):
        CLIPScorer.from_pretrained(tmp_path / "missing")
    with pytest.raises(T2IError, match="is a file, not a folder"):
        CLIPScorer.from_pretrained(tiny_clip / "config.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(T2IError, match="has no config.json"):
        CLIPScorer.from_pretrained(tmp_path / "empty")
    bert = shutil.copytree(tiny_clip, tmp_path / "bert")
    cfg = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(T2IError, match="model_type is 'bert', not 'clip'"):
        CLIPScorer.from_pretrained(bert)
    # weights of the wrong shape: config.json says projection_dim 24
    wide = shutil.copytree(tiny_clip, tmp_path / "wide")
    (wide / "config.json").write_text(json.dumps({**cfg, "projection_dim": 24}))
    with pytest.raises(T2IError, match=r"wide: .*(wrong shape|cannot load)"):
        CLIPScorer.from_pretrained(wide)
    # a tensor missing from the file
    part = shutil.copytree(tiny_clip, tmp_path / "part")
    state = load_file(part / "model.safetensors")
    save_file({k: v for k, v in state.items() if k != "visual_projection.weight"}, part / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(T2IError, match=r"1 missing.*visual_projection.weight"):
        CLIPScorer.from_pretrained(part)
    noweights = shutil.copytree(tiny_clip, tmp_path / "noweights")
    (noweights / "model.safetensors").unlink()
    with pytest.raises(T2IError, match="no model.safetensors"):
        CLIPScorer.from_pretrained(noweights)
    notok = shutil.copytree(tiny_clip, tmp_path / "notok")
    for f in notok.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(T2IError, match="the CLIP tokenizer is missing"):
        CLIPScorer.from_pretrained(notok)
    noproc = shutil.copytree(tiny_clip, tmp_path / "noproc")
    (noproc / "processor_config.json").unlink()
    with pytest.raises(T2IError, match="no preprocessor_config.json"):
        CLIPScorer.from_pretrained(noproc)
    scorer = CLIPScorer.from_pretrained(tiny_clip)
    with pytest.raises(T2IError, match="expected images"):
        scorer.pairs().update(_images(2), CAPTIONS[:3])


@pytest.fixture()
def run_copy(tiny_dfgan, tmp_path):
    return shutil.copytree(tiny_dfgan, tmp_path / "run")


def test_cli_eval_writes_clip_entries(run_copy, tiny_data, tiny_clip, tmp_path, monkeypatch, capsys):
    from t2igan.cli import main
    from t2igan.data.folder import load_folder
    from t2igan.eval.evaluator import AttributeEvaluator
    from t2igan.eval.report import headline
    from t2igan.eval.run import format_table

    monkeypatch.delenv("T2IGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("T2IGAN_CLIP_WEIGHTS", raising=False)
    ev = tmp_path / "ev"
    AttributeEvaluator(load_folder(tiny_data, "test").attribute_values, width=8, feature_dim=16,
                       image_size=32).save_pretrained(ev)
    args = ["eval", str(run_copy), "--evaluator", str(ev), "--n-samples", "20", "--splits", "test", "--device", "cpu",
            "--batch-size", "8", "--diversity-captions", "0"]
    assert main(args + ["--clip", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "CLIP weights not found" in err and "nowhere" in err
    assert not (run_copy / "eval" / "metrics.json").exists()  # nothing half-written

    assert main(args + ["--clip", str(tiny_clip)]) == 0
    out = capsys.readouterr().out
    assert "CLIP score" in out and "CLIP R-prec." in out
    res = json.loads((run_copy / "eval" / "metrics.json").read_text())
    assert res["clip"]["dir"] == str(tiny_clip.resolve()) and len(res["clip"]["weights_sha256"]) == 64
    assert res["clip"]["preprocess"]["size"] == {"shortest_edge": 32}
    assert "clip_score" in res["protocol"] and "clip_r_precision" in res["protocol"]
    t = res["splits"]["test"]
    for side in ("generated", "real"):
        cs, rp = t[side]["clip_score"], t[side]["clip_r_precision"]
        assert cs["n"] == 20 and 0.0 < cs["mean"] <= 100.0
        assert rp["n"] == 20 and rp["candidates"] == 100 and rp["bins"] == 10 and 0.0 <= rp["mean"] <= 1.0
    assert t["generated"]["clip_score"] != t["real"]["clip_score"]
    assert t["generated"]["clip_captions_truncated"] == 0  # the tiny tokenizer has one token per character
    assert "test generated: CLIP score" in headline(res) and "CLIP score" in format_table(res)
    assert not any("CLIP" in n for n in res["notes"])

    # the environment variable stands for --clip; "none" switches CLIP off
    from t2igan.eval.clip import clip_path_from_env

    monkeypatch.setenv("T2IGAN_CLIP_WEIGHTS", str(tiny_clip))
    assert clip_path_from_env(None) == str(tiny_clip) and clip_path_from_env("none") is None
    assert clip_path_from_env("other") == "other"
    monkeypatch.setenv("T2IGAN_CLIP_WEIGHTS", "")
    assert clip_path_from_env(None) is None
