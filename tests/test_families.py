"""Every family x every kind of text encoder it accepts: trains 2 steps, exports, reloads and
samples; every refused pair gives its one-line reason. And every train.* switch, for every
family, either changes the step or is refused before anything is written.

Encoders, all written here in their real formats: a DAMSM run (tiny_damsm), a tiny random
MiniLM folder, a tiny random open_clip checkpoint, a char-CNN-RNN converted from a Torch7
``.t7`` file, and StackGAN-layout ``char-CNN-RNN-embeddings.pickle`` files (precomputed).
The dataset is the tiny SynthFlowers set rewritten in the Oxford-102 StackGAN layout, so the
DAMSM vocabulary knows its words and the precomputed embeddings sit where StackGAN keeps them.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2igan import T2IError
from t2igan.config import load_config
from t2igan.families import registry
from t2igan.families.base import SWITCHES, asked_switches, check_switches
from t2igan.pipeline import Pipeline
from t2igan.train.run import build_training

from conftest import first_step, tiny_overrides

ENCODERS = ("damsm", "minilm", "clip", "char-cnn-rnn", "precomputed")
EMB_DIM = 8  # width of the precomputed embeddings

SMALL = {  # tiny networks per family (32 px, stackgan stage I at 16)
    "dfgan": {"model.ngf": 4, "model.ndf": 4, "model.nz": 8},
    "gan_int_cls": {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "model.nt": 8},
    "stackgan": {"model.gf_dim": 4, "model.df_dim": 4, "model.c_dim": 8, "model.nz": 8, "model.stage1_size": 16,
                 "data.image_size": 16},
    "stackganpp": {"model.gf_dim": 8, "model.df_dim": 4, "model.c_dim": 8, "model.nz": 8, "model.r_num": 1,
                   "model.branch_num": 2, "model.base_size": 16, "data.num_scales": 2},
    "hdgan": {"model.hid_dim": 2, "model.emb_dim": 8, "model.nz": 8, "model.d_base_dim": 4, "data.num_scales": 2},
    "attngan": {"model.gf_dim": 4, "model.df_dim": 4, "model.c_dim": 8, "model.nz": 8, "model.r_num": 1,
                "model.branch_num": 2, "model.base_size": 16, "data.num_scales": 2},
    "stream": {"model.embed_size": 16, "model.hidden_size": 8, "model.width": 8, "model.image_size": 32},
    "damsm": {"image.width": 8, "image.image_size": 32, "loss.words": False},
    "sje": {"model.emb_dim": 8, "model.cnn_dim": 8, "model.doc_length": 60, "image.width": 8, "image.image_size": 32},
    "distill": {"teacher.source": "pickle", "student.word_dim": 8, "eval_split": ""},
    "evaluator": {"model.width": 8, "model.feature_dim": 16, "data.crop": False},
}
SMALL["mirrorgan"] = SMALL["attngan"]
SMALL["clip"] = {"model.vision_width": 16, "model.vision_layers": 1, "model.vision_heads": 2, "model.text_width": 16,
                 "model.text_layers": 1, "model.text_heads": 2, "model.projection_dim": 8, "eval.max_images": 8}
SMALL["galip"] = {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "model.code_ch": 8, "model.mid_ch": 8, "model.map_num": 2}
SMALL["lafite"] = {"model.z_dim": 16, "model.w_dim": 16, "model.map_num": 2, "model.channel_base": 128,
                   "model.channel_max": 8, "model.fts_dim": 16}
# the CLIP-based families read the text tower of their own CLIP (``clip:``): their encoder pairs are
# tested in test_galip.py / test_lafite.py; here they take part in the switch and DDP tests
CLIP_FAMILIES = ("galip", "lafite")
GAN_FAMILIES = ("dfgan", "gan_int_cls", "stackgan", "stackganpp", "hdgan", "attngan", "mirrorgan")
# (family, encoder kind) -> what the refusal says
REFUSED = {("attngan", "precomputed"): "attends over word features",
           ("mirrorgan", "precomputed"): "attends over word features",
           ("damsm", "damsm"): "trains its own text encoder"}


# ----------------------------------------------------------------------------- encoders and data
def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_flowers_layout(src: Path, root: Path, n_train: int = 16, n_test: int = 8) -> Path:
    """The SynthFlowers folder ``src`` as an Oxford-102 StackGAN-layout folder, with precomputed
    embeddings ``[N, 10, EMB_DIM]`` per split (random, fixed seed)."""
    from t2igan.data.folder import load_folder

    rng = np.random.default_rng(0)
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        d = load_folder(src, split)
        keys, classes = [], []
        for i in range(n):
            k += 1
            key, cls = f"jpg/image_{k:05d}", 1 + k % 3
            (root / "jpg").mkdir(parents=True, exist_ok=True)
            Image.open(d.image_paths[i]).convert("RGB").save(root / f"{key}.jpg", quality=95)
            caps = (list(d.captions[i]) * 10)[:10]
            t = root / "text_c10" / f"class_{cls:05d}" / f"image_{k:05d}.txt"
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text("\n".join(caps) + "\n")
            keys.append(key)
            classes.append(cls)
        _dump(keys, root / split / "filenames.pickle")
        _dump(classes, root / split / "class_info.pickle")
        _dump(rng.standard_normal((n, 10, EMB_DIM)).astype(np.float32), root / split / "char-CNN-RNN-embeddings.pickle")
    return root


def write_tiny_clip(d: Path) -> str:
    """A random open_clip model of a registered tiny architecture saved as a checkpoint file; the spec."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    (d / "t2igan-tiny-clip16.json").write_text(json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(d)
    torch.manual_seed(0)
    model = open_clip.create_model("t2igan-tiny-clip16", device="cpu")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "clip.safetensors"))
    return f"clip:t2igan-tiny-clip16:{d / 'clip.safetensors'}"


