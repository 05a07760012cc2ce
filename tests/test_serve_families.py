"""The server with every generator family: stages, word attention, interpolation, dynamic batching
(batched = unbatched, bitwise in exact mode), and DF-GAN on a frozen pretrained text encoder."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from t2igan.models import attngan, dfgan, gan_int_cls, mirrorgan, stackgan, stackganpp  # noqa: E402
from t2igan.core.folder import write_model_index  # noqa: E402
from t2igan.pipeline import Pipeline  # noqa: E402
from t2igan.text.base import save_reference  # noqa: E402
from t2igan.text.spec import load_caption_encoder  # noqa: E402
from t2igan.serve.app import HEAT, Settings, create_app, heatmaps  # noqa: E402
from t2igan.serve.batcher import Job, ModelWorker  # noqa: E402
from t2igan.core import weights as ckpt  # noqa: E402

CAPS = ["this flower has red petals and a yellow center", "a flower with thin blue petals xylophone"]
OTHER = "the petals of this flower are white"


def _generators(t_dim: int) -> dict:
    """Tiny generators of every family (random weights), final size 32 (16 for StackGAN stage I)."""
    s1 = dict(t_dim=t_dim, c_dim=8, nz=8, gf_dim=4, imsize=16)
    tree = dict(t_dim=t_dim, c_dim=8, nz=8, r_num=1)
    return {
        "gan_int_cls": gan_int_cls.NetG(t_dim=t_dim, nt=8, nz=8, ngf=4, imsize=32),
        "stackgan_stage1": stackgan.STAGE1_G(**s1),
        "stackgan_stage2": stackgan.STAGE2_G(s1, gf_dim=4, c_dim=8, r_num=1, imsize=32),
        "stackganpp": stackganpp.G_NET(**tree, gf_dim=8, branch_num=2, base_size=16),
        "attngan": attngan.G_NET(**tree, gf_dim=4, branch_num=2, base_size=16),
        "mirrorgan": mirrorgan.G_NET(**tree, gf_dim=4, branch_num=3, base_size=8),
    }


STAGES = {"gan_int_cls": [32], "stackgan_stage1": [16], "stackgan_stage2": [16, 32], "stackganpp": [16, 32],
          "attngan": [16, 32], "mirrorgan": [8, 16, 32]}
ATTENDED = {"attngan": 1, "mirrorgan": 2}  # attended stages (every stage after the first)


def build_family_dirs(damsm_run, root) -> dict:
    """A saved pipeline folder per classic family, on a DAMSM run's encoder and vocabulary."""
    enc = load_caption_encoder(f"damsm:{damsm_run}")
    torch.manual_seed(0)
    out = {}
    for family, g in _generators(enc.sentence_dim).items():
        Pipeline(enc, g, family, {"image_size": g.imsize}).save_pretrained(root / family)
        out[family] = root / family
    return out


@pytest.fixture(scope="module")
def family_dirs(tiny_damsm, tmp_path_factory):
    return build_family_dirs(tiny_damsm, tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="module")
def pipes(family_dirs):
    return {f: Pipeline.from_pretrained(d) for f, d in family_dirs.items()}


@pytest.fixture(scope="module")
def client(family_dirs):
    app = create_app(dict(family_dirs), Settings())
    yield TestClient(app)
    app.state.close()


