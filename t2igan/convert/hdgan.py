"""HDGAN checkpoints (ypxie/HDGan) -> a t2igan ``hdgan`` model folder.

Files (recognised by content, any order)::

    G_epoch*.pth          Generator state dict (HDGan/HDGan.py: torch.save(netG.state_dict()), the
                          DataParallel wrapper taken off; 'module.' prefixes are stripped if present)
    D_epoch*.pth          optional: the Discriminator, written to the folder's discriminator/
                          (kind hdgan_discriminator) for fine-tuning or inspection
    TEXT (one of)         Reed's char-CNN-RNN .t7, or DATA_DIR/{train,test}/char-CNN-RNN-embeddings.pickle
                          (HDGAN trains and tests on the StackGAN embeddings; see t2igan.convert.stackgan)

The key tables are the identity (:mod:`t2igan.models.hdgan` keeps the official names).
Configuration from the shapes: ``condEmbedding.linear.weight`` ``[2 emb_dim, sent_dim]``,
``vec_to_tensor.out.0.weight`` ``[128 hid_dim, emb_dim + noise_dim]``, the ``tensor_to_img_*``
sides, the ``scale_4.*`` count (``num_resblock``); for D ``context_emb_pipe_S.0.weight``,
``local_img_disc_S.weight`` ``[1, 4 hid_dim, 4, 4]`` and the ``img_encoder_*`` sides. Official
(train_worker.py): ``sent_dim 1024, noise_dim 100, emb_dim 128, hid_dim 128, num_resblock 1``,
sides 64 / 128 / 256. HDGAN's 512 px generator (``GeneratorSuperL1Loss``) is not ported and is
refused in one line.

Official sampling (HDGan_test.py): ``z ~ N(0, 1)`` and the conditioning noise ``eps ~ N(0, 1)``
with ``c = mean + exp(log_sigma) * eps``; ``Pipeline.latents`` draws z, then eps, from the seed.
"""
from __future__ import annotations

from t2igan import T2IError
from t2igan.convert.base import (Component, Converted, Converter, KeyTable, Report, Source, assign, count_prefixed,
                                 shape_of, state_keys, take_options)
from t2igan.convert.stackgan import TEXT_OPTIONS, TEXT_USAGE, char_text, is_text
from t2igan.models.hdgan import Discriminator, Generator

WHAT_G = "an HDGAN Generator (condEmbedding, vec_to_tensor, scale_4..256, tensor_to_img_*)"
WHAT_D = "an HDGAN Discriminator (img_encoder_*, pair_disc_*, local_img_disc_*, context_emb_pipe_*)"
USAGE = f"G_epoch*.pth [D_epoch*.pth], and {TEXT_USAGE}"
OFFICIAL_BASE = {64: 128, 128: 64, 256: 32}  # ImageDown's first width per input size


def is_generator(s: Source) -> bool:
    k = state_keys(s)
    return (any(x.endswith("condEmbedding.linear.weight") for x in k)
            and any(x.endswith("vec_to_tensor.out.0.weight") for x in k))


def is_discriminator(s: Source) -> bool:
    k = state_keys(s)
    return any(x.startswith("img_encoder_") for x in k) and any(x.startswith("pair_disc_") for x in k)


def generator_config(state, name: str) -> dict:
    if "generator_256.condEmbedding.linear.weight" in state:
        raise T2IError(f"{name}: HDGAN's 512 px generator (GeneratorSuperL1Loss); only the 256 px Generator is ported")
    two_e, sent_dim = shape_of(state, "condEmbedding.linear.weight", name, WHAT_G, ndim=2)
    rows, vin = shape_of(state, "vec_to_tensor.out.0.weight", name, WHAT_G, ndim=2)
    sides = sorted(int(s) for s in {k.split(".")[0].rsplit("_", 1)[1] for k in state if k.startswith("tensor_to_img_")})
    emb = two_e // 2
    if two_e % 2 or rows % 128 or vin <= emb or not sides:
        raise T2IError(f"{name}: not {WHAT_G}: condEmbedding.linear {two_e}x{sent_dim}, vec_to_tensor {rows}x{vin}, "
                       f"side outputs {sides}")
    return dict(sent_dim=sent_dim, noise_dim=vin - emb, emb_dim=emb, hid_dim=rows // 128,
                num_resblock=count_prefixed(state, r"scale_4\.(\d+)\."), side_output_at=sides)


def discriminator_config(state, name: str) -> dict:
    sides = sorted(int(k.split(".")[0].rsplit("_", 1)[1]) for k in state if k.startswith("img_encoder_")
                   and k.endswith(".node.0.0.weight"))
    if not sides:
        raise T2IError(f"{name}: not {WHAT_D} (no img_encoder_*.node.0.0.weight)")
    s = sides[0]
    emb, sent = shape_of(state, f"context_emb_pipe_{s}.0.weight", name, WHAT_D, ndim=2)
    enc = shape_of(state, f"local_img_disc_{s}.weight", name, WHAT_D, ndim=4)[1]
    firsts = {x: shape_of(state, f"img_encoder_{x}.node.0.0.weight", name, WHAT_D, ndim=4)[0] for x in sides}
    if all(OFFICIAL_BASE.get(x, 128) == w for x, w in firsts.items()):
        base = None
    elif len(set(firsts.values())) == 1:
        base = next(iter(firsts.values()))
    else:
        raise T2IError(f"{name}: image encoders of first widths {firsts}: neither HDGAN's official ones nor one width")
    if enc % 4:
        raise T2IError(f"{name}: not {WHAT_D}: local_img_disc_{s} reads {enc} channels (4 * hid_dim)")
    return dict(num_chan=3, hid_dim=enc // 4, sent_dim=sent, emb_dim=emb, side_output_at=sides, base_dim=base)


def build(sources: list[Source], options: dict) -> Converted:
    opts = take_options(options, TEXT_OPTIONS, "HDGAN")
    roles = assign(sources, {"generator": is_generator, "discriminator": is_discriminator, "text": is_text},
                   required=("generator", "text"), title="HDGAN", usage=USAGE)
    rep = Report("hdgan", "HDGAN")
    src = roles["generator"]
    state = rep.unwrap(src)
    cfg = generator_config(state, src.name)
    g = Generator(**cfg)
    rep.files[src.name] = f"HDGAN generator (side outputs {', '.join(map(str, cfg['side_output_at']))} px)"
    rep.config.update(cfg)
    text = char_text(roles["text"], opts, rep, cfg["sent_dim"], src.name)
    KeyTable().apply(state, g, src.name, WHAT_G, rep)
    components = []
    if "discriminator" in roles:
        ds = roles["discriminator"]
        dstate = rep.unwrap(ds)
        dcfg = discriminator_config(dstate, ds.name)
        if dcfg["sent_dim"] != cfg["sent_dim"]:
            raise T2IError(f"{ds.name}: the discriminator reads {dcfg['sent_dim']}-d sentences, the generator "
                           f"{src.name} {cfg['sent_dim']}-d ones")
        d = Discriminator(**dcfg)
        KeyTable().apply(dstate, d, ds.name, WHAT_D, rep)
        rep.files[ds.name] = f"HDGAN discriminator (branches {', '.join(map(str, dcfg['side_output_at']))} px)"
        components.append(Component("discriminator", d.eval(), "hdgan_discriminator", dict(d.config)))
    return Converted(report=rep, model_family="hdgan", text_encoder=text, generator=g.eval(), components=components,
                     index={"image_size": int(g.imsize)})


CONVERTER = Converter(name="hdgan", title="HDGAN", usage=USAGE, build=build)
