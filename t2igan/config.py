"""Run configs: load a YAML file (or a task's defaults), apply dotted overrides, check it.

A run config is the dataclass its family declares (``task: dfgan`` -> the ``dfgan`` family's
run config, found through :mod:`t2igan.families.registry`), whose sections are dataclasses
too; the machinery and the shared sections are in :mod:`t2igan.core.config`. Loading is
strict: an unknown key, a missing ``task`` or a value of the wrong type is a
:class:`ConfigError` naming the key.

    cfg = load_config("configs/dfgan_synth64.yaml", ["train.batch_size=32"])
    save_config(cfg, "runs/x/config.yaml")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from t2igan.core.config import ConfigError, apply_overrides, from_dict, save_config, to_dict  # noqa: F401  (the API)
from t2igan.families import registry


def config_from_dict(data: Any, source: str = "config") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    task = data.get("task")
    tasks = registry.tasks()
    if task not in tasks:
        raise ConfigError(f"{source}: 'task' must be one of {sorted(tasks)}, got {task!r}")
    cfg = from_dict(tasks[task], data)
    check_accumulate(cfg)
    return cfg


def check_accumulate(cfg: Any) -> None:
    """``train.accumulate`` splits each step's batch into that many equal micro-batches: it must divide
    ``train.batch_size`` (one line naming the key, as the range checks)."""
    tc = getattr(cfg, "train", None)
    k = getattr(tc, "accumulate", 1)
    if tc is not None and tc.batch_size % k:
        raise ConfigError(f"config key 'train.accumulate': {k} does not divide train.batch_size={tc.batch_size} "
                          f"(each step splits its batch into {k} equal micro-batches)")


def load_config(path: str | os.PathLike | None, overrides: list[str] = (), task: str | None = None) -> Any:
    """Load a YAML run config (or the defaults of ``task`` when ``path`` is None) and apply overrides."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        data = data or {}
        source = str(p)
    else:
        if task not in registry.tasks():
            raise ConfigError(f"unknown task {task!r}; one of {sorted(registry.tasks())}")
        data = {"task": task}
        source = f"defaults of task {task}"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    data = apply_overrides(data, list(overrides))
    return config_from_dict(data, source)