@pytest.fixture(scope="module")
def flowers(tiny_data, tmp_path_factory) -> Path:
    return write_flowers_layout(tiny_data, tmp_path_factory.mktemp("flowers"))


@pytest.fixture(scope="module")
def specs(tiny_damsm, flowers, tmp_path_factory) -> dict[str, str]:
    """Encoder kind -> its spec."""
    from test_char_cnn_rnn import _write_reed_t7
    from test_encoders import write_tiny_bert

    from t2igan.cli import main

    tmp = tmp_path_factory.mktemp("encoders")
    _write_reed_t7(tmp / "reed.t7", cnn_dim=6, emb_dim=5, doc_length=60)  # words 6-d, sentences 5-d
    assert main(["convert", "t7", str(tmp / "reed.t7"), "--out", str(tmp / "char"), "--doc-length", "60"]) == 0
    return {"damsm": f"damsm:{tiny_damsm}", "minilm": f"minilm:{write_tiny_bert(tmp / 'minilm')}",
            "clip": write_tiny_clip(tmp / "clip"), "char-cnn-rnn": f"char-cnn-rnn:{tmp / 'char'}",
            "precomputed": f"precomputed:{flowers}"}


def family_config(task: str, data: Path, out: Path, spec: str | None, **extra):
    o = {**SMALL.get(task, {}), "data.crop": False, **extra}
    if spec is not None:
        o["text_encoder"] = spec
    if task in ("attngan", "mirrorgan") and spec is not None and not spec.startswith("damsm:"):
        o.setdefault("model.damsm_lambda", 0.0)  # AttnGAN's DAMSM loss needs the DAMSM run's image encoder
    return load_config(None, tiny_overrides(data, out, **o), task=task)


