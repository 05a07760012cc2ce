"""StackGAN-Pytorch checkpoints (hanzhanggit/StackGAN-Pytorch) -> a t2igan ``stackgan_stage1`` /
``stackgan_stage2`` model folder, with the char-CNN-RNN text path.

Files (recognised by content, any order)::

    netG_epoch_*.pth       STAGE1_G or STAGE2_G state dict (code/miscc/utils.py save_model:
                           torch.save(netG.state_dict()); a stage-II file holds its STAGE1_G.*)
    TEXT (one of)          Reed's char-CNN-RNN .t7 (lm_sje_*.t7; read by t2igan.convert.reed_t7), or
                           the dataset's char-CNN-RNN-embeddings.pickle (DATA_DIR/{train,test}/...:
                           the precomputed encoder of DATA_DIR, which knows the dataset's captions only)

The key table is the identity (``models/stackgan.py`` keeps the official names); ``module.``
prefixes are stripped; ``num_batches_tracked`` (absent in the PyTorch 0.2/0.3 files) is filled.
Configuration from the shapes: ``ca_net.fc.weight`` ``[2 c_dim, t_dim]``, ``fc.0.weight``
``[128 gf_dim, nz + c_dim]`` (stage I works at 8 gf_dim), the ``upsample*`` count (stage I side
``4 * 2**n``), and for stage II ``encoder.0.weight`` ``[gf_dim, 3, 3, 3]``, the ``residual.*``
count (``r_num``) and its ``upsample*`` count. The official COCO model (coco_s2.yml / coco_eval.yml)
is ``GF_DIM 192, CONDITION_DIM 128, Z_DIM 100, R_NUM 2, TEXT.DIMENSION 1024``, 64 -> 256.

Official sampling draws z and the CA noise ``eps`` from N(0, 1) (stage II: stage-I eps, then
stage-II eps); ``Pipeline.latents`` draws them from the seed in that order.
"""
from __future__ import annotations

from pathlib import Path

from t2igan import T2IError
from t2igan.convert.base import (Converted, Converter, KeyTable, Report, Source, assign, count_prefixed, positive_int,
                                 shape_of, state_keys, take_options)
from t2igan.models.stackgan import STAGE1_G, STAGE2_G
from t2igan.text.char_cnn_rnn import DOC_LENGTH

WHAT1 = "a StackGAN-Pytorch STAGE1_G (ca_net, fc, upsample1..4, img)"
WHAT2 = "a StackGAN-Pytorch STAGE2_G (STAGE1_G.*, ca_net, encoder, hr_joint, residual, upsample*, img)"
TEXT_USAGE = "a char-CNN-RNN .t7, or DATA_DIR/train/char-CNN-RNN-embeddings.pickle"
USAGE = f"netG_epoch_*.pth, and {TEXT_USAGE}"
TEXT_OPTIONS = {"doc_length": (positive_int, DOC_LENGTH, "characters per caption the .t7 encoder reads (Reed: 201)")}


# ----------------------------------------------------------------------------- the char-CNN-RNN text path
def is_t7(s: Source) -> bool:
    return s.kind == "raw" and s.path.suffix.lower() == ".t7"


def is_embeddings(s: Source) -> bool:
    from t2igan.data.birds import EMBEDDING_FILES

    return s.kind == "pickle" and s.path.name in EMBEDDING_FILES


def is_text(s: Source) -> bool:
    return is_t7(s) or is_embeddings(s)


def char_text(s: Source, opts: dict, rep: Report, t_dim: int, gen_name: str):
    """The caption encoder of a char-CNN-RNN source (a Reed ``.t7`` or a precomputed-embeddings
    pickle of a StackGAN-layout dataset) giving ``t_dim``-d sentences."""
    if is_t7(s):
        from t2igan.convert.reed_t7 import convert_char_cnn_rnn
        from t2igan.text.char_cnn_rnn import CharCNNRNNCaptionEncoder

        model = convert_char_cnn_rnn(s.path, doc_length=opts["doc_length"])
        enc = CharCNNRNNCaptionEncoder(model)
        rep.files[s.name] = (f"Reed char-CNN-RNN text encoder ({model.rnn_type}, {model.emb_dim}-d, "
                             f"doc_length {opts['doc_length']})")
    else:
        from t2igan.text.precomputed import PrecomputedEncoder

        root = Path(s.path).resolve().parent.parent  # DATA_DIR/{train,test}/char-CNN-RNN-embeddings.pickle
        enc = PrecomputedEncoder(root)
        rep.files[s.name] = f"precomputed sentence embeddings of {root} ({len(enc.table)} captions)"
        rep.notes.append(f"text: the precomputed encoder knows only the captions of {root}; convert the .t7 that "
                         "made the embeddings to draw other captions")
    if enc.sentence_dim != t_dim:
        raise T2IError(f"{gen_name}: the generator reads {t_dim}-d sentence embeddings but {s.name} gives "
                       f"{enc.sentence_dim}-d ones")
    return enc


