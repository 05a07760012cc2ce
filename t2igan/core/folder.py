"""A t2igan model folder: ``model_index.json`` beside one sub-folder per component
(the Hugging Face pipeline convention)::

    model_index.json      {"format": "t2igan-pipeline", "version": 1, "family": "dfgan", ...}
    vocab.json            (DAMSM text encoders)
    text_encoder/         config.json + model.safetensors, or a reference to a frozen encoder
    generator/            config.json + model.safetensors
    image_encoder/        (DAMSM / SJE runs)

A *run* folder holds its exported model folder as ``RUN/pipeline``; every command that takes a
model accepts either.
"""
from __future__ import annotations

import os
from pathlib import Path

from t2igan import T2IError
from t2igan.core.weights import read_json, write_json

MODEL_INDEX = "model_index.json"


def write_model_index(directory: str | os.PathLike, family: str, **info) -> None:
    write_json(Path(directory) / MODEL_INDEX, {"format": "t2igan-pipeline", "version": 1, "family": family, **info})


def resolve_dir(path: str | os.PathLike) -> Path:
    """Accept a model folder or a run folder holding ``pipeline/``."""
    p = Path(path)
    if (p / MODEL_INDEX).is_file():
        return p
    if (p / "pipeline" / MODEL_INDEX).is_file():
        return p / "pipeline"
    if not p.exists():
        raise T2IError(f"model folder not found: {p}")
    raise T2IError(f"{p} is not a t2igan pipeline or run folder (no {MODEL_INDEX} in it or in {p / 'pipeline'})")


def read_model_index(path: str | os.PathLike) -> tuple[Path, dict]:
    """(model folder, its model_index.json) of a model or run folder; a foreign index is an error."""
    d = resolve_dir(path)
    info = read_json(d / MODEL_INDEX)
    if info.get("format") != "t2igan-pipeline":
        raise T2IError(f"{d / MODEL_INDEX}: not a t2igan pipeline index")
    return d, info