# ----------------------------------------------------------------------------- the matrix
def test_the_matrix_covers_every_family_that_takes_a_text_encoder():
    takes = {f.name for f in registry.FAMILIES if "text_encoder" in f.config.__dataclass_fields__}
    assert takes == set(GAN_FAMILIES) | {"damsm", "stream"} | set(CLIP_FAMILIES)


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("task", GAN_FAMILIES)
def test_family_trains_exports_reloads_and_samples(task, kind, flowers, specs, tmp_path):
    spec = specs[kind]
    extra = {}
    if task == "mirrorgan" and (task, kind) not in REFUSED:  # its STREAM captioner on the same vocabulary
        stream = build_training(family_config("stream", flowers, tmp_path / "stream", spec), resume=False)
        stream.fit()
        extra["stream"] = str(tmp_path / "stream")
    cfg = family_config(task, flowers, tmp_path / "run", spec, **extra)
    if (task, kind) in REFUSED:
        with pytest.raises(T2IError, match=REFUSED[task, kind]) as e:
            build_training(cfg, resume=False)
        assert "\n" not in str(e.value)
        assert not (tmp_path / "run").exists()
        return
    tr = build_training(cfg, resume=False)
    assert tr.fit()["step"] == 2
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file()  # the final grid, from caption texts
    ref = json.loads((tmp_path / "run" / "pipeline" / "text_encoder" / "config.json").read_text())
    frozen = kind not in ("damsm", "char-cnn-rnn")
    assert (ref["kind"] == "pretrained_text_encoder") == frozen and (not frozen or ref["spec"] == spec)
    pipe = Pipeline.from_pretrained(tmp_path / "run")
    # the same encoder: a frozen one by its spec, a trained one (weights in the folder) by its weights
    assert pipe.text_encoder.fingerprint() == tr.task.text.encoder.fingerprint()
    assert pipe.text_encoder.spec == spec if frozen else pipe.text_encoder.spec.startswith(f"{kind}:")
    caps = [tr.dataset.data.captions[0][0], tr.dataset.data.captions[1][0]]  # known to every encoder
    a = pipe.generate(caps, seed=1, n=2)
    size = 16 if task == "stackgan" else 32
    assert a.shape == (4, 3, size, size) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, pipe.generate(caps, seed=1, n=2)) and not torch.equal(a, pipe.generate(caps, seed=2, n=2))
    pipe.save_pretrained(tmp_path / "copy")
    assert torch.equal(a, Pipeline.from_pretrained(tmp_path / "copy").generate(caps, seed=1, n=2))


@pytest.mark.parametrize("kind", [k for k in ENCODERS if k != "damsm"])
def test_damsm_image_encoder_against_every_frozen_encoder(kind, flowers, specs, tmp_path):
    """Task damsm with a frozen encoder trains only an image encoder against it; DF-GAN's DAMSM
    loss then takes that image encoder for that encoder (and refuses it for another)."""
    spec = specs[kind]
    tr = build_training(family_config("damsm", flowers, tmp_path / "img", spec), resume=False)
    assert list(tr.task.modules) == ["image_encoder"] and tr.fit()["step"] == 2
    cfg = family_config("dfgan", flowers, tmp_path / "dfgan", spec, **{"loss.damsm_lambda": 1.0,
                                                                      "loss.damsm_words": False,
                                                                      "loss.damsm_image_encoder": str(tmp_path / "img")})
    dfgan = build_training(cfg, resume=False)
    assert dfgan.task.image_encoder is not None and "g_damsm" in dfgan.task.train_step(dfgan.to_batch(next(dfgan.batches()), 0), 0)
    other = specs["precomputed" if kind != "precomputed" else "minilm"]
    with pytest.raises(T2IError, match="trained against the text encoder"):
        build_training(family_config("dfgan", flowers, tmp_path / "d2", other, **{
            "loss.damsm_lambda": 1.0, "loss.damsm_words": False, "loss.damsm_image_encoder": str(tmp_path / "img")}),
            resume=False)


def test_damsm_only_options_are_refused_with_other_encoders(flowers, specs, tmp_path):
    for task in ("attngan", "stackgan", "stackganpp", "mirrorgan"):
        extra = {"stream": "unused"} if task == "mirrorgan" else {}
        cfg = family_config(task, flowers, tmp_path / task, specs["minilm"], **{"model.damsm_lambda": 5.0, **extra})
        with pytest.raises(T2IError, match=r"model.damsm_lambda=5.0 .*needs the DAMSM text encoder"):
            build_training(cfg, resume=False)
        assert not (tmp_path / task).exists()


