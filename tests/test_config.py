import pytest

from t2igan.cli import main
from t2igan.config import ConfigError, load_config, save_config, to_dict
from t2igan.families.dfgan import DFGANRunConfig


def test_round_trip(tmp_path):
    cfg = load_config("configs/dfgan_synth64.yaml", ["train.batch_size=7", "optim.lr_g=3e-4", "train.sample_captions=[a red flower]"])
    assert isinstance(cfg, DFGANRunConfig)
    assert cfg.train.batch_size == 7 and cfg.optim.lr_g == 3e-4 and cfg.train.sample_captions == ["a red flower"]
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_defaults_of_task_and_int_to_float():
    cfg = load_config(None, ["optim.lr_d=1"], task="dfgan")
    assert cfg.optim.lr_d == 1.0 and isinstance(cfg.optim.lr_d, float)


@pytest.mark.parametrize("override, words", [
    ("train.batch_sise=3", "unknown config key 'train.batch_sise'"),
    ("model.foo=1", "unknown config key 'model.foo'"),
    ("train.batch_size=abc", "'train.batch_size': expected int"),
    ("train.batch_size=2.5", "'train.batch_size': expected int"),
    ("train.progress=maybe", "'train.progress': expected bool"),
    ("data=3", "section 'data'"),
    ("nokey", "not of the form"),
])
def test_rejects_bad_overrides(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("configs/dfgan_synth64.yaml", [override])
    assert words in str(e.value)


def test_rejects_bad_files(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("task: dfgan\ntrain:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.lr'"):
        load_config(p)
    p.write_text("train: {}\n")
    with pytest.raises(ConfigError, match="'task' must be one of"):
        load_config(p)
    p.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_unknown_key_is_one_line_error(capsys):
    assert main(["train", "configs/dfgan_synth64.yaml", "train.nope=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'train.nope'") and "\n" not in err


def test_every_shipped_config_loads():
    from pathlib import Path

    for p in sorted(Path("configs").glob("*.yaml")):
        load_config(p)


def test_partial_section_keeps_task_defaults():
    # the evaluator's data section defaults to crop=False and its optimiser to beta1=0.9;
    # overriding one key of a section must not reset the others to the plain class defaults
    cfg = load_config(None, ["data.root=x", "optim.lr_g=1e-3", "train.max_steps=5"], task="evaluator")
    assert cfg.data.root == "x" and cfg.data.crop is False
    assert cfg.optim.lr_g == 1e-3 and cfg.optim.beta1 == 0.9 and cfg.optim.weight_decay == 1e-4
    assert cfg.train.max_steps == 5 and cfg.train.out_dir == "runs/evaluator_synth64" and cfg.train.ema_decay == 0.0
    d = load_config(None, ["train.max_steps=3"], task="damsm")
    assert d.train.batch_size == 48 and d.optim.grad_clip == 0.25
