"""`t2igan convert` for DF-GAN, AttnGAN and MirrorGAN: official files -> a pipeline folder whose
outputs equal the official code's.

Fixtures (``tests/data/convert_{dfgan,attngan,mirrorgan}.safetensors``) were written once, outside the
repository, by running the official model definitions (tobran/DF-GAN ``code/models/GAN.py`` +
``models/DAMSM.py``; taoxugit/AttnGAN ``code/model.py`` + ``GlobalAttention.py``; qiaott/MirrorGAN
``model.py`` + ``GLAttention.py``) on current torch, at their official configurations (DF-GAN birds:
NetG(32, 100, 256, 256, 3), RNN_ENCODER(nhidden=256); AttnGAN/MirrorGAN ``bird_attn2.yml`` /
``train_bird.yml``: GF_DIM 32, Z_DIM 100, CONDITION_DIM 100, EMBEDDING_DIM 256, R_NUM 2, 3 branches;
the Inception-v3 CNN_ENCODER with nef 256), every parameter and buffer filled by :func:`fill` (a
function of its name and shape), with a vocabulary of the captions' words (so ``ntoken`` is small; it
is not an architecture setting). Captions were tokenised with nltk's ``RegexpTokenizer(r'\\w+')`` as
the official sampling code does, encoded as DF-GAN's ``prepare_sample_data`` does (sorted by length
for ``RNN_ENCODER``, un-sorted after), noise drawn as the official scripts draw it (DF-GAN:
``truncated_noise(B, 100, 0.88, seed)`` and ``torch.manual_seed(seed); torch.randn``; AttnGAN /
MirrorGAN: ``torch.manual_seed(seed)``, ``noise.normal_(0, 1)``, then ``CA_NET``'s eps
``normal_()``), and the generators called with ``mask = (captions == 0)`` (official tiling). Stored:
the official key names and shapes (metadata), token ids, sentence features, word features (every 4th
channel for AttnGAN/MirrorGAN), every stage's image and attention maps on a fixed pixel lattice,
``mu``, and for AttnGAN the DAMSM image encoder's code and (subsampled) region features of the last
images. No official code is in the repository; the files the tests write hold the official names in
the official nesting, written with ``torch.save`` / ``pickle`` as the official code writes them.
"""
from __future__ import annotations

import json
import os
import pickle
import zlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from t2igan import T2IError
from t2igan.cli import main
from t2igan.convert import CONVERTERS, convert, get
from t2igan.pipeline import Pipeline
from t2igan.text.damsm_encoder import load_image_encoder
from t2igan.text.official_vocab import OfficialVocabulary, load_vocabulary, official_tokenize

DATA = Path(__file__).parent / "data"
SEEDS = {"single": 3, "batch": 7}