# ----------------------------------------------------------------------------- generators
def _stage(keys) -> int:
    if "STAGE1_G.fc.0.weight" in keys and "encoder.0.weight" in keys:
        return 2
    if {"fc.0.weight", "ca_net.fc.weight", "img.0.weight"} <= set(keys) and "h_net1.fc.0.weight" not in keys:
        return 1
    return 0


def is_generator(s: Source) -> bool:
    return _stage(state_keys(s)) > 0


def stage1_config(state, name: str, prefix: str = "") -> dict:
    two_c, t_dim = shape_of(state, prefix + "ca_net.fc.weight", name, WHAT1, ndim=2)
    rows, fc_in = shape_of(state, prefix + "fc.0.weight", name, WHAT1, ndim=2)
    n_up = count_prefixed(state, rf"{prefix.replace('.', '[.]')}upsample(\d+)\.")
    c_dim = two_c // 2
    if two_c % 2 or rows % 128 or fc_in <= c_dim or not 1 <= n_up <= 4:
        raise T2IError(f"{name}: not {WHAT1}: ca_net.fc {two_c}x{t_dim}, fc {rows}x{fc_in}, {n_up} upsample blocks")
    return dict(t_dim=t_dim, c_dim=c_dim, nz=fc_in - c_dim, gf_dim=rows // 128, imsize=4 * 2 ** n_up)


def stage2_config(state, name: str) -> dict:
    s1 = stage1_config(state, name, "STAGE1_G.")
    two_c, t_dim = shape_of(state, "ca_net.fc.weight", name, WHAT2, ndim=2)
    ngf = shape_of(state, "encoder.0.weight", name, WHAT2, ndim=4)[0]
    r_num = count_prefixed(state, r"residual\.(\d+)\.")
    n_up = count_prefixed(state, r"upsample(\d+)\.")
    if t_dim != s1["t_dim"] or two_c % 2 or not 1 <= n_up <= 4:
        raise T2IError(f"{name}: not {WHAT2}: ca_net.fc {two_c}x{t_dim} (its STAGE1_G reads {s1['t_dim']}-d "
                       f"sentences), {n_up} upsample blocks")
    return dict(stage1=s1, gf_dim=ngf, c_dim=two_c // 2, r_num=r_num, imsize=s1["imsize"] * 2 ** (n_up - 2))


def refuse_tensorflow(sources: list[Source]) -> None:
    """A TensorFlow checkpoint among the sources (the StackGAN TensorFlow release) is read, to say
    in one line what it is and which converter takes it: ``t2igan convert stackgan-tf`` (its networks
    differ from StackGAN-Pytorch's; docs/convert.md)."""
    for s in sources:
        if s.kind == "raw" and (s.path.suffix.lower() in (".ckpt", ".index") or ".data-" in s.path.name):
            from t2igan.convert.tf_checkpoint import TFCheckpoint

            ck = TFCheckpoint(s.path if ".data-" not in s.path.name else s.path.parent / s.path.name.split(".data-")[0])
            names = sorted(ck.tensors)
            raise T2IError(f"{s.path}: a TensorFlow {ck.format} checkpoint ({len(names)} tensors, e.g. "
                           f"{', '.join(names[:2])}): the TensorFlow StackGAN release has its own networks, "
                           "convert it with `t2igan convert stackgan-tf` (docs/convert.md)")


def build(sources: list[Source], options: dict) -> Converted:
    opts = take_options(options, TEXT_OPTIONS, "StackGAN")
    refuse_tensorflow(sources)
    roles = assign(sources, {"generator": is_generator, "text": is_text}, required=("generator", "text"),
                   title="StackGAN", usage=USAGE)
    src = roles["generator"]
    rep = Report("stackgan", "StackGAN (StackGAN-Pytorch)")
    state = rep.unwrap(src)
    stage = _stage(state)
    if stage == 1:
        cfg = stage1_config(state, src.name)
        g, what, family, t_dim = STAGE1_G(**cfg), WHAT1, "stackgan_stage1", cfg["t_dim"]
        rep.files[src.name] = f"StackGAN stage-I generator ({cfg['imsize']}x{cfg['imsize']})"
    else:
        cfg = stage2_config(state, src.name)
        g, what, family, t_dim = STAGE2_G(**cfg), WHAT2, "stackgan_stage2", cfg["stage1"]["t_dim"]
        rep.files[src.name] = (f"StackGAN stage-II generator ({cfg['stage1']['imsize']} -> {cfg['imsize']}, "
                               "with its stage-I generator)")
    rep.config.update(cfg)
    text = char_text(roles["text"], opts, rep, t_dim, src.name)
    KeyTable().apply(state, g, src.name, what, rep)
    return Converted(report=rep, model_family=family, text_encoder=text, generator=g.eval(),
                     index={"image_size": int(g.imsize)})


CONVERTER = Converter(name="stackgan", title="StackGAN", usage=USAGE, build=build)
