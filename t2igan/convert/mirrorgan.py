"""MirrorGAN checkpoints (qiaott/MirrorGAN) -> a t2igan ``mirrorgan`` model folder.

Files: the generator ``netG_epoch_*.pth`` (G_NET with GLAM stages: ``h_net2.att.conv_sentence_vis``,
``.att.linear``, ``.conv``), the DAMSM ``text_encoder*.pth`` it was trained with (MirrorGAN's STEM is
AttnGAN's DAMSM), ``captions.pickle`` and optionally ``image_encoder*.pth``; see
:mod:`t2igan.convert.attngan` for the shared reading. STREAM (the captioner) is not converted: the
MirrorGAN authors released no weights, its official CNN is an ImageNet ResNet-152 (t2igan's STREAM is
a small CNN), and sampling does not use it.
"""
from __future__ import annotations

from t2igan.convert.attngan import build_tree
from t2igan.convert.base import Converted, Converter, Source
from t2igan.models import mirrorgan

USAGE = "netG_epoch_*.pth, text_encoder*.pth, captions.pickle[, image_encoder*.pth]"


def build(sources: list[Source], options: dict) -> Converted:
    return build_tree(sources, options, "mirrorgan", "MirrorGAN", mirrorgan, USAGE)


CONVERTER = Converter(name="mirrorgan", title="MirrorGAN", usage=USAGE, build=build)
