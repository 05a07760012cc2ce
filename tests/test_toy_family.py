"""A new family needs no edit outside its own file and the registry.

The test writes a toy family as a real module in a temporary folder (its run config, generator,
discriminator, a real adversarial step on the shared text side, its export and its ``Family``
record), imports it, and adds its record to ``registry.FAMILIES`` — the one registry line. The
config loader, ``t2igan train``, the Pipeline, ``t2igan sample`` and the server then handle
``task: toy`` / ``family: toy``; without the registry line every one of them refuses it. Had any of
those layers a list of families of its own, these assertions would fail.
"""
from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.config import ConfigError, load_config
from t2igan.families import registry
from t2igan.pipeline import Pipeline

MODULE = "t2igan_test_toy_family"  # not under t2igan/: the package does not know this file

TOY_SOURCE = '''
"""Toy GAN: one linear layer per network, conditioned on the frozen text encoder's sentence vector."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2igan.core import weights
from t2igan.core.config import DataConfig, OptimConfig, TrainConfig
from t2igan.core.folder import write_model_index
from t2igan.families.base import Family, StepBase, adam, generator_kind, text_side
from t2igan.text.spec import save_encoder_dir


@dataclass
class ToyModelConfig:
    nz: int = 8  # noise size


@dataclass
class ToyRunConfig:
    task: str = "toy"
    data: DataConfig = field(default_factory=DataConfig)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    text_encoder: str = "runs/damsm_synth64"
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/toy"))


class ToyGenerator(nn.Module):
    def __init__(self, nz: int, cond_dim: int, imsize: int):
        super().__init__()
        self.nz, self.imsize = nz, imsize
        self.config = dict(nz=nz, cond_dim=cond_dim, imsize=imsize)
        self.fc = nn.Linear(nz + cond_dim, 3 * imsize * imsize)

    def forward(self, z, sent):
        return torch.tanh(self.fc(torch.cat([z, sent], 1))).view(-1, 3, self.imsize, self.imsize)


class ToyDiscriminator(nn.Module):
    def __init__(self, cond_dim: int, imsize: int):
        super().__init__()
        self.fc = nn.Linear(3 * imsize * imsize + cond_dim, 1)

    def forward(self, x, sent):
        return self.fc(torch.cat([x.flatten(1), sent], 1)).squeeze(1)


class ToyStep(StepBase):
    ema_of = "netG"

    def __init__(self, cfg, text, vocab):
        super().__init__()
        self.cfg, self.text, self.vocab = cfg, text, vocab
        self.frozen = [text.encoder]
        size, cond = cfg.data.image_size, text.sentence_dim
        self.netG = ToyGenerator(cfg.model.nz, cond, size)
        self.netD = ToyDiscriminator(cond, size)
        self.modules = {"netG": self.netG, "netD": self.netD}
        o = cfg.optim
        self.optimizers = {"G": adam(self.netG.parameters(), o.lr_g, o, cfg.train.adam),
                           "D": adam(self.netD.parameters(), o.lr_d, o, cfg.train.adam)}

    def train_step(self, batch, step):
        imgs = batch.images[-1]
        _, sent, _ = self.text.batch(batch)
        z = torch.randn(imgs.size(0), self.cfg.model.nz, device=imgs.device)
        with self.autocast():
            fake = self.netG(z, sent)
            d_loss = F.softplus(-self.netD(imgs, sent)).mean() + F.softplus(self.netD(fake.detach(), sent)).mean()
        self.optimize("D", d_loss.float())
        with self.autocast():
            g_loss = F.softplus(-self.netD(fake, sent)).mean()
        self.optimize("G", g_loss.float())
        self.precision.update()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    @torch.no_grad()
    def sample(self, captions, seed, n, ema):
        g = ema if ema is not None else self.netG
        _, sent, _ = self.text.captions(captions)
        sent = sent.to(next(g.parameters()).device).repeat_interleave(n, 0)
        z = torch.randn(sent.size(0), g.nz, generator=torch.Generator().manual_seed(seed)).to(sent.device)
        return g(z, sent)

    def export(self, directory: Path, ema) -> None:
        g = ema if ema is not None else self.netG
        save_encoder_dir(directory, self.text.encoder)
        weights.save_component(g, Path(directory) / "generator", generator_kind("toy"), g.config)
        write_model_index(directory, family="toy", image_size=self.cfg.data.image_size,
                          generator_weights="ema" if ema is not None else "raw")


def build(cfg, data, resume: bool):
    text, vocab = text_side(cfg, data, "toy")
    return ToyStep(cfg, text, vocab), vocab


FAMILY = Family(name="toy", title="Toy GAN", paper="tests/test_toy_family.py", config=ToyRunConfig, build=build, step=ToyStep,
                generators={"toy": ToyGenerator}, needs="a text encoder")
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy family module, imported from a real file in tmp_path (not registered)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{MODULE}.py").write_text(textwrap.dedent(TOY_SOURCE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    mod = importlib.import_module(MODULE)
    assert Path(mod.__file__).parent == src
    yield mod
    sys.modules.pop(MODULE, None)


def register(monkeypatch, toy) -> None:
    """The one registry line of a new family."""
    monkeypatch.setattr(registry, "FAMILIES", [*registry.FAMILIES, toy.FAMILY])


def toy_yaml(path: Path, data: Path, damsm: Path, out: Path) -> Path:
    cfg = {
        "task": "toy",
        "data": {"root": str(data), "image_size": 32},
        "model": {"nz": 4},
        "text_encoder": str(damsm),
        "train": {"out_dir": str(out), "batch_size": 8, "max_steps": 2, "progress": False, "log_every": 1,
                  "sample_every": 0, "ckpt_every": 0, "threads": 0},
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_new_family_runs_through_every_layer(toy, tiny_data, tiny_damsm, tmp_path, monkeypatch, capsys):
    assert "toy" not in registry.tasks() and "toy" not in registry.generators()  # the package does not know it
    register(monkeypatch, toy)

    # 1. the config loader: defaults, overrides, strictness
    cfg = load_config(None, ["model.nz=5", "data.image_size=32"], task="toy")
    assert type(cfg) is toy.ToyRunConfig and cfg.task == "toy"
    assert cfg.model.nz == 5 and cfg.data.image_size == 32 and cfg.train.out_dir == "runs/toy"
    with pytest.raises(ConfigError, match=r"model\.bogus"):
        load_config(None, ["model.bogus=1"], task="toy")
    with pytest.raises(ConfigError, match=r"model\.nz"):
        load_config(None, ["model.nz=many"], task="toy")

    # 2. `t2igan train CONFIG.yaml`: the one trainer runs the toy step and exports its pipeline
    run = tmp_path / "run"
    conf = toy_yaml(tmp_path / "toy.yaml", tiny_data, tiny_damsm, run)
    assert main(["train", str(conf)]) == 0, capsys.readouterr().err
    assert "trained toy to step 2" in capsys.readouterr().out
    index = json.loads((run / "pipeline" / "model_index.json").read_text())
    assert index["family"] == "toy" and index["image_size"] == 32 and index["generator_weights"] == "ema"
    gen_cfg = json.loads((run / "pipeline" / "generator" / "config.json").read_text())
    assert gen_cfg["kind"] == "toy_generator" and gen_cfg["nz"] == 4 and gen_cfg["imsize"] == 32
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == "toy"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["task"] == "toy" and summary["step"] == 2
    assert (run / "samples" / "step_0000002.png").is_file()  # the trainer's grid, from ToyStep.sample

    # 3. the Pipeline builds the toy generator class from the registry; `t2igan sample`
    pipe = Pipeline.from_pretrained(run)
    assert type(pipe.generator) is toy.ToyGenerator and pipe.family == "toy"
    assert pipe.title == "Toy GAN" and pipe.image_size == 32 and pipe.stage_sizes == [32]
    imgs = pipe.generate(["a red flower", "a flower with blue petals"], seed=3, n=2)
    assert imgs.shape == (4, 3, 32, 32) and imgs.min() >= 0 and imgs.max() <= 1
    assert torch.equal(imgs, pipe.generate(["a red flower", "a flower with blue petals"], seed=3, n=2))
    assert not torch.equal(imgs[0], imgs[1])  # other noise, other image
    out = tmp_path / "out.png"
    assert main(["sample", str(run), "a red flower", "-o", str(out)]) == 0, capsys.readouterr().err
    assert Image.open(out).size == (32, 32)

    # 4. the server lists and serves it; its notes name the family by its title
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from t2igan.serve.app import Settings, create_app

    app = create_app({"toyrun": str(run)}, Settings())
    try:
        client = TestClient(app)
        models = client.get("/v1/models").json()
        assert models["default"] == "toyrun"
        (info,) = models["models"]
        assert info["name"] == "toyrun" and info["family"] == "toy" and info["image_size"] == 32
        assert info["stage_sizes"] == [32] and info["stages"] is False and info["attention"] is False
        r = client.post("/v1/generate", json={"captions": ["a red flower"], "n": 2, "return_stages": True})
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["family"] == "toy" and len(j["images"]) == 2
        assert any(n.startswith("Toy GAN draws one image scale") for n in j["notes"]), j["notes"]
    finally:
        app.state.close()

    # 5. without the registry line, the same run folder and config are refused
    monkeypatch.undo()
    assert "toy" not in registry.tasks()
    with pytest.raises(T2IError, match="has family 'toy', which has no generator"):
        Pipeline.from_pretrained(run)
    with pytest.raises(ConfigError, match="'toy'"):
        load_config(conf)


def test_without_the_registry_line_the_task_is_unknown(toy, tiny_data, tmp_path, capsys):
    assert toy.FAMILY.name == "toy" and toy.FAMILY not in registry.FAMILIES
    with pytest.raises(ConfigError, match="unknown task 'toy'"):
        load_config(None, [], task="toy")
    with pytest.raises(T2IError, match="unknown task 'toy'"):
        registry.get("toy")
    conf = toy_yaml(tmp_path / "toy.yaml", tiny_data, tmp_path / "no_damsm", tmp_path / "run")
    assert main(["train", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "'task' must be one of" in err and "'toy'" in err
    assert not (tmp_path / "run").exists()
