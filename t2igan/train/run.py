"""A training run from its config: the family's step (through the registry), the dataset and
the one trainer."""
from __future__ import annotations

import torch

from t2igan import T2IError
from t2igan.data.birds import load_any
from t2igan.data.dataset import TextImageDataset
from t2igan.core.distributed import world_from_env
from t2igan.families import registry
from t2igan.families.base import check_switches
from t2igan.train.trainer import Trainer


def build_training(cfg, resume: bool) -> Trainer:
    """The Trainer of a run config whose family trains with the one trainer (all but the evaluator)."""
    fam = registry.get(cfg.task)
    if fam.build is None:
        raise T2IError(f"task {cfg.task!r} trains with its own loop (t2igan train CONFIG), not the GAN trainer")
    # refused switches before anything is read or written (the text-embedding and image caches included)
    check_switches(cfg.train, fam.switches, cfg.task, world_from_env().size)
    data = load_any(cfg.data.root, cfg.data.split)  # folder, StackGAN/AttnGAN birds/flowers or COCO layout
    torch.manual_seed(cfg.train.seed)  # weight initialisation is part of the seeded run
    task, vocab = fam.build(cfg, data, resume)
    dataset = TextImageDataset(data, vocab, cfg.data.image_size, cfg.data.max_words, cfg.data.crop,
                               progress=cfg.train.progress)
    captions = list(cfg.train.sample_captions) or default_sample_captions(cfg.data.root, data)
    return Trainer(cfg, task, dataset, captions, resume=resume)


def train(cfg, resume: bool = False) -> dict:
    """Run a config to its end: ``{"task", "output", "summary"}`` (summary: the trainer's, or None
    for a family with its own loop)."""
    fam = registry.get(cfg.task)
    if fam.fit is not None:
        if resume:
            raise T2IError(f"--resume: the {cfg.task} loop does not resume; train it again")
        return {"task": cfg.task, "output": fam.fit(cfg), "summary": None}
    trainer = build_training(cfg, resume)
    return {"task": cfg.task, "output": trainer.out, "summary": trainer.fit()}


def default_sample_captions(root, train_data, k: int = 8) -> list[str]:
    try:
        d = load_any(root, "test")
    except T2IError:
        d = train_data
    step = max(1, len(d) // k)
    return [d.captions[i][0] for i in range(0, len(d), step)][:k]
