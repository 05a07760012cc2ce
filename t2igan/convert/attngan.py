"""AttnGAN checkpoints (taoxugit/AttnGAN) -> a t2igan ``attngan`` model folder; the DAMSM parts
(official ``RNN_ENCODER`` / ``CNN_ENCODER`` and ``captions.pickle``) that DF-GAN and MirrorGAN
reuse.

Files (recognised by content, any order)::

    netG_epoch_*.pth | bird_AttnGAN2.pth   G_NET state dict (torch.save(netG.state_dict()))
    text_encoder200.pth                    DAMSM RNN_ENCODER state dict (bi-LSTM)
    image_encoder200.pth                   DAMSM CNN_ENCODER (Inception-v3) state dict, optional
    captions.pickle                        [train_captions, test_captions, ixtoword, wordtoix]

Key tables: the t2igan networks keep the official names, so every table is the identity onto
the target's state dict; a ``module.`` prefix is stripped, ``num_batches_tracked`` (absent from
files of torch < 0.4) is optional. The configuration is read from the shapes: ``ca_net.fc.weight``
``[4 c_dim, t_dim]``; ``h_net1.fc.0.weight`` ``[2 * 16 * ngf, nz + c_dim]``; the number of
``h_net1.upsample*`` (base size) and of ``h_net*`` stages (branches); ``img_net1.img.0.weight``
``[3, gf_dim, 3, 3]``; ``h_net2.residual.*`` (R_NUM); the RNN from ``encoder.weight``
``[ntoken, ninput]`` and ``rnn.weight_hh_l0`` ``[4 nhidden/2, nhidden/2]``.
"""
from __future__ import annotations

from t2igan import T2IError
from t2igan.convert.base import (Component, Converted, Converter, KeyTable, Report, Source, assign, choice,
                                 count_prefixed, positive_int, shape_of, state_keys, take_options)
from t2igan.data.text import Vocabulary
from t2igan.models import attngan
from t2igan.models.damsm_inception import KIND as INCEPTION_KIND
from t2igan.models.damsm_inception import CNN_ENCODER
from t2igan.text.damsm import TextEncoder
from t2igan.text.damsm_encoder import DAMSMCaptionEncoder
from t2igan.text.official_vocab import OfficialVocabulary, captions_from_pickle

TEXT_WHAT = "a DAMSM text encoder (RNN_ENCODER: encoder.weight, rnn.*)"
IMAGE_WHAT = "a DAMSM image encoder (CNN_ENCODER: Inception-v3 Conv2d_1a_3x3 ... Mixed_7c, emb_features, emb_cnn_code)"

# options every DAMSM-based converter takes (``--set KEY=VALUE``)
DAMSM_OPTIONS = {
    "max_words": (positive_int, 18, "words per caption the text encoder reads (TEXT.WORDS_NUM: birds 18, COCO 12)"),
    "tokenizer": (choice("official", "t2igan"), "official", "official: RegexpTokenizer(r'\\w+') as the official code; "
                                                           "t2igan: [a-z0-9]+"),
    "resize_align_corners": (choice("false", "true"), "false",
                             "the image encoder's 299x299 resize: false (modern torch, DF-GAN) or true (torch < 0.4)"),
}


def is_text_encoder(s: Source) -> bool:
    k = state_keys(s)
    return "encoder.weight" in k and "rnn.weight_ih_l0" in k


def is_image_encoder(s: Source) -> bool:
    k = state_keys(s)
    return "emb_cnn_code.weight" in k or "Mixed_7c.branch1x1.conv.weight" in k


def is_captions(s: Source) -> bool:
    return s.kind == "pickle"


