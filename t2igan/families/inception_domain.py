"""The domain-tuned Inception-v3 (task ``inception_domain``): Inception-v3 fine-tuned on a dataset's
class labels (CUB / Oxford-102 class ids, emoji categories, SynthFlowers petal colour) to score
generated images with IS / FID / accuracy, as StackGAN's fine-tuned Inception does for CUB.
A metric, never a training loss; it trains with its own short loop
(:func:`t2igan.eval.domain_inception.train_domain_inception`), like the attribute evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least
from t2igan.core.distributed import world_from_env
from t2igan.eval.domain_inception import train_domain_inception
from t2igan.families.base import Family, check_switches


@dataclass
class InceptionDomainConfig:
    label: str = "petal_colour"  # an attribute of attributes.jsonl, or class_id (CUB / Oxford-102 class ids)
    input_size: int = at_least(96, 75)  # side the images are resized to (Inception-v3 accepts >= 75)
    init: str = "random"  # trunk start: a torchvision / FID Inception-v3 state dict file, fid-helper, or random


@dataclass
class InceptionDomainRunConfig:
    task: str = "inception_domain"
    data: DataConfig = field(default_factory=lambda: DataConfig(crop=False, flip=True))
    model: InceptionDomainConfig = field(default_factory=InceptionDomainConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=1e-3, beta1=0.9, beta2=0.999, weight_decay=1e-4))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/inception_domain_synth64", ema_decay=0.0,
                                                                   batch_size=32, max_steps=400))


def fit(cfg) -> Path:
    """Train and save the domain Inception; the trainer's fast paths and torchrun do not apply (refused)."""
    check_switches(cfg.train, frozenset(), "inception_domain (its own loop)", world_from_env().size)
    return train_domain_inception(cfg)


FAMILY = Family(
    name="inception_domain", title="domain-tuned Inception-v3", paper="(StackGAN's fine-tuned Inception for IS)",
    config=InceptionDomainRunConfig, fit=fit, text="none",
    needs="a dataset with class labels (attributes.jsonl or CUB / Oxford-102 class ids)",
)