def fill(name: str, shape) -> torch.Tensor:
    """The fixture's weights: a function of the parameter's name and shape only."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.tensor(0, dtype=torch.long)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        return (1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn(shape, generator=g)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(shape, generator=g) / fan_in ** 0.5


def fixture(family: str):
    """``family``: ``dfgan`` (official config) or ``dfgan_small`` (smaller widths), ... ."""
    path = DATA / f"convert_{family}.safetensors"
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def official_state(meta: dict, which: str) -> OrderedDict:
    """A state dict with the official key names (in the official order) and :func:`fill` values."""
    return OrderedDict((k, fill(k, tuple(shape))) for k, shape in json.loads(meta[which]))


def write_captions(path: Path, words: list[str]) -> Path:
    ixtoword = dict(enumerate(words))
    wordtoix = {w: i for i, w in ixtoword.items()}
    with open(path, "wb") as f:  # AttnGAN load_text_data: [train_captions, test_captions, ixtoword, wordtoix]
        pickle.dump([[[1, 2, 3], [4, 5]], [[2, 6]], ixtoword, wordtoix], f, protocol=2)
    return path


def write_official(tmp: Path, family: str, meta: dict, image_encoder: bool = True) -> list[Path]:
    """The official files of ``family`` (dfgan, attngan, mirrorgan), in the official save format."""
    family = family.removesuffix("_small")
    files = [write_captions(tmp / "captions.pickle", json.loads(meta["words"]))]
    torch.save(official_state(meta, "text_keys"), tmp / "text_encoder200.pth")
    files.append(tmp / "text_encoder200.pth")
    g = official_state(meta, "netG_keys")
    if family == "dfgan":  # code/lib/utils.py save_models, trained on several GPUs (DataParallel)
        netd = {"conv_img.weight": torch.zeros(32, 3, 3, 3), "DBlocks.0.gamma": torch.zeros(1)}
        state = {"model": {"netG": OrderedDict((f"module.{k}", v) for k, v in g.items()), "netD": netd,
                           "netC": {"joint_conv.0.weight": torch.zeros(64, 512, 3, 3)}},
                 "optimizers": {"optimizer_G": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}},
                 "epoch": 1220}
        torch.save(state, tmp / "state_epoch_1220.pth")
        files.append(tmp / "state_epoch_1220.pth")
    else:  # trainer.save_model: torch.save(netG.state_dict(), 'netG_epoch_%d.pth')
        torch.save(g, tmp / "netG_epoch_600.pth")
        files.append(tmp / "netG_epoch_600.pth")
        if image_encoder and "image_keys" in meta:
            torch.save(official_state(meta, "image_keys"), tmp / "image_encoder200.pth")
            files.append(tmp / "image_encoder200.pth")
    return files


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """family -> (pipeline folder, fixture tensors, fixture metadata, report)."""
    cache = {}

    def get_family(family):
        if family not in cache:
            tmp = tmp_path_factory.mktemp(family)
            ref, meta = fixture(family)
            rep = convert(family.removesuffix("_small"), write_official(tmp, family, meta), tmp / "model")
            cache[family] = (tmp / "model", ref, meta, rep)
        return cache[family]
    return get_family


# ----------------------------------------------------------------------------- parity
def check_text(pipe: Pipeline, ref: dict, name: str, captions: list[str], word_step: int) -> None:
    tokens, lengths, _ = pipe.vocab.batch(captions, pipe.max_words)
    T = ref[f"{name}/tokens"].shape[1]
    assert torch.equal(tokens[:, :T], ref[f"{name}/tokens"]) and not tokens[:, T:].any()  # official token ids
    words, sent, mask = pipe.encode(captions)
    assert close(sent, ref[f"{name}/sent"]) <= 1e-5
    assert close(words[:, ::word_step, :T], ref[f"{name}/words"]) <= 1e-5
    assert not words[:, :, T:].any() and torch.equal(mask[:, :T], ref[f"{name}/tokens"] != 0)


# the official configurations run with T2IGAN_SLOW=1; smaller widths (same code paths) always
SIZES = [pytest.param("", marks=pytest.mark.slow, id="official-config"), pytest.param("_small", id="small-widths")]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["single", "batch"])
def test_dfgan_official_checkpoint_gives_the_official_images(converted, name, size):
    """DF-GAN official NetG(32, 100, 256, 256, 3); small: NetG(8, 100, 256, 64, 3)."""
    out, ref, meta, rep = converted("dfgan" + size)
    ngf, imsize, step = (32, 256, 8) if not size else (8, 64, 2)
    assert rep.config["ngf"] == ngf and rep.config["imsize"] == imsize and rep.vocab_size == len(json.loads(meta["words"]))
    assert any("module." in w for w in rep.wrappers) and any("['model']['netG']" in w for w in rep.wrappers)
    assert any("['model']['netD']" in i for i in rep.ignored) and any("['optimizers']" in i for i in rep.ignored)
    pipe = Pipeline.from_pretrained(out)
    assert isinstance(pipe.vocab, OfficialVocabulary) and pipe.truncation_mode == "truncnorm"
    captions = json.loads(meta[name])
    check_text(pipe, ref, name, captions, 1)
    seed = SEEDS[name]
    official = pipe.generate(captions, seed=seed, truncation=0.88)[:, :, 3::step, 5::step] * 2 - 1  # truncnorm, 0.88
    assert close(official, ref[f"{name}/img_trunc"]) <= 1e-5
    plain = pipe.generate(captions, seed=seed)[:, :, 3::step, 5::step] * 2 - 1  # torch.manual_seed(seed); torch.randn
    assert close(plain, ref[f"{name}/img"]) <= 1e-5
    assert (ref[f"{name}/img"].abs() < 0.99).float().mean() > 0.9 and ref[f"{name}/img"].std() > 0.1  # not saturated


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("family", ["attngan", "mirrorgan"])
@pytest.mark.parametrize("name", ["single", "batch"])
def test_attngan_and_mirrorgan_give_the_official_images_attention_and_features(converted, family, name, size):
    """Official: GF_DIM 32, R_NUM 2, 3 branches (bird_attn2.yml); small: GF_DIM 8, R_NUM 1, 3 branches."""
    out, ref, meta, rep = converted(family + size)
    gf_dim, r_num = (32, 2) if not size else (8, 1)
    assert rep.config["gf_dim"] == gf_dim and rep.config["r_num"] == r_num and rep.config["branch_num"] == 3
    assert rep.config["c_dim"] == 100 and rep.config["t_dim"] == 256
    pipe = Pipeline.from_pretrained(out)
    captions = json.loads(meta[name])
    check_text(pipe, ref, name, captions, 4)
    T = ref[f"{name}/tokens"].shape[1]
    assert pipe.attention_mask == "corrected"
    pipe.attention_mask = "official"  # the official mask tiling (a no-op for one caption)
    res = pipe.generate_stages(captions, seed=SEEDS[name])
    for k, step in enumerate((4, 8, 16)):
        assert close(res["images"][k][:, :, 1::step, 2::step] * 2 - 1, ref[f"{name}/img{k}"]) <= 1e-5
    for k, step in enumerate((8, 16)):
        att = res["attention"][k]
        assert close(att[:, :T, 3::step, 1::step], ref[f"{name}/att{k}"]) <= 1e-5 and not att[:, T:].any()
    z, eps = pipe.latents(len(captions), SEEDS[name])  # the official draws: noise, then CA_NET's eps
    with torch.no_grad():
        mu = pipe.generator.ca_net.encode(pipe.encode(captions)[1])[0]
    assert close(mu, ref[f"{name}/mu"]) <= 1e-5
    pipe.attention_mask = "corrected"
    corrected = pipe.generate_stages(captions, seed=SEEDS[name])
    diff = close(corrected["images"][-1], res["images"][-1])
    if name == "single":
        assert diff == 0.0  # one caption: no padding, both masks agree
    else:  # a padded batch: the official tiling attends to padding; the default gives it exactly 0
        assert diff > 1e-4
        mask = corrected["mask"]
        assert all(float(a.masked_select(~mask[:, :, None, None].expand_as(a)).abs().max()) == 0.0
                   for a in corrected["attention"])
        assert float(res["attention"][0].masked_select(~mask[:, :, None, None].expand_as(res["attention"][0])).max()) > 0


@pytest.mark.slow  # the Inception-v3 trunk (22M parameters) at 299x299
def test_attngan_damsm_image_encoder_gives_the_official_codes(converted):
    out, ref, meta, rep = converted("attngan")
    assert "image_encoder" in {p.name for p in out.iterdir()}
    pipe = Pipeline.from_pretrained(out)
    pipe.attention_mask = "official"
    images = pipe.generate(json.loads(meta["batch"]), seed=SEEDS["batch"])[:2]  # [0, 1]
    enc = load_image_encoder(out)
    with torch.no_grad():
        regions, code = enc(images * 2 - 1)  # the official CNN_ENCODER reads generator images in [-1, 1]
    assert regions.shape == (2, 256, 17, 17)
    assert close(code, ref["batch/img_code"]) <= 1e-5
    assert close(regions[:, ::4, ::3, ::3], ref["batch/img_regions"]) <= 1e-5
    from t2igan.eval.rprecision import DAMSMScorer  # R-precision reads the converted folder as a DAMSM run

    scorer = DAMSMScorer.from_pretrained(out)
    assert close(scorer.image_codes(images), ref["batch/img_code"]) <= 1e-5
    assert close(scorer.sentence_codes(json.loads(meta["batch"])[:2]), ref["batch/sent"][:2]) <= 1e-5


def test_inception_image_encoder_has_the_official_names_and_shapes():
    """Without the slow forward pass: the state dict of t2igan's CNN_ENCODER is the official one."""
    from t2igan.models.damsm_inception import CNN_ENCODER

    _, meta = fixture("attngan")
    official = [(k, tuple(s)) for k, s in json.loads(meta["image_keys"])]
    with torch.device("meta"):  # shapes only, no memory, no initialisation
        ours = [(k, tuple(v.shape)) for k, v in CNN_ENCODER(256).state_dict().items()]
    assert ours == official and len(ours) > 400


