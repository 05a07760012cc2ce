"""Import official checkpoints: ``t2igan convert FAMILY SOURCE... --out DIR [--check]``.

    from t2igan.convert import convert
    report = convert("dfgan", ["state_epoch_600.pth", "text_encoder200.pth", "captions.pickle"], "models/dfgan_birds")

:data:`CONVERTERS` is the one table of converters (the CLI's subcommands come from it): family
-> (module under ``t2igan.convert`` defining ``CONVERTER``, one-line help). A new converter is a
module built on :mod:`t2igan.convert.base` and one line here. ``convert t7`` (Reed's char-CNN-RNN,
:mod:`t2igan.convert.reed_t7`) is separate: it writes a text encoder, not a pipeline.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Sequence

from t2igan import T2IError

CONVERTERS: dict[str, tuple[str, str]] = {
    "dfgan": ("dfgan", "DF-GAN: netG of state_epoch_*.pth + DAMSM text_encoder*.pth + captions.pickle"),
    "attngan": ("attngan", "AttnGAN: netG_epoch_*.pth / bird_AttnGAN2.pth + DAMSM text_encoder*.pth "
                           "[+ image_encoder*.pth] + captions.pickle"),
    "mirrorgan": ("mirrorgan", "MirrorGAN: netG_epoch_*.pth + DAMSM text_encoder*.pth [+ image_encoder*.pth] "
                               "+ captions.pickle"),
    "stackgan": ("stackgan", "StackGAN-Pytorch stage I/II: netG_epoch_*.pth + a char-CNN-RNN .t7 or embeddings pickle"),
    "stackganpp": ("stackganpp", "StackGAN-v2 / StackGAN++: netG_*.pth + a char-CNN-RNN .t7 or embeddings .pickle"),
    "hdgan": ("hdgan", "HDGAN: G_epoch*.pth [+ D_epoch*.pth] + a char-CNN-RNN .t7 or embeddings .pickle"),
    "stackgan-tf": ("stackgan_tf", "TensorFlow StackGAN stage I/II: MODEL.ckpt (V1, or a V2 .index) + a char-CNN-RNN .t7 or embeddings .pickle"),
    "stackgan-inception": ("stackgan_inception", "StackGAN's fine-tuned Inception-v3 (TF checkpoint, model.ckpt-N or "
                                                 "its V2 .index) -> a domain Inception folder for --inception-domain"),
}


def get(family: str):
    """The :class:`~t2igan.convert.base.Converter` of ``family``."""
    if family not in CONVERTERS:
        raise T2IError(f"no converter for {family!r}; one of: {', '.join(CONVERTERS)} (and t7)")
    return importlib.import_module(f"t2igan.convert.{CONVERTERS[family][0]}").CONVERTER


def convert(family: str, sources: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
            check: bool = False, overwrite: bool = False, echo: Callable[[str], None] | None = None, **options):
    """Convert official ``sources`` of ``family`` into the model folder ``out`` (nothing is written
    with ``check``, or when anything does not fit); returns the :class:`~t2igan.convert.base.Report`."""
    from t2igan.convert.base import run_converter

    return run_converter(get(family), sources, out, check=check, overwrite=overwrite, echo=echo, **options)