def png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def u8(x: torch.Tensor) -> np.ndarray:
    return x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_models_report_stages_and_attention(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == set(STAGES)
    for name, m in models.items():
        assert m["family"] == name and m["stage_sizes"] == STAGES[name] and m["image_size"] == STAGES[name][-1]
        assert m["stages"] is (len(STAGES[name]) > 1) and m["attention"] is (name in ATTENDED)
        assert m["text_encoder"] == "damsm" and m["vocab_size"] > 10 and m["max_words"] == 18


@pytest.mark.parametrize("family", list(STAGES))
def test_every_family_generates_with_stages_and_attention(client, pipes, family):
    pipe = pipes[family]
    r = client.post("/v1/generate", json={"captions": CAPS, "n": 2, "seed": 5, "model": family,
                                          "return_stages": True, "return_attention": True})
    assert r.status_code == 200, r.text
    j = r.json()
    got = np.stack([png(im["png_base64"]) for im in j["images"]])
    ref = pipe.generate(CAPS, seed=5, n=2, return_all_stages=True)
    # alone in its batch, the server runs the library's own forward pass: the same pixels
    np.testing.assert_array_equal(got, u8(ref[-1]))
    assert j["stage_sizes"] == STAGES[family] and j["dropped_words"] == ["xylophone"]
    words = [[w for w in c.split() if w in pipe.vocab.index] for c in CAPS]
    assert j["words"] == words
    if len(STAGES[family]) > 1:  # every stage, smallest first, the last one the images themselves
        assert len(j["stages"]) == len(STAGES[family])
        for k, (stage, size) in enumerate(zip(j["stages"], STAGES[family])):
            imgs = np.stack([png(im["png_base64"]) for im in stage])
            assert imgs.shape == (4, size, size, 3)
            np.testing.assert_array_equal(imgs, u8(ref[k]))
        np.testing.assert_array_equal(imgs, got)
    else:
        assert j["stages"] == [] and any("one image scale" in n for n in j["notes"])
    if family in ATTENDED:  # one map per word, per image, per attended stage
        maps = j["attention"]
        assert len(maps) == ATTENDED[family] * 2 * sum(len(w) for w in words)
        lib = pipe.generate_stages(CAPS, seed=5, n=2)["attention"]
        for m in maps:
            i = m["caption_index"] * 2 + m["index"]
            assert m["word"] == words[m["caption_index"]][m["word_index"]]
            k = m["stage"] - 1  # map k is used by stage k + 1
            assert m["size"] == STAGES[family][k] and png(m["png_base64"]).shape == (m["size"],) * 2 + (3,)
            a = lib[k][i, :len(words[m["caption_index"]])]
            assert m["scale"] == pytest.approx(float(a.max()), rel=1e-5)
        heat = np.stack([png(m["png_base64"]) for m in maps if m["stage"] == 1 and m["caption_index"] == 0
                         and m["index"] == 0])  # (L, h, w, 3): the words of image 0 at stage 1
        a = lib[0][0, :len(words[0])].numpy()
        w, y, x = np.unravel_index(a.argmax(), a.shape)  # the largest weight is drawn at full scale
        assert heat[w, y, x].tolist() == HEAT[-1].int().tolist()
        assert not any("attention" in n for n in j["notes"])
    else:
        assert j["attention"] == [] and any("no word attention" in n for n in j["notes"])


def test_heat_maps():
    att = torch.tensor([[[0.0, 0.1], [0.2, 0.4]], [[0.4, 0.3], [0.2, 0.0]]])  # 2 words on 2x2
    rgb, scale = heatmaps(att)
    assert rgb.shape == (2, 2, 2, 3) and rgb.dtype == torch.uint8 and scale == pytest.approx(0.4)
    assert rgb[0, 0, 0].tolist() == HEAT[0].int().tolist() and rgb[0, 1, 1].tolist() == HEAT[-1].int().tolist()
    assert rgb[0, 1, 0].tolist() == HEAT[2].int().tolist()  # half scale: the middle colour
    bright = rgb.int().sum(-1).flatten()
    assert torch.equal(bright.argsort(stable=True), att.flatten().argsort(stable=True))  # more weight, brighter


def test_short_field_names_and_png(client, pipes):
    j = client.post("/v1/generate", json={"captions": [CAPS[0]], "model": "mirrorgan", "stages": True,
                                          "attention": True}).json()
    assert len(j["stages"]) == 3 and len(j["attention"]) == 2 * len(j["words"][0])
    r = client.post("/v1/generate", params={"format": "png"}, json={"captions": [CAPS[0]], "model": "attngan",
                                                                    "seed": 2, "return_stages": True})
    want = u8(pipes["attngan"].generate([CAPS[0]], seed=2))[0]
    assert r.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")), want)


def _jobs(pipe):
    def tok(caps):
        return pipe.vocab.batch(caps, pipe.max_words)[:2]
    return [Job("generate", *tok([CAPS[0]]), 1, n=2, captions=[CAPS[0]], stages=True, attention=True),
            Job("interpolate", *tok([CAPS[1], OTHER]), 4, steps=3, captions=[CAPS[1], OTHER], attention=True),
            Job("generate", *tok([OTHER, CAPS[1]]), 9, n=1, truncation=0.7, captions=[OTHER, CAPS[1]], stages=True),
            Job("generate", *tok([CAPS[0]]), 3, n=3, captions=[CAPS[0]])]


@pytest.mark.parametrize("family", ["stackgan_stage2", "stackganpp", "attngan", "mirrorgan"])
def test_batched_equals_unbatched_exact(pipes, family):
    pipe = pipes[family]
    batched = ModelWorker("b", pipe, batching=True, max_wait_ms=0, exact=True)
    single = ModelWorker("s", pipe, batching=False, exact=True)
    try:
        together = batched.run(_jobs(pipe))
        assert batched.stats["forward_passes"] == 1 and batched.stats["max_batch_images"] == 10
        alone = [single.run([j])[0] for j in _jobs(pipe)]
        for job, t, a in zip(_jobs(pipe), together, alone):
            assert torch.equal(t.images, a.images) and t.images.shape[0] == job.images
            assert len(t.stages) == len(a.stages) == (len(STAGES[family]) if job.stages else 0)
            assert all(torch.equal(x, y) for x, y in zip(t.stages, a.stages))
            if job.attention and family in ATTENDED:
                assert len(t.attention) == ATTENDED[family] and torch.equal(t.mask, a.mask)
                assert all(torch.equal(x, y) for x, y in zip(t.attention, a.attention))
            else:
                assert t.attention == [] and t.mask is None
            if job.stages:
                assert torch.equal(t.stages[-1], t.images)
    finally:
        batched.close()
        single.close()


@pytest.mark.parametrize("family", ["gan_int_cls", "stackgan_stage2", "attngan", "mirrorgan"])
def test_interpolation_ends_are_the_captions(family_dirs, family):
    app = create_app({family: family_dirs[family]}, Settings(exact=True))
    client = TestClient(app)
    try:
        j = client.post("/v1/interpolate", json={"caption_a": CAPS[0], "caption_b": OTHER, "steps": 4,
                                                 "seed": 6}).json()
        imgs = [png(im["png_base64"]) for im in j["images"]]
        ends = [png(client.post("/v1/generate", json={"captions": [c], "seed": 6}).json()["images"][0]["png_base64"])
                for c in (CAPS[0], OTHER)]
        np.testing.assert_array_equal(imgs[0], ends[0])
        np.testing.assert_array_equal(imgs[-1], ends[1])
        assert not np.array_equal(imgs[1], imgs[0]) and not np.array_equal(imgs[1], imgs[-1])
    finally:
        app.state.close()


def test_interpolation_mixes_words_over_both_captions():
    words = torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]).bool()
    job = Job("interpolate", None, None, 0, steps=5, captions=["a", "b"])
    sent, w, m = job.conditions(torch.randn(2, 3), words, mask)
    assert sent.shape == (5, 3) and w.shape == (5, 4, 5) and m.shape == (5, 5)
    assert torch.equal(m[0], mask[0]) and torch.equal(m[-1], mask[1]) and torch.equal(m[2], mask[0] | mask[1])
    assert torch.equal(w[0], words[0]) and torch.equal(w[-1], words[1])
    torch.testing.assert_close(w[2], (words[0] + words[1]) / 2)


