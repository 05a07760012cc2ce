"""The attribute evaluator (task ``evaluator``): a CNN trained on real images of a dataset with
attribute labels (SynthFlowers) to score generated images — attribute accuracy, FID-SF/KID-SF
in its feature space, nearest-neighbour retrieval. It is a metric, never a training loss, and
trains with its own short loop (:func:`t2igan.eval.evaluator.train_evaluator`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, positive
from t2igan.core.distributed import world_from_env
from t2igan.eval.evaluator import train_evaluator
from t2igan.families.base import Family, check_switches


@dataclass
class EvaluatorConfig:
    width: int = positive(48)  # base channels of the attribute evaluator CNN
    feature_dim: int = positive(256)  # penultimate feature size (FID-SF/KID-SF space)


@dataclass
class EvaluatorRunConfig:
    task: str = "evaluator"
    data: DataConfig = field(default_factory=lambda: DataConfig(crop=False, flip=True))
    model: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=2e-3, beta1=0.9, beta2=0.999, weight_decay=1e-4))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/evaluator_synth64", ema_decay=0.0, batch_size=64, max_steps=3000))


def fit(cfg) -> Path:
    """Train and save the evaluator; the trainer's fast paths and torchrun do not apply to its loop (refused)."""
    check_switches(cfg.train, frozenset(), "evaluator (its own loop)", world_from_env().size)
    return train_evaluator(cfg)


FAMILY = Family(
    name="evaluator", title="attribute evaluator", paper="(t2igan; SynthFlowers / emoji metric)",
    config=EvaluatorRunConfig, fit=fit, text="none",
    needs="a dataset with attribute labels (SynthFlowers) or emoji", preset="configs/evaluator_synth64.yaml",
)