def test_official_tokenizer_differs_from_t2igan_where_the_official_code_does():
    assert official_tokenize("The naïve bird's belly_x\ufffd\ufffdcafé") == ["the", "nave", "bird", "s", "belly_x", "caf"]
    v = OfficialVocabulary(["<end>", "belly_x", "nave", "bird"])
    ids, unknown = v.encode("naïve bird belly_x!")
    assert ids == [2, 3, 1] and unknown == []


def test_official_vocabulary_round_trips_and_reports_long_captions(tmp_path):
    v = OfficialVocabulary(["<end>", "a", "b"])
    v.save(tmp_path / "vocab.json")
    back = load_vocabulary(tmp_path / "vocab.json")
    assert isinstance(back, OfficialVocabulary) and back.words == v.words
    tokens, lengths, _ = back.batch(["a b a b a", "a"], 3)
    assert tokens.shape == (2, 3) and lengths.tolist() == [3, 1] and back.last_long == [(0, 5)]
    back.long_captions = "keep"  # official sampling feeds the whole caption
    tokens, lengths, _ = back.batch(["a b a b a", "a"], 3)
    assert tokens.shape == (2, 5) and lengths.tolist() == [5, 1]


def test_long_captions_are_reported_by_sample(converted, tmp_path, capsys):
    out, _, _, _ = converted("dfgan_small")
    long = " ".join(["this bird has red wings"] * 5)  # 25 known words > max_words 18
    assert main(["sample", str(out), long, "-o", str(tmp_path / "s.png")]) == 0
    assert "caption 0 has 25 known words, more than max_words=18" in capsys.readouterr().err


