"""Range checks of numeric config values (t2igan/core/config.py ``check_ranges``).

Every int/float field of every family's run config declares its allowed range where it is
declared; every load (YAML, overrides, task defaults) refuses a value outside it, NaN or infinity
with one line naming the key, the value and the range, before anything is written.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from t2igan.cli import main
from t2igan.config import ConfigError, load_config, to_dict
from t2igan.core.config import Range, field_range, from_dict, ranged
from t2igan.families import registry

TASKS = [f.name for f in registry.FAMILIES]


def _numeric(tp) -> type | None:
    """int or float for an int/float (or ``X | None``) annotation, else None (bool is not numeric)."""
    for t in (tp, *typing.get_args(tp)):
        if t in (int, float):
            return t
    return None


def numeric_fields(cls: type, prefix: str = ""):
    """(dotted key, numeric type, Range or None) for every int/float field of ``cls`` and its sections."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from numeric_fields(tp, prefix + f.name + ".")
        elif _numeric(tp) is not None:
            yield prefix + f.name, _numeric(tp), field_range(f)


def _is_list(cls: type, key: str) -> bool:
    """Whether the dotted field ``key`` of config class ``cls`` is a list (of numbers)."""
    *sections, name = key.split(".")
    for part in sections:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_origin(typing.get_type_hints(cls)[name]) in (list, tuple)


def _reject(task: str, key: str, value) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value!r}"], task=task)
    return str(e.value)


# ----------------------------------------------------------------------------- every field has a range
def test_every_numeric_field_of_every_family_declares_a_range():
    missing = sorted({f"{f.config.__name__}: {key}" for f in registry.FAMILIES
                      for key, _, r in numeric_fields(f.config) if r is None})
    assert not missing, "numeric config fields without a declared range:\n" + "\n".join(missing)


def test_the_walk_sees_every_section():
    # the walk above must reach nested sections (else it would pass on nothing)
    keys = {key for f in registry.FAMILIES for key, _, _ in numeric_fields(f.config)}
    assert {"train.batch_size", "optim.lr_g", "data.image_size", "image.width", "model.ngf", "loss.gamma2",
            "student.doc_length", "teacher.batch_size", "text.dropout", "model.stage"} <= keys
    assert len(keys) > 60


@pytest.mark.parametrize("task", TASKS)
def test_task_defaults_are_in_range(task):
    # the run config's own defaults (default_factory sections such as TrainConfig(ema_decay=0.0))
    cfg = load_config(None, task=task)
    assert to_dict(cfg) == to_dict(registry.tasks()[task]())


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_still_loads(path):
    cfg = load_config(path)
    assert cfg.task in registry.tasks()


# ----------------------------------------------------------------------------- each range, both ends
def _outside(kind: type, r: Range) -> list:
    out = []
    if r.lo is not None:
        out.append(kind(r.lo) if r.lo_open else kind(r.lo) - 1)
    if r.hi is not None:
        out.append(kind(r.hi) if r.hi_open else kind(r.hi) + 1)
    return out


