"""DF-GAN checkpoints (tobran/DF-GAN) -> a t2igan ``dfgan`` model folder.

Files (recognised by content, any order)::

    state_epoch_*.pth      {'model': {'netG', 'netD', 'netC'}, 'optimizers': ..., 'epoch': N}
                           (code/lib/utils.py save_models; a bare netG state dict is taken too)
    text_encoder*.pth      the DAMSM RNN_ENCODER it was trained with (TEXT.DAMSM_NAME)
    captions.pickle        captions_DAMSM.pickle / captions.pickle: [train, test, ixtoword, wordtoix]
    image_encoder*.pth     optional: the DAMSM CNN_ENCODER (R-precision)

netD, netC, the optimizer states and the epoch are reported as ignored. The generator's key table
is the identity (``models/dfgan.py`` keeps the official names); ``module.`` prefixes (multi-GPU
training) are stripped. Configuration from the shapes: ``fc.weight`` ``[128 ngf, nz]``, the number of
``GBlocks`` (``imsize = 4 * 2**n``), ``GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight``
``[8 ngf, nz + cond_dim]``, ``to_rgb.1.weight`` ``[ch_size, ngf, 3, 3]``.

Official sampling (``code/src/sample.py``) draws ``truncation * truncnorm.rvs(-2, 2)`` with
``truncation: True, trunc_rate: 0.88``; the folder records ``truncation_mode: truncnorm`` so that
``--truncation 0.88`` draws exactly that (:meth:`t2igan.pipeline.Pipeline.noise`).
"""
from __future__ import annotations

from t2igan import T2IError
from t2igan.convert.attngan import DAMSM_OPTIONS, damsm_image, damsm_text, is_captions, is_image_encoder, is_text_encoder
from t2igan.convert.base import (Converted, Converter, KeyTable, Report, Source, assign, count_prefixed, shape_of,
                                 state_keys, take_options)
from t2igan.models.dfgan import NetG

WHAT = "a DF-GAN generator (NetG: fc, GBlocks.*, to_rgb)"
USAGE = "state_epoch_*.pth, text_encoder*.pth, captions.pickle[, image_encoder*.pth]"


def is_generator(s: Source) -> bool:
    k = state_keys(s, prefer=("netG",))
    return "fc.weight" in k and "GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight" in k


def generator_config(state, name: str) -> dict:
    rows, nz = shape_of(state, "fc.weight", name, WHAT, ndim=2)
    n = count_prefixed(state, r"GBlocks\.(\d+)\.")
    cond_in = shape_of(state, "GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight", name, WHAT, ndim=2)[1]
    ch = shape_of(state, "to_rgb.1.weight", name, WHAT, ndim=4)[0]
    if rows % 128 or n < 1 or cond_in <= nz:
        raise T2IError(f"{name}: not {WHAT}: fc.weight {rows}x{nz}, {n} GBlocks, fusion input {cond_in}")
    return dict(ngf=rows // 128, nz=nz, cond_dim=cond_in - nz, imsize=4 * 2 ** n, ch_size=ch)


def build(sources: list[Source], options: dict) -> Converted:
    opts = take_options(options, DAMSM_OPTIONS, "DF-GAN")
    roles = assign(sources, {"generator": is_generator, "text_encoder": is_text_encoder,
                             "image_encoder": is_image_encoder, "captions": is_captions},
                   required=("generator", "text_encoder", "captions"), title="DF-GAN", usage=USAGE)
    rep = Report("dfgan", "DF-GAN")
    src = roles["generator"]
    state = rep.unwrap(src, prefer=("netG",))
    text = damsm_text(roles["text_encoder"], roles["captions"], opts, rep)
    cfg = generator_config(state, src.name)
    if cfg["cond_dim"] != text.nef:
        raise T2IError(f"{src.name}: the generator reads {cfg['cond_dim']}-d sentences but "
                       f"{roles['text_encoder'].name} gives {text.nef}-d ones")
    g = NetG(**cfg)
    KeyTable().apply(state, g, src.name, WHAT, rep)
    epoch = src.obj.get("epoch") if isinstance(src.obj, dict) else None
    size = f"{cfg['imsize']}x{cfg['imsize']}" + (f", epoch {epoch}" if epoch is not None else "")
    rep.files[src.name] = f"DF-GAN generator ({size})"
    rep.config.update(cfg)
    components = [damsm_image(roles["image_encoder"], opts, rep, text.nef)] if "image_encoder" in roles else []
    rep.notes.append("official sampling: --truncation 0.88 draws 0.88 * truncnorm(-2, 2) as code/src/sample.py "
                     "(truncation_mode truncnorm, needs scipy: pip install 't2igan[official]')")
    return Converted(report=rep, model_family="dfgan", text_encoder=text, generator=g.eval(), components=components,
                     index={"image_size": cfg["imsize"], "max_words": opts["max_words"],
                            "truncation_mode": "truncnorm"})


CONVERTER = Converter(name="dfgan", title="DF-GAN", usage=USAGE, build=build)