def test_precomputed_encoder_knows_only_the_datasets_captions(flowers, specs):
    from t2igan.text.spec import load_caption_encoder

    enc = load_caption_encoder(specs["precomputed"])
    from t2igan.data.birds import load_dataset

    d = load_dataset(flowers, "test")
    got = enc.encode([d.captions[3][0]]).sentence
    assert torch.equal(got[0], torch.from_numpy(d.meta["embeddings"][3, 0]))  # row [image 3, caption 0]
    assert (enc.sentence_dim, enc.word_dim, enc.has_words) == (EMB_DIM, 0, False)
    with pytest.raises(T2IError, match="not one of the captions with precomputed embeddings"):
        enc.encode(["a caption nobody wrote"])


def test_stackgan_stage2_on_a_frozen_encoder_checks_stage1s_encoder(flowers, specs, tmp_path):
    s1 = tmp_path / "s1"
    assert build_training(family_config("stackgan", flowers, s1, specs["minilm"]), resume=False).fit()["step"] == 2
    stage2 = {"model.stage": 2, "model.stage1": str(s1), "model.gf_dim": 4, "model.df_dim": 4, "model.c_dim": 8,
              "model.r_num": 1, "model.stage1_size": 16, "data.image_size": 32}
    tr = build_training(family_config("stackgan", flowers, tmp_path / "s2", specs["minilm"], **stage2), resume=False)
    assert tr.fit()["step"] == 2 and Pipeline.from_pretrained(tmp_path / "s2").stage_sizes == [16, 32]
    with pytest.raises(T2IError, match="its text encoder differs from this run's"):
        build_training(family_config("stackgan", flowers, tmp_path / "s3", specs["clip"], **stage2), resume=False)


# ----------------------------------------------------------------------------- train.* switches
SWITCH_SETTINGS = {"precision": {"train.precision": "bf16"}, "channels_last": {"train.channels_last": True},
                   "compile": {"train.compile": True, "train.compile_backend": "eager"},
                   "fused_upsample": {"train.fused_upsample": True}, "adam": {"train.adam": "foreach"},
                   "accumulate": {"train.accumulate": 2}}
