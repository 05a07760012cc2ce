"""StackGAN-v2 / StackGAN++ checkpoints (hanzhanggit/StackGAN-v2) -> a t2igan ``stackganpp`` folder.

Files (recognised by content, any order)::

    netG_*.pth            G_NET state dict as code/trainer.py save_model writes it: the generator
                          is wrapped in nn.DataParallel, so every key carries 'module.' (stripped
                          and reported; a bare state dict is taken too)
    TEXT (one of)         Reed's char-CNN-RNN .t7, or DATA_DIR/{train,test}/char-CNN-RNN-embeddings.pickle
                          (see :mod:`t2igan.convert.stackgan`)

Only the text-conditioned generator (``GAN.B_CONDITION: True``, the birds model) has a t2igan
class; the unconditional dog / cat / bedroom / church models (no ``ca_net``) are refused in one
line, and so are 4- and 5-branch trees (512 / 1024 px). The key table is the identity
(``models/stackganpp.py`` keeps the official names). Configuration from the shapes:
``ca_net.fc.weight`` ``[4 c_dim, t_dim]``, ``h_net1.fc.0.weight`` ``[32 * gf_dim * 2**n, nz + c_dim]``
with n = the ``h_net1.upsample*`` count (``base_size = 4 * 2**n``), the ``h_net*`` count
(``branch_num``) and ``h_net2.residual.*`` (``r_num``). Official birds (eval_birds.yml):
``GF_DIM 64, EMBEDDING_DIM 128, Z_DIM 100, R_NUM 2, BRANCH_NUM 3``, 64/128/256 px.
"""
from __future__ import annotations

from t2igan import T2IError
from t2igan.convert.base import (Converted, Converter, KeyTable, Report, Source, assign, count_prefixed, shape_of,
                                 state_keys, take_options)
from t2igan.convert.stackgan import TEXT_OPTIONS, TEXT_USAGE, char_text, is_text
from t2igan.models.stackganpp import G_NET

WHAT = "a StackGAN-v2 G_NET (ca_net, h_net1..3, img_net1..3)"
USAGE = f"netG_*.pth, and {TEXT_USAGE}"


def is_generator(s: Source) -> bool:
    k = state_keys(s)
    return "h_net1.fc.0.weight" in k and "img_net1.img.0.weight" in k and not any(".att." in x for x in k)


def generator_config(state, name: str) -> dict:
    if "ca_net.fc.weight" not in state:
        raise T2IError(f"{name}: an unconditional StackGAN-v2 generator (GAN.B_CONDITION: False, no ca_net: the "
                       "dog/cat/bedroom/church models); only the text-conditioned G_NET can be converted")
    four_c, t_dim = shape_of(state, "ca_net.fc.weight", name, WHAT, ndim=2)
    rows, fc_in = shape_of(state, "h_net1.fc.0.weight", name, WHAT, ndim=2)
    n_up = count_prefixed(state, r"h_net1\.upsample(\d+)\.")
    branches = count_prefixed(state, r"h_net(\d+)\.")
    c_dim = four_c // 4
    width = rows // 32  # INIT_STAGE_G's width at 4x4: gf_dim * 2**n_up (fc to width * 4 * 4 * 2, GLU)
    if four_c % 4 or rows % 32 or fc_in <= c_dim or not 1 <= n_up <= 4 or width % 2 ** n_up:
        raise T2IError(f"{name}: not {WHAT}: ca_net.fc {four_c}x{t_dim}, h_net1.fc {rows}x{fc_in}, "
                       f"{n_up} h_net1 upsample blocks")
    if not 1 <= branches <= 3:
        raise T2IError(f"{name}: a {branches}-branch StackGAN-v2 tree; t2igan's G_NET has 1 to 3 branches "
                       "(64, 128, 256 px)")
    r_num = count_prefixed(state, r"h_net2\.residual\.(\d+)\.") if branches > 1 else 2
    return dict(t_dim=t_dim, c_dim=c_dim, nz=fc_in - c_dim, gf_dim=width // 2 ** n_up, r_num=r_num,
                branch_num=branches, base_size=4 * 2 ** n_up)


def build(sources: list[Source], options: dict) -> Converted:
    opts = take_options(options, TEXT_OPTIONS, "StackGAN-v2")
    roles = assign(sources, {"generator": is_generator, "text": is_text}, required=("generator", "text"),
                   title="StackGAN-v2", usage=USAGE)
    src = roles["generator"]
    rep = Report("stackganpp", "StackGAN-v2 / StackGAN++")
    state = rep.unwrap(src)
    cfg = generator_config(state, src.name)
    g = G_NET(**cfg)
    rep.files[src.name] = f"StackGAN-v2 generator ({', '.join(str(s) for s in g.stage_sizes)} px)"
    rep.config.update(cfg)
    text = char_text(roles["text"], opts, rep, cfg["t_dim"], src.name)
    KeyTable().apply(state, g, src.name, WHAT, rep)
    return Converted(report=rep, model_family="stackganpp", text_encoder=text, generator=g.eval(),
                     index={"image_size": int(g.imsize)})


CONVERTER = Converter(name="stackganpp", title="StackGAN-v2", usage=USAGE, build=build)