# ----------------------------------------------------------------------------- frozen pretrained encoder
@pytest.fixture(scope="module")
def minilm_dfgan(tmp_path_factory):
    from test_encoders import write_tiny_bert

    bert = write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-minilm")
    spec = f"minilm:{bert}"
    d = tmp_path_factory.mktemp("runs") / "dfgan_minilm"
    save_reference(d / "text_encoder", load_caption_encoder(spec))
    torch.manual_seed(0)
    args = dict(ngf=4, nz=8, cond_dim=16, imsize=32, ch_size=3)
    ckpt.save_component(dfgan.NetG(**args), d / "generator", "dfgan_generator", args)
    write_model_index(d, family="dfgan", image_size=32)
    return d


def test_frozen_text_encoder_dfgan_is_served(minilm_dfgan):
    pipe = Pipeline.from_pretrained(minilm_dfgan)
    caps = ["this flower has red petals", "a small flower with thin white petals and a yellow center"]
    app = create_app({"mini": pipe}, Settings(exact=True))
    client = TestClient(app)
    try:
        m = client.get("/v1/models").json()["models"][0]
        assert m["text_encoder"] == "minilm" and m["vocab_size"] is None and m["stages"] is False
        j = client.post("/v1/generate", json={"captions": caps, "n": 2, "seed": 1, "return_attention": True}).json()
        got = np.stack([png(im["png_base64"]) for im in j["images"]])
        ref = u8(pipe.generate(caps, seed=1, n=2))
        assert got.shape == ref.shape == (4, 32, 32, 3)
        assert np.abs(got.astype(int) - ref).max() <= 1  # the library encodes both captions in one padded batch
        assert j["dropped_words"] == [] and j["attention"] == [] and j["words"] == [[], []]
        r = client.post("/v1/interpolate", json={"caption_a": caps[0], "caption_b": caps[1], "steps": 3})
        assert r.status_code == 200 and len(r.json()["images"]) == 3
        # exact: each caption is encoded alone, so an image never depends on its batch
        jobs = lambda: [Job("generate", None, None, s, n=2, captions=c)  # noqa: E731
                        for s, c in [(1, caps), (2, [caps[1]]), (3, ["red petals", caps[0]])]]
        w = app.state.workers["mini"]
        together = w.run(jobs())
        alone = [w.run([j])[0] for j in jobs()]
        assert all(torch.equal(t.images, a.images) for t, a in zip(together, alone))
    finally:
        app.state.close()
