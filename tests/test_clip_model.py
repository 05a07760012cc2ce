"""The CLIP model layer: the CLIP-format BPE, load_clip (Hugging Face folder, open_clip file), the
clip:SOURCE text encoder and task clip (train -> export -> load)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from clip_fixture import CAPTIONS, tiny_clip_dir
from conftest import tiny_overrides

from t2igan import T2IError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_clip_dir(tmp_path_factory.mktemp("clip"))


def _images(n=3, size=40, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------- the tokenizer
def test_bpe_tokenizes_caption_words_whole(tmp_path):
    from t2igan.text.clip_bpe import BOS, EOS, build_clip_bpe, write_clip_bpe

    vocab, merges = build_clip_bpe(CAPTIONS)
    write_clip_bpe(tmp_path, vocab, merges)
    assert (vocab[BOS], vocab[EOS]) == (len(vocab) - 2, len(vocab) - 1)  # CLIP's layout: specials last
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
    tok = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    for cap in CAPTIONS:
        ids = tok(cap.upper())["input_ids"]  # lower-cased like CLIP's
        assert tok.convert_ids_to_tokens(ids) == [BOS, *[w + "</w>" for w in cap.split()], EOS]
    unseen = tok.convert_ids_to_tokens(tok("zebra!")["input_ids"])  # unseen words: byte pieces, never unknown
    assert unseen[0] == BOS and unseen[-1] == EOS and "".join(unseen[1:-1]) == "zebra</w>!</w>"


# ----------------------------------------------------------------------------- Hugging Face folders
def test_fixture_folder_loads_with_load_clip_and_transformers(clip_dir):
    from t2igan.text.clip import load_clip

    clip = load_clip(clip_dir)
    assert isinstance(clip.model, transformers.CLIPModel) and not any(p.requires_grad for p in clip.model.parameters())
    assert (clip.image_size, clip.patch_size, clip.grid, clip.vision_width, clip.vision_layers, clip.embed_dim) == \
        (32, 8, 4, 32, 4, 32)
    assert clip.spec == f"clip:{clip_dir}" and len(clip.fingerprint()) == 64
    images = _images().requires_grad_(True)
    img = clip.encode_image(images)
    assert img.shape == (3, 32) and torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    img.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0  # differentiable w.r.t. the images
    txt = clip.encode_text(CAPTIONS[:2])
    assert txt.shape == (2, 32) and torch.allclose(txt.norm(dim=1), torch.ones(2), atol=1e-5)
    # the same numbers as plain transformers with its own processor
    model = transformers.CLIPModel.from_pretrained(str(clip_dir)).eval()
    proc = transformers.CLIPProcessor.from_pretrained(str(clip_dir))
    t = proc.tokenizer(CAPTIONS[:2], padding=True, return_tensors="pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref_t = model.text_projection(model.text_model(**t).pooler_output)
        ref_i = model.visual_projection(model.vision_model(pixel_values=clip.pixel_values(x * 2 - 1)).pooler_output)
        pv = proc.image_processor(list((x * 255).round().to(torch.uint8)), return_tensors="pt", do_rescale=True)
    assert torch.allclose(txt, F.normalize(ref_t, dim=-1), atol=1e-5)
    assert torch.allclose(clip.encode_image(x * 2 - 1), F.normalize(ref_i, dim=-1), atol=1e-5)
    # the differentiable preprocessing matches the processor's (an S x S image: rescale + normalise only)
    assert (clip.pixel_values((x * 255).round() / 127.5 - 1) - pv["pixel_values"]).abs().max() < 1e-4


def test_bad_sources_are_one_line(clip_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from t2igan.text.clip import load_clip

    def refused(source, pattern):
        with pytest.raises(T2IError, match=pattern) as e:
            load_clip(source)
        assert "\n" not in str(e.value) and len(str(e.value)) < 400

    refused(tmp_path / "missing", "CLIP weights not found")
    refused(clip_dir / "config.json", "is a file, not a folder")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "has no config.json")
    bert = shutil.copytree(clip_dir, tmp_path / "bert")
    (bert / "config.json").write_text(json.dumps({**json.loads((bert / "config.json").read_text()), "model_type": "bert"}))
    refused(bert, "model_type is 'bert', not 'clip'")
    for name, drop, pattern in (("notok", ("vocab.json", "tokenizer.json"), "the CLIP tokenizer is missing"),
                                ("nopre", ("preprocessor_config.json",), "no preprocessor_config.json"),
                                ("noweights", ("model.safetensors",), "no model.safetensors")):
        d = shutil.copytree(clip_dir, tmp_path / name)
        for f in drop:
            (d / f).unlink()
        refused(d, pattern)
    corrupt = shutil.copytree(clip_dir, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    refused(corrupt, "corrupt: cannot load the CLIP weights in model.safetensors")
    part = shutil.copytree(clip_dir, tmp_path / "part")
    state = load_file(part / "model.safetensors")
    save_file({k: v for k, v in state.items() if k != "text_projection.weight"}, part / "model.safetensors",
              metadata={"format": "pt"})
    refused(part, r"do not match config.json \(1 missing.*text_projection.weight")
    # open_clip files
    refused(f"ViT-B-32:{tmp_path / 'missing.pt'}", "CLIP checkpoint not found")
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    refused(f"ViT-B-32:{tmp_path / 'junk.safetensors'}", "not a checkpoint of open_clip")
    save_file({"weight": torch.zeros(3, 3)}, tmp_path / "foreign.safetensors")
    refused(f"ViT-B-32:{tmp_path / 'foreign.safetensors'}", "not a checkpoint of open_clip with ViT towers")
    # a Hugging Face CLIP file given as an open_clip file: its keys fit nothing
    refused(f"ViT-B-32:{clip_dir / 'model.safetensors'}", "not a checkpoint of open_clip")


# ----------------------------------------------------------------------------- open_clip files
def _tiny_open_clip(quick_gelu: bool, seed: int = 0):
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(embed_dim=16, quick_gelu=quick_gelu,
                vision_cfg={"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 64},
                text_cfg={"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}).eval()


@pytest.mark.parametrize("quick_gelu,suffix", [(False, ".safetensors"), (True, ".pt")])
def test_open_clip_parity(tmp_path, quick_gelu, suffix):
    pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from t2igan.text.clip import load_clip

    model = _tiny_open_clip(quick_gelu)
    f = tmp_path / f"tiny{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(f)) if suffix == ".safetensors" else torch.save(state, f)
    arch = "t2igan-unknown-quickgelu" if quick_gelu else "t2igan-unknown"  # not an open_clip name: shapes decide
    clip = load_clip(f"{arch}:{f}")
    assert clip.model.config.text_config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    images = _images(4, size=32)
    caps = ["a red flower", "this flower has long yellow petals and a green stem", "x"]
    tok = clip.tokenize(caps)
    with torch.no_grad():
        ref_img = F.normalize(model.encode_image(clip.pixel_values(images)), dim=-1)
        ref_txt = F.normalize(model.encode_text(tok["input_ids"]), dim=-1)
        img = clip.encode_image(images)
    assert (img - ref_img).abs().max() <= 1e-5
    assert (clip.encode_text(caps) - ref_txt).abs().max() <= 1e-5
    assert torch.equal(tok["attention_mask"].sum(1), tok["input_ids"].argmax(-1) + 1)  # start .. end token


def test_convert_open_clip_writes_a_hugging_face_folder(tmp_path):
    pytest.importorskip("open_clip")
    from t2igan.convert.open_clip import write_hf_folder
    from t2igan.text.clip import load_clip

    model = _tiny_open_clip(True)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "tiny.pt")
    write_hf_folder("t2igan-tiny-quickgelu", tmp_path / "tiny.pt", tmp_path / "hf")
    hf = load_clip(tmp_path / "hf")
    oc = load_clip(f"t2igan-tiny-quickgelu:{tmp_path / 'tiny.pt'}")
    images = _images(2, size=32)
    caps = ["a red flower with round petals", "the petals are pink"]
    assert (hf.encode_image(images) - oc.encode_image(images)).abs().max() <= 1e-5
    assert (hf.encode_text(caps) - oc.encode_text(caps)).abs().max() <= 1e-5  # OpenAI's BPE as vocab.json + merges.txt
    transformers.CLIPModel.from_pretrained(str(tmp_path / "hf"))


# ----------------------------------------------------------------------------- the text spec clip:DIR
def test_spec_clip_dir_encoder_and_reference_round_trip(clip_dir, tmp_path):
    from t2igan.core.folder import write_model_index
    from t2igan.text.spec import (
        load_caption_encoder,
        load_encoder_dir,
        save_encoder_dir,
    )

    enc = load_caption_encoder(f"clip:{clip_dir}")
    assert enc.frozen and enc.spec == f"clip:{clip_dir}" and (enc.sentence_dim, enc.word_dim) == (32, 32)
    f = enc.encode(CAPTIONS[:3])
    n_words = torch.tensor([len(c.split()) + 2 for c in CAPTIONS[:3]])  # start + one token per word + end
    assert torch.equal(f.mask.sum(1), n_words) and f.words.shape == (3, int(n_words.max()), 32)
    assert torch.allclose(f.sentence.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (f.words[~f.mask] == 0).all() and (f.words[f.mask].abs().sum(-1) > 0).all()
    from t2igan.text.clip import load_clip

    assert torch.allclose(f.sentence, load_clip(clip_dir).encode_text(CAPTIONS[:3]), atol=1e-6)
    # a model folder conditioned on it stores the spec + fingerprint and loads it again
    save_encoder_dir(tmp_path / "model", enc)
    write_model_index(tmp_path / "model", family="dfgan")
    again = load_encoder_dir(tmp_path / "model")
    assert again.spec == enc.spec and again.fingerprint() == enc.fingerprint()
    cfg = json.loads((tmp_path / "model" / "text_encoder" / "config.json").read_text())
    cfg["fingerprint"] = "0" * 64
    (tmp_path / "model" / "text_encoder" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(T2IError, match="other weights"):
        load_encoder_dir(tmp_path / "model")


# ----------------------------------------------------------------------------- task clip
TINY = {"model.patch_size": 8, "model.vision_width": 32, "model.vision_layers": 1, "model.vision_heads": 2,
        "model.text_width": 32, "model.text_layers": 1, "model.text_heads": 2, "model.projection_dim": 16,
        "model.context_length": 24, "data.crop": False, "eval.max_images": 16}


def test_task_clip_trains_exports_and_loads(tiny_data, tmp_path):
    from t2igan.config import load_config
    from t2igan.families import registry
    from t2igan.text.clip import load_clip
    from t2igan.train.run import build_training

    assert registry.get("clip").outputs == ("clip",)
    out = tmp_path / "run"
    tr = build_training(load_config(None, tiny_overrides(tiny_data, out, **TINY), task="clip"), resume=False)
    batch = tr.to_batch(next(tr.batches()), 0)
    logs = {k: float(v) for k, v in tr.task.train_step(batch, 0).items()}
    assert torch.isfinite(torch.tensor(list(logs.values()))).all() and 0 < logs["loss"] < 20
    assert tr.fit()["step"] == 2
    pipe = out / "pipeline"
    for f in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json",
              "model_index.json"):
        assert (pipe / f).is_file(), f
    assert json.loads((pipe / "model_index.json").read_text())["family"] == "clip"
    a, b = load_clip(out), load_clip(pipe)
    assert a.fingerprint() == b.fingerprint() and a.embed_dim == 16 and a.image_size == 32
    model = transformers.CLIPModel.from_pretrained(str(pipe))
    assert model.config.vision_config.patch_size == 8
    ev = json.loads((out / "clip_eval.json").read_text())
    assert ev["split"] == "test" and ev["n_images"] == 16 and 0 <= ev["top1"] <= ev["top5"] <= 1
    # the caption words of the training split are single tokens of the learnt BPE
    tok = transformers.CLIPTokenizer.from_pretrained(str(pipe))
    word = tr.dataset.data.captions[0][0].split()[-1].lower().strip(".,")
    assert tok.convert_ids_to_tokens(tok(word)["input_ids"])[1:-1] == [word + "</w>"]


def test_task_clip_bad_values_are_refused_before_writing(tiny_data, tmp_path):
    from t2igan.config import load_config
    from t2igan.train.run import build_training

    for key, value, pattern in (("model.patch_size", 5, "does not divide data.image_size"),
                                ("model.vision_heads", 3, "model.vision_heads=3 does not divide"),
                                ("model.hidden_act", "relu", "model.hidden_act='relu'"),
                                ("schedule.kind", "step", "schedule.kind='step'")):
        out = tmp_path / key
        cfg = load_config(None, tiny_overrides(tiny_data, out, **{**TINY, key: value}), task="clip")
        with pytest.raises(T2IError, match=pattern):
            build_training(cfg, resume=False)
        assert not (out / "pipeline").exists()


def test_convert_clip_command_writes_the_folder_and_keeps_an_existing_one(tmp_path, capsys):
    pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from t2igan.cli import main
    from t2igan.text.clip import load_clip

    model = _tiny_open_clip(False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "tiny.safetensors"))
    out = tmp_path / "hf"
    assert main(["convert", "clip", "t2igan-tiny", str(tmp_path / "tiny.safetensors"), "--out", str(out)]) in (0, None)
    assert f"clip: {out}" in capsys.readouterr().out
    images = _images(2, size=32)
    with torch.no_grad():
        ref = F.normalize(model.encode_image(load_clip(out).pixel_values(images)), dim=-1)
    assert (load_clip(out).encode_image(images) - ref).abs().max() <= 1e-5
    before = sorted(p.name for p in out.iterdir())
    # a non-empty --out is refused in one line and left as it was
    assert main(["convert", "clip", "t2igan-tiny", str(tmp_path / "tiny.safetensors"), "--out", str(out)]) != 0
    assert sorted(p.name for p in out.iterdir()) == before
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.safetensors").write_bytes(b"nope")  # a corrupt file: refused, nothing written
    assert main(["convert", "clip", "ViT-B-32", str(tmp_path / "junk.safetensors"), "--out", str(tmp_path / "hf2")]) != 0
    assert not (tmp_path / "hf2").exists() and "not a checkpoint of open_clip" in capsys.readouterr().err