# srnet trains on image pairs, not captions: its switches are tested in test_srnet.py
TRAINER_FAMILIES = [f.name for f in registry.FAMILIES if f.build is not None and f.name != "srnet"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from clip_fixture import tiny_clip_dir

    return tiny_clip_dir(tmp_path_factory.mktemp("clip"), image_size=32, patch_size=8, width=32, layers=2, proj=16)


def _needs(task, stream, tiny_clip) -> dict:
    """What a family's run needs trained first: MirrorGAN its STREAM, GALIP/LAFITE their CLIP."""
    return {"stream": str(stream)} if task == "mirrorgan" else {"clip": str(tiny_clip)} if task in CLIP_FAMILIES else {}


def _switch_config(task, tiny_data, tiny_damsm, out, **extra):
    if task in CLIP_FAMILIES:  # the text encoder is their CLIP's own text tower
        return family_config(task, tiny_data, out, "", **extra)
    spec = None if task in ("sje", "distill", "evaluator", "clip") else "" if task == "damsm" else str(tiny_damsm)
    if task == "distill":
        extra = {"teacher.source": f"damsm:{tiny_damsm}", "teacher.cache_dir": str(out.parent / "cache"), **extra}
    return family_config(task, tiny_data, out, spec, **extra)


@pytest.fixture(scope="module")
def stream_run(tiny_data, tiny_damsm, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "s"
    build_training(_switch_config("stream", tiny_data, tiny_damsm, out), resume=False).fit()
    return out


def _one_step(task, tiny_data, tiny_damsm, out, stream, tiny_clip, **switch):
    extra = _needs(task, stream, tiny_clip)
    tr = build_training(_switch_config(task, tiny_data, tiny_damsm, out, **extra, **switch), resume=False)
    return tr, first_step(tr)


@pytest.mark.parametrize("switch", sorted(SWITCH_SETTINGS))
@pytest.mark.parametrize("task", TRAINER_FAMILIES)
def test_every_switch_changes_the_step_or_is_refused(task, switch, tiny_data, tiny_damsm, stream_run, tiny_clip,
                                                     tmp_path):
    setting = SWITCH_SETTINGS[switch]
    cfg_extra = _needs(task, stream_run, tiny_clip)
    step_cls_switches = None
    try:
        tr = build_training(_switch_config(task, tiny_data, tiny_damsm, tmp_path / "on", **cfg_extra, **setting),
                            resume=False)
    except T2IError as e:
        assert "\n" not in str(e) and list(asked_switches(load_config(None, [f"{k}={v}" for k, v in setting.items()],
                                                                      task="dfgan").train).values())[0] in str(e)
        assert not (tmp_path / "on").exists()  # refused before anything is written
        probe = build_training(_switch_config(task, tiny_data, tiny_damsm, tmp_path / "off", **cfg_extra), resume=False)
        step_cls_switches = probe.task.switches
        assert switch not in step_cls_switches
        return
    assert switch in tr.task.switches
    base, logs_off = _one_step(task, tiny_data, tiny_damsm, tmp_path / "off", stream_run, tiny_clip)
    on, logs_on = _one_step(task, tiny_data, tiny_damsm, tmp_path / "on2", stream_run, tiny_clip, **setting)
    if switch == "precision":  # bf16 autocast: the step's numbers move (by rounding), all finite
        assert on.task.precision.dtype == torch.bfloat16
        assert logs_on.keys() == logs_off.keys() and all(np.isfinite(v) for v in logs_on.values())
        assert any(abs(logs_on[k] - logs_off[k]) > 1e-6 * max(1.0, abs(logs_off[k])) for k in logs_off)
    elif switch == "channels_last":
        convs = [p for m in on.task.modules.values() for p in m.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        assert not all(p.is_contiguous(memory_format=torch.channels_last)
                       for m in base.task.modules.values() for p in m.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    elif switch == "adam":
        assert all(o.defaults.get("foreach") is True for o in on.task.optimizers.values())
        assert not any(o.defaults.get("foreach") is True for o in base.task.optimizers.values())
    elif switch == "compile":
        wrapped = [getattr(on.task, a) for a in ("G", "I") if hasattr(on.task, a)]
        assert wrapped and all(isinstance(w, torch._dynamo.eval_frame.OptimizedModule) for w in wrapped)
    elif switch == "fused_upsample":
        assert any(getattr(b, "fused_upsample", False) for b in on.task.netG.modules())
    elif switch == "accumulate":  # the same update (float rounding; exact in tests/test_accumulate.py) on half-batches
        assert logs_on.keys() == logs_off.keys()
        assert all(logs_on[k] == pytest.approx(logs_off[k], rel=1e-4, abs=1e-6) for k in ("d_loss", "grad_norm_D"))
        sizes = []
        on.task.netG.register_forward_hook(lambda m, args, out: sizes.append(args[0].size(0)))
        on.task.train_step(on.to_batch(next(on.batches()), 1), 1)
        assert sizes and set(sizes) == {on.tc.batch_size // 2}


@pytest.mark.parametrize("task", TRAINER_FAMILIES)
def test_ddp_is_honoured_or_refused(task, tiny_data, tiny_damsm, stream_run, tiny_clip, tmp_path):
    """With torchrun's WORLD_SIZE > 1 a step that has no DDP path is refused (the DDP path itself
    is tested on 2 processes in test_distributed.py)."""
    extra = _needs(task, stream_run, tiny_clip)
    tr = build_training(_switch_config(task, tiny_data, tiny_damsm, tmp_path / "r", **extra), resume=False)
    if "ddp" in tr.task.switches:
        check_switches(tr.tc, tr.task.switches, task, world_size=2)
        assert task in ("dfgan", "damsm", "gan_int_cls", "stackgan", "stackganpp", "hdgan", "attngan", "stream", "mirrorgan",
                        "galip", "lafite", "clip", "sje", "distill")
    else:
        with pytest.raises(T2IError, match=r"2 processes \(torchrun\): the .* step does not support it"):
            check_switches(tr.tc, tr.task.switches, task, world_size=2)


def test_a_refused_switch_writes_nothing_not_even_a_cache(tiny_data, specs, tmp_path):
    """The switch check comes before the dataset is read: no image cache, no embedding cache."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns(".cache"))
    for task in ("gan_int_cls", "stackganpp"):
        with pytest.raises(T2IError, match="train.compile=true: the .* step does not support it"):
            build_training(family_config(task, data, tmp_path / task, specs["minilm"], **{"train.compile": True}),
                           resume=False)
    assert not (data / ".cache").exists() and not (tmp_path / "gan_int_cls").exists()
    assert registry.get("stackganpp").switches == registry.get("stackganpp").step.switches


def test_stream_builds_its_vocabulary_on_every_encoder_kind(flowers, specs, tmp_path):
    """STREAM reads tokens only: any encoder gives it a vocabulary (its own, or the captions')."""
    for kind in ENCODERS:
        tr = build_training(family_config("stream", flowers, tmp_path / kind, specs[kind]), resume=False)
        assert tr.fit()["step"] == 2 and (tmp_path / kind / "pipeline" / "vocab.json").is_file()
    assert json.loads((tmp_path / "minilm" / "pipeline" / "vocab.json").read_text()) == \
        json.loads((tmp_path / "precomputed" / "pipeline" / "vocab.json").read_text())  # both from the captions


def test_the_evaluator_refuses_every_switch(tiny_data, tmp_path):
    from t2igan.cli import main

    for key, value in [("train.precision", "bf16"), ("train.channels_last", "true"), ("train.adam", "fused")]:
        out = tmp_path / key
        cfg = tmp_path / "e.yaml"
        cfg.write_text(f"task: evaluator\ndata: {{root: {tiny_data}, image_size: 32, crop: false}}\n"
                       f"train: {{out_dir: {out}, max_steps: 2, progress: false}}\n")
        assert main(["train", str(cfg), f"{key}={value}"]) == 2
        assert not out.exists()


def test_switch_list_is_the_trainers():
    assert set(SWITCHES) == set(SWITCH_SETTINGS) | {"ddp"}


def test_a_damsm_run_is_found_whichever_way_it_is_written(tiny_damsm, specs, tmp_path):
    """R-precision's 'the run's own DAMSM' (t2igan eval --damsm auto, evaluation during training)
    reads the spec with the one parser: a bare folder and damsm:FOLDER are the same run."""
    from t2igan.text.spec import damsm_run_with_image_encoder

    assert damsm_run_with_image_encoder(str(tiny_damsm)) == str(tiny_damsm)
    assert damsm_run_with_image_encoder(f"damsm:{tiny_damsm}") == str(tiny_damsm)
    assert damsm_run_with_image_encoder(specs["minilm"]) is None
    assert damsm_run_with_image_encoder(str(tmp_path / "missing")) is None
    assert damsm_run_with_image_encoder("") is None


def test_server_refuses_a_caption_the_precomputed_encoder_does_not_know_alone(flowers, specs, tmp_path):
    """A caption outside the dataset is a 422 for its own request, checked before batching, so the
    requests batched with it still get their images."""
    pytest.importorskip("fastapi")
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from t2igan.serve.app import Settings, create_app

    tr = build_training(family_config("dfgan", flowers, tmp_path / "run", specs["precomputed"]), resume=False)
    tr.fit()
    known = tr.dataset.data.captions[0][0]
    app = create_app({"pre": tmp_path / "run"}, Settings(max_wait_ms=200))
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(client.post, "/v1/generate", json={"captions": [c], "seed": 1})
                for c in (known, "a caption nobody wrote", known, known)]
        codes = [j.result().status_code for j in jobs]
        bad = jobs[1].result().json()
    app.state.close()
    assert codes == [200, 422, 200, 200]
    assert "not one of the captions with precomputed embeddings" in json.dumps(bad)
