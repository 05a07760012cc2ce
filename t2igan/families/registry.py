"""The one list of families. The CLI (``t2igan train``), the config loader (``task:``), the
Pipeline (``model_index.json`` ``family`` -> generator class), evaluation and the server read
it and nothing else. A new family is a module with a :class:`~t2igan.families.base.Family`
record and one line here.
"""
from __future__ import annotations

from t2igan import T2IError
from t2igan.families import (attngan, damsm, dfgan, distill, evaluator, galip, gan_int_cls, hdgan, inception_domain,
                             lafite, mirrorgan, sje, srnet, stackgan, stackgan_tf, stackganpp)
from t2igan.families import clip as clip_family
from t2igan.families.base import Family

FAMILIES: list[Family] = [
    damsm.FAMILY,
    dfgan.FAMILY,
    gan_int_cls.FAMILY,
    stackgan.FAMILY,
    stackganpp.FAMILY,
    hdgan.FAMILY,
    stackgan_tf.FAMILY,
    attngan.FAMILY,
    mirrorgan.STREAM,
    mirrorgan.FAMILY,
    sje.FAMILY,
    distill.FAMILY,
    evaluator.FAMILY,
    srnet.FAMILY,
    inception_domain.FAMILY,
    clip_family.FAMILY,
    galip.FAMILY,
    lafite.FAMILY,
]


def tasks() -> dict[str, type]:
    """``task`` name -> run config class."""
    return {f.name: f.config for f in FAMILIES}


def get(task: str) -> Family:
    for f in FAMILIES:
        if f.name == task:
            return f
    raise T2IError(f"unknown task {task!r}; one of {', '.join(sorted(f.name for f in FAMILIES))}")


def generators() -> dict[str, tuple[Family, type]]:
    """``model_index.json`` family of a model folder with a generator -> (its family, generator class)."""
    return {k: (f, cls) for f in FAMILIES for k, cls in f.generators.items()}


def of_model(model_family: str) -> Family | None:
    """The family that writes model folders of this ``model_index.json`` family (a generator or another output)."""
    for f in FAMILIES:
        if model_family in f.generators or model_family in f.outputs:
            return f
    return None
