"""A training run from its config: the family's step (through the registry), the dataset and
the one trainer."""
from __future__ import annotations

from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.data.birds import load_any
from t2igan.data.dataset import TextImageDataset
from t2igan.core.distributed import world_from_env
from t2igan.families import registry
from t2igan.families.base import check_switches
from t2igan.families.gan_options import check_options
from t2igan.train.trainer import Trainer, check_run_folder, open_run_folder


def build_training(cfg, resume: bool, overwrite: bool = False) -> Trainer:
    """The Trainer of a run config whose family trains with the one trainer (all but the evaluator).

    ``resume`` continues the checkpoint in ``train.out_dir``; ``overwrite`` replaces an earlier
    run there (once the new one is complete); without either a folder holding earlier outputs
    is refused. Nothing is written before :meth:`Trainer.fit` except the repair of a save a
    crash interrupted (under the run's lock)."""
    fam = registry.get(cfg.task)
    if fam.build is None:
        raise T2IError(f"task {cfg.task!r} trains with its own loop (t2igan train CONFIG), not the GAN trainer")
    world = world_from_env()
    # refused switches before anything is read or written (the text-embedding and image caches included)
    check_switches(cfg.train, fam.switches, cfg.task, world.size)
    if getattr(cfg, "gan", None) is not None:  # the gan section's choices, as early
        check_options(cfg.gan, "official")
    # the run folder: locked by another process? a half-finished save? (before the vocabulary is read from it)
    lock = open_run_folder(cfg.train.out_dir, world)
    try:
        check_run_folder(cfg.train.out_dir, resume, overwrite)
        data = load_any(cfg.data.root, cfg.data.split)  # folder, StackGAN/AttnGAN birds/flowers or COCO layout
        if cfg.train.batch_size > len(data):  # a batch holds distinct images of the split
            raise T2IError(f"train.batch_size={cfg.train.batch_size} is larger than the {len(data)} images of "
                           f"{cfg.data.root} [{cfg.data.split}]")
        torch.manual_seed(cfg.train.seed)  # weight initialisation is part of the seeded run
        task, vocab = fam.build(cfg, data, resume)
        dataset = TextImageDataset(data, vocab, cfg.data.image_size, cfg.data.max_words, cfg.data.crop,
                                   progress=cfg.train.progress)
        captions = list(cfg.train.sample_captions) or default_sample_captions(cfg.data.root, data)
        return Trainer(cfg, task, dataset, captions, resume=resume, overwrite=overwrite, lock=lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def train(cfg, resume: bool = False, overwrite: bool = False) -> dict:
    """Run a config to its end: ``{"task", "output", "summary"}`` (summary: the trainer's, or None
    for a family with its own loop)."""
    fam = registry.get(cfg.task)
    if fam.fit is not None:
        if resume:
            raise T2IError(f"--resume: the {cfg.task} loop does not resume; train it again")
        out = Path(cfg.train.out_dir)
        if not overwrite and out.is_dir() and any(out.iterdir()):
            raise T2IError(f"{out} is not empty (an earlier {cfg.task} run?); pass --overwrite to replace it (the old "
                           "one stays until the new one is saved) or set train.out_dir to a new folder")
        return {"task": cfg.task, "output": fam.fit(cfg), "summary": None}
    trainer = build_training(cfg, resume, overwrite)
    return {"task": cfg.task, "output": trainer.out, "summary": trainer.fit()}


def default_sample_captions(root, train_data, k: int = 8) -> list[str]:
    try:
        d = load_any(root, "test")
    except T2IError:
        d = train_data
    step = max(1, len(d) // k)
    return [d.captions[i][0] for i in range(0, len(d), step)][:k]