def damsm_text(src: Source, caps: Source, opts: dict, rep: Report) -> DAMSMCaptionEncoder:
    """The DAMSM text encoder of ``src`` with the vocabulary of ``caps`` (captions.pickle)."""
    info = captions_from_pickle(caps.obj, caps.path)
    words = info["words"]
    rep.files[caps.name] = f"captions.pickle ({len(info['train'])} train / {len(info['test'])} test captions)"
    rep.vocab_size = len(words)
    state = rep.unwrap(src)
    ntoken, ninput = shape_of(state, "encoder.weight", src.name, TEXT_WHAT, ndim=2)
    gates, half = shape_of(state, "rnn.weight_hh_l0", src.name, TEXT_WHAT, ndim=2)
    if gates != 4 * half:
        raise T2IError(f"{src.name}: rnn.weight_hh_l0 is {gates}x{half}: not an LSTM (RNN_TYPE GRU is not supported; "
                       "the official DAMSM encoders are LSTMs)")
    if "rnn.weight_ih_l0_reverse" not in state:
        raise T2IError(f"{src.name}: a one-directional RNN; the official DAMSM text encoder is bidirectional")
    nlayers = count_prefixed(state, r"rnn\.weight_ih_l(\d+)$")
    if ntoken != len(words):
        raise T2IError(f"{src.name}: the text encoder has {ntoken} tokens but {caps.name} has {len(words)} words "
                       "(a text encoder and captions.pickle of different datasets?)")
    args = dict(ntoken=ntoken, ninput=ninput, nhidden=2 * half, nlayers=nlayers, drop_prob=0.5)
    enc = TextEncoder(**args)
    KeyTable(optional=()).apply(state, enc, src.name, TEXT_WHAT, rep)
    rep.files[src.name] = f"DAMSM text encoder (bi-LSTM, {ntoken} tokens, {ninput}-d embeddings, nef {2 * half})"
    rep.config.update(text_nef=2 * half, max_words=opts["max_words"], tokenizer=opts["tokenizer"])
    vocab = OfficialVocabulary(words) if opts["tokenizer"] == "official" else Vocabulary(words)
    if opts["tokenizer"] == "t2igan":
        rep.notes.append("tokenizer=t2igan: captions are split on [a-z0-9]+, which differs from the official \\w+ "
                         "for words with '_' or non-ASCII letters")
    return DAMSMCaptionEncoder(enc.eval(), vocab, opts["max_words"], args).eval()


def damsm_image(src: Source, opts: dict, rep: Report, nef: int) -> Component:
    """The official Inception-v3 ``CNN_ENCODER`` of ``src`` as the ``image_encoder/`` component."""
    state = rep.unwrap(src)
    got = shape_of(state, "emb_cnn_code.weight", src.name, IMAGE_WHAT, ndim=2)[0]
    if got != nef:
        raise T2IError(f"{src.name}: the image encoder gives {got}-d codes but the text encoder {nef}-d ones")
    cfg = dict(nef=got, align_corners=opts["resize_align_corners"] == "true")
    enc = CNN_ENCODER(**cfg)
    KeyTable().apply(state, enc, src.name, IMAGE_WHAT, rep)
    rep.files[src.name] = f"DAMSM image encoder (Inception-v3 CNN_ENCODER, nef {got})"
    return Component("image_encoder", enc.eval(), INCEPTION_KIND, cfg)


def tree_config(state, name: str, what: str) -> dict:
    """G_NET constructor arguments (t2igan.models.attngan) from the shapes of an official state dict."""
    four_c, t_dim = shape_of(state, "ca_net.fc.weight", name, what, ndim=2)
    out, in_dim = shape_of(state, "h_net1.fc.0.weight", name, what, ndim=2)
    gf_dim = shape_of(state, "img_net1.img.0.weight", name, what, ndim=4)[1]
    n_up = count_prefixed(state, r"h_net1\.upsample(\d+)\.")
    branch_num = count_prefixed(state, r"h_net(\d+)\.")
    c_dim = four_c // 4
    cfg = dict(t_dim=t_dim, c_dim=c_dim, nz=in_dim - c_dim, gf_dim=gf_dim,
               r_num=count_prefixed(state, r"h_net2\.residual\.(\d+)\.") if branch_num > 1 else 2,
               branch_num=branch_num, base_size=4 * 2 ** n_up)
    if four_c % 4 or out != 32 * gf_dim * 2 ** n_up or not 1 <= branch_num <= 3 or not 1 <= n_up <= 4:
        raise T2IError(f"{name}: not {what}: its shapes fit no G_NET (ca_net.fc {four_c}x{t_dim}, "
                       f"h_net1.fc {out}x{in_dim}, {branch_num} stages, {n_up} upsamplings)")
    if branch_num > 1:
        w_dim = shape_of(state, "h_net2.att.conv_context.weight", name, what, ndim=4)[1]
        if w_dim != t_dim:
            cfg["w_dim"] = w_dim
    return cfg