@pytest.mark.parametrize("task", TASKS)
def test_every_range_refuses_just_outside_and_keeps_its_closed_ends(task):
    problems = []
    for key, kind, r in numeric_fields(registry.tasks()[task]):
        if r is None:
            continue
        assert r.lo is not None or r.hi is not None, f"{key}: a range with no bound"
        listed = _is_list(registry.tasks()[task], key)  # a list of numbers: the range holds for each element
        for bad in _outside(kind, r):
            try:
                load_config(None, [f"{key}={[bad] if listed else bad!r}"], task=task)
                problems.append(f"{key}={bad!r} accepted")
            except ConfigError as e:
                msg = str(e)
                said = f"element 0 = {bad!r}" if listed else f"{bad!r}"
                if not (msg.startswith(f"config key '{key}': {said} is out of range (must be ") and "\n" not in msg):
                    problems.append(f"{key}={bad!r}: {msg}")
        for end, is_open in ((r.lo, r.lo_open), (r.hi, r.hi_open)):
            if end is not None and not is_open:
                got = load_config(None, [f"{key}={[kind(end)] if listed else kind(end)!r}"], task=task)
                section, _, name = key.rpartition(".")
                node = got
                for part in filter(None, section.split(".")):
                    node = getattr(node, part)
                if (getattr(node, name)[0] if listed else getattr(node, name)) != end:
                    problems.append(f"{key}={kind(end)!r} not kept")
        if kind is float:
            for bad in (".nan", ".inf", "-.inf"):
                try:
                    load_config(None, [f"{key}={bad}"], task=task)
                    problems.append(f"{key}={bad} accepted")
                except ConfigError as e:
                    if f"config key '{key}': " not in str(e) or "finite" not in str(e):
                        problems.append(f"{key}={bad}: {e}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- the issue's examples
@pytest.mark.parametrize("override, message", [
    ("train.batch_size=-4", "config key 'train.batch_size': -4 is out of range (must be >= 1)"),
    ("train.batch_size=0", "config key 'train.batch_size': 0 is out of range (must be >= 1)"),
    ("optim.lr_g=.nan", "config key 'optim.lr_g': nan is out of range (must be a finite number > 0)"),
    ("optim.lr_d=-1e-4", "config key 'optim.lr_d': -0.0001 is out of range (must be a finite number > 0)"),
    ("optim.lr_g=0", "config key 'optim.lr_g': 0.0 is out of range (must be a finite number > 0)"),
    ("optim.lr_g=1e400", "config key 'optim.lr_g': inf is out of range (must be a finite number > 0)"),
    ("data.image_size=0", "config key 'data.image_size': 0 is out of range (must be >= 8)"),
    ("data.max_words=0", "config key 'data.max_words': 0 is out of range (must be >= 1)"),
    ("data.workers=-1", "config key 'data.workers': -1 is out of range (must be >= 0)"),
    ("model.ngf=0", "config key 'model.ngf': 0 is out of range (must be >= 1)"),
    ("train.max_steps=-5", "config key 'train.max_steps': -5 is out of range (must be >= 1)"),
    ("train.ema_decay=2", "config key 'train.ema_decay': 2.0 is out of range (must be a finite number in [0, 1))"),
    ("train.ema_decay=1", "config key 'train.ema_decay': 1.0 is out of range (must be a finite number in [0, 1))"),
    ("train.threads=-3", "config key 'train.threads': -3 is out of range (must be >= 0)"),
    ("train.ckpt_every=-1", "config key 'train.ckpt_every': -1 is out of range (must be >= 0)"),
    ("train.log_every=0", "config key 'train.log_every': 0 is out of range (must be >= 1)"),
    ("train.seed=-1", "config key 'train.seed': -1 is out of range (must be in [0, 4294967295])"),
    ("optim.gp_power=0", "config key 'optim.gp_power': 0.0 is out of range (must be a finite number > 0)"),
    ("model.ch_size=1", "config key 'model.ch_size': 1 is out of range (must be 3)"),
])
def test_issue_examples_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("configs/dfgan_synth64.yaml", [override])
    assert str(e.value) == message


def test_stage_is_one_or_two_and_dropout_below_one():
    with pytest.raises(ConfigError, match=r"^config key 'model.stage': 3 is out of range \(must be 1 or 2\)$"):
        load_config("configs/stackgan_synth64.yaml", ["model.stage=3"])
    with pytest.raises(ConfigError, match=r"'text.dropout': 1.0 is out of range \(must be a finite number in \[0, 1\)\)"):
        load_config("configs/damsm_synth64.yaml", ["text.dropout=1"])


def test_yaml_values_are_checked_too(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("task: dfgan\ntrain:\n  batch_size: -4\n")
    with pytest.raises(ConfigError, match=r"^config key 'train.batch_size': -4 is out of range \(must be >= 1\)$"):
        load_config(p)
    p.write_text("task: damsm\noptim:\n  lr_g: .nan\n")
    with pytest.raises(ConfigError, match="'optim.lr_g': nan is out of range"):
        load_config(p)
    p.write_text("task: stackganpp\nmodel:\n  branch_num: 4\n")
    with pytest.raises(ConfigError, match=r"'model.branch_num': 4 is out of range \(must be in \[1, 3\]\)"):
        load_config(p)


def test_a_partial_section_checks_the_kept_task_defaults_too():
    # from_dict checks the whole result, the values it keeps from the base included
    from t2igan.families.dfgan import DFGANRunConfig

    bad_base = DFGANRunConfig()
    bad_base.train.max_steps = -5
    with pytest.raises(ConfigError, match="'train.max_steps': -5 is out of range"):
        from_dict(DFGANRunConfig, {"train": {"batch_size": 4}}, base=bad_base)


# ----------------------------------------------------------------------------- the machinery
@dataclass
class Section:
    n: int = field(default=1, metadata={"range": (1, None)})  # a plain (lo, hi) pair
    x: float = 1.0  # no range: still finite


@dataclass
class Run:
    s: Section = field(default_factory=Section)
    p: float = ranged(0.5, 0, 1, hi_open=True)


def test_range_declarations_and_float_finiteness():
    with pytest.raises(ConfigError, match=r"^config key 's.n': 0 is out of range \(must be >= 1\)$"):
        from_dict(Run, {"s": {"n": 0}})
    with pytest.raises(ConfigError, match=r"^config key 's.x': nan is not a finite number$"):
        from_dict(Run, {"s": {"x": math.nan}})
    with pytest.raises(ConfigError, match=r"^config key 'p': 1.0 is out of range"):
        from_dict(Run, {"p": 1})
    assert from_dict(Run, {"s": {"n": 3}, "p": 0}).p == 0.0
    with pytest.raises(ValueError, match="out of its own range"):
        ranged(0, 1)
    assert Range(0, lo_open=True).describe(integer=True) == "must be >= 1"
    assert Range(0, lo_open=True).describe() == "must be a finite number > 0"


# ----------------------------------------------------------------------------- nothing written
@pytest.mark.parametrize("override, key", [
    ("train.batch_size=0", "train.batch_size"),
    ("data.workers=-1", "data.workers"),
    ("model.ngf=0", "model.ngf"),
    ("data.max_words=0", "data.max_words"),
    ("optim.lr_g=-0.0004", "optim.lr_g"),
])
def test_cli_refuses_before_writing_anything(override, key, tiny_data, tiny_damsm, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "configs/dfgan_synth64.yaml", f"data.root={tiny_data}", "data.image_size=32",
               f"text_encoder={tiny_damsm}", f"train.out_dir={out}", "train.max_steps=1", "train.progress=false",
               "train.device=cpu", "model.ndf=4", "model.nz=8", "train.batch_size=8", override])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith(f"error: config key '{key}': ") and "is out of range" in err and "\n" not in err
    assert not out.exists()


def test_batch_larger_than_the_dataset_is_one_line_before_anything_is_written(tiny_data, tmp_path, capsys):
    """The one range that needs the data: a batch holds distinct images of the split."""
    from conftest import tiny_overrides

    from t2igan.cli import main

    out = tmp_path / "run"
    over = tiny_overrides(tiny_data, out, **{"model.ngf": 4, "model.ndf": 4, "text_encoder": str(tmp_path / "unused"),
                                             "train.batch_size": 5000})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: dfgan\n")
    assert main(["train", str(cfg), *over]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.batch_size=5000 is larger than the" in err[0] and "images of" in err[0]
    assert not out.exists()