def test_serve_takes_a_converted_folder_with_the_official_truncation(converted):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from t2igan.serve.app import Settings, create_app

    out, ref, meta, _ = converted("dfgan_small")
    pipe = Pipeline.from_pretrained(out)
    caption = json.loads(meta["single"])[0]
    client = TestClient(create_app({"birds": pipe}, Settings(token="tok")))
    r = client.post("/v1/generate?format=png", json={"captions": [caption], "seed": 3, "truncation": 0.88},
                    headers={"Authorization": "Bearer tok"})
    assert r.status_code == 200, r.text
    served = np.array(Image.open(io.BytesIO(r.content)).convert("RGB"))
    official = ref["single/img_trunc"][0].add(1).div(2).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
    assert np.abs(served[3::2, 5::2].astype(int) - official.numpy().astype(int)).max() <= 1  # uint8 rounding


# ----------------------------------------------------------------------------- CLI
def test_cli_check_prints_the_report_and_writes_nothing(tmp_path, capsys):
    _, meta = fixture("attngan_small")
    files = write_official(tmp_path, "attngan", meta, image_encoder=False)
    out = tmp_path / "out"
    assert main(["convert", "attngan", *map(str, files), "--out", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert "family: AttnGAN (attngan)" in text and "gf_dim=8" in text and "branch_num=3" in text
    assert f"vocabulary: {len(json.loads(meta['words']))} words" in text and "check only: nothing written" in text
    assert not out.exists()
    assert main(["convert", "attngan", *map(str, files), "--out", str(out)]) == 0
    assert (out / "model_index.json").is_file() and not (out / "image_encoder").exists()
    assert main(["sample", str(out), "this bird has red wings", "a small yellow bird", "--attention-mask", "official",
                 "-o", str(tmp_path / "s.png")]) == 0
    assert main(["convert", "attngan", *map(str, files), "--out", str(out)]) == 2  # not empty: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", "attngan", *map(str, files), "--out", str(out), "--overwrite", "--set", "max_words=12"]) == 0
    assert json.loads((out / "model_index.json").read_text())["max_words"] == 12
    assert main(["convert", "attngan", *map(str, files), "--out", str(out), "--set", "nope=1"]) == 2
    assert main(["sample", str(files[-1]), "a bird"]) == 2  # an official file: a hint to convert it
    assert "convert it first: t2igan convert FAMILY" in capsys.readouterr().err


def test_legacy_torch_save_format_and_state_dict_wrapper_are_read(tmp_path):
    """The released files were written by torch 0.3/0.4 (the legacy, non-zip torch.save format)."""
    _, meta = fixture("attngan_small")
    files = write_official(tmp_path, "attngan", meta, image_encoder=False)
    g = official_state(meta, "netG_keys")
    torch.save({"state_dict": g, "epoch": 600}, files[-1], _use_new_zipfile_serialization=False)
    torch.save(official_state(meta, "text_keys"), files[1], _use_new_zipfile_serialization=False)
    rep = convert("attngan", files, None, check=True)
    assert any("checkpoint['state_dict']" in w for w in rep.wrappers) and rep.config["gf_dim"] == 8


def test_every_converter_in_the_table_loads():
    for family in CONVERTERS:
        assert get(family).name == family


# ----------------------------------------------------------------------------- bad files
def one_line_error(family, files, out, match):
    with pytest.raises(T2IError, match=match) as e:
        convert(family, files, out)
    assert "\n" not in str(e.value)
    assert not Path(out).exists() and not Path(str(out) + ".tmp").exists()
    return str(e.value)


def test_truncated_file_is_one_line_and_nothing_is_written(tmp_path):
    _, meta = fixture("dfgan_small")
    files = write_official(tmp_path, "dfgan", meta)
    g = files[-1]
    data = g.read_bytes()
    g.write_bytes(data[: len(data) // 2])
    msg = one_line_error("dfgan", files, tmp_path / "out", "truncated or corrupt")
    assert str(g) in msg
    files[0].write_bytes(files[0].read_bytes()[:40])
    one_line_error("dfgan", files[:1], tmp_path / "out", "captions.pickle")


class _Evil:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def test_malicious_pickles_are_refused_without_running_code(tmp_path):
    _, meta = fixture("dfgan_small")
    files = write_official(tmp_path, "dfgan", meta)
    flag = tmp_path / "pwned"
    torch.save({"model": {"netG": _Evil(flag)}}, files[-1])
    msg = one_line_error("dfgan", files, tmp_path / "out", "would run code")
    assert str(files[-1]) in msg and not flag.exists()
    files = write_official(tmp_path, "dfgan", meta)
    with open(files[0], "wb") as f:
        pickle.dump([_Evil(flag)], f, protocol=2)
    one_line_error("dfgan", files, tmp_path / "out", "refusing to load")
    assert not flag.exists()


def test_a_state_dict_of_another_family_is_refused(tmp_path):
    _, meta = fixture("attngan_small")
    files = write_official(tmp_path, "attngan", meta, image_encoder=False)
    one_line_error("dfgan", files, tmp_path / "out", r"netG_epoch_600.pth: not one of the files a DF-GAN conversion takes")
    _, mmeta = fixture("mirrorgan_small")
    torch.save(official_state(mmeta, "netG_keys"), files[-1])
    one_line_error("attngan", files, tmp_path / "out", "generator of MirrorGAN, not AttnGAN")
    g = official_state(meta, "netG_keys")
    g["h_net2.att.extra.weight"] = torch.zeros(3)  # a key no table lists
    torch.save(g, files[-1])
    one_line_error("attngan", files, tmp_path / "out", r"1 of its \d+ keys fit nothing \(e.g. 'h_net2.att.extra.weight'\)")
    del g["h_net2.att.extra.weight"], g["img_net3.img.0.weight"]
    torch.save(g, files[-1])
    one_line_error("attngan", files, tmp_path / "out", "weights are missing")


def test_wrong_shapes_are_refused(tmp_path):
    _, meta = fixture("dfgan_small")
    files = write_official(tmp_path, "dfgan", meta)
    state = torch.load(files[-1], weights_only=True)
    w = state["model"]["netG"]["module.GBlocks.2.c1.weight"]
    state["model"]["netG"]["module.GBlocks.2.c1.weight"] = w[:, :-1]
    torch.save(state, files[-1])
    msg = one_line_error("dfgan", files, tmp_path / "out", "GBlocks.2.c1.weight' has shape")
    assert str(files[-1]) in msg
    files = write_official(tmp_path, "dfgan", meta)
    write_captions(files[0], json.loads(meta["words"])[:-1])  # a vocabulary of another dataset
    one_line_error("dfgan", files, tmp_path / "out", "tokens but .*captions.pickle has")