def build_tree(sources: list[Source], options: dict, family: str, title: str, module, usage: str) -> Converted:
    """AttnGAN / MirrorGAN: the generator ``module.G_NET`` + DAMSM text (+ image) encoder + vocabulary."""
    opts = take_options(options, DAMSM_OPTIONS, title)
    what = f"an {title} generator (G_NET: ca_net, h_net1, img_net1 ...)"
    marker = "h_net2.conv.weight"  # MirrorGAN's GLAM stage joins with a 1x1 conv, AttnGAN's does not

    def is_gen(s):
        k = state_keys(s, prefer=("netG",))
        return "ca_net.fc.weight" in k and "h_net1.fc.0.weight" in k

    roles = assign(sources, {"generator": is_gen, "text_encoder": is_text_encoder, "image_encoder": is_image_encoder,
                             "captions": is_captions}, required=("generator", "text_encoder", "captions"),
                   title=title, usage=usage)
    rep = Report(family, title)
    g_src = roles["generator"]
    state = rep.unwrap(g_src, prefer=("netG",))
    other = "MirrorGAN" if family == "attngan" else "AttnGAN"
    if (marker in state) != (family == "mirrorgan") and count_prefixed(state, r"h_net(\d+)\.") > 1:
        raise T2IError(f"{g_src.name}: this is the generator of {other}, not {title} "
                       f"(use `t2igan convert {other.lower()}`)")
    text = damsm_text(roles["text_encoder"], roles["captions"], opts, rep)
    cfg = tree_config(state, g_src.name, what)
    if cfg["t_dim"] != text.nef:
        raise T2IError(f"{g_src.name}: the generator reads {cfg['t_dim']}-d sentences but "
                       f"{roles['text_encoder'].name} gives {text.nef}-d ones")
    g = module.G_NET(**cfg)
    KeyTable().apply(state, g, g_src.name, what, rep)
    rep.files[g_src.name] = f"{title} generator ({cfg['branch_num']} stages, {g.stage_sizes[-1]}x{g.stage_sizes[-1]})"
    rep.config.update(cfg)
    components = []
    if "image_encoder" in roles:
        components.append(damsm_image(roles["image_encoder"], opts, rep, text.nef))
    else:
        rep.notes.append("no image_encoder*.pth given: the folder has no DAMSM image encoder (R-precision with it "
                         "and the DAMSM loss need one)")
    if cfg["branch_num"] > 1:
        rep.notes.append("sampling: padded words get no attention by default; attention_mask='official' "
                         "reproduces the official mask tiling (docs/convert.md)")
    return Converted(report=rep, model_family=family, text_encoder=text, generator=g.eval(), components=components,
                     index={"image_size": g.imsize, "max_words": opts["max_words"]})


USAGE = "netG_epoch_*.pth | bird_AttnGAN2.pth, text_encoder*.pth, captions.pickle[, image_encoder*.pth]"


def build(sources: list[Source], options: dict) -> Converted:
    return build_tree(sources, options, "attngan", "AttnGAN", attngan, USAGE)


CONVERTER = Converter(name="attngan", title="AttnGAN", usage=USAGE, build=build)
