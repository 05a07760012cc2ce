"""The project's one CLIP loader: a frozen ``transformers.CLIPModel`` with its tokenizer and image statistics.

    clip = load_clip("runs/clip_synth64")                     # a Hugging Face CLIP folder (or a run holding it
    clip = load_clip("ViT-B-32-quickgelu:/w/open_clip.pt")    #   in pipeline/), or ARCH:FILE, an open_clip file
    clip.encode_image(images)      # images (B, 3, H, W) in [-1, 1] -> (B, E) L2-normalised, differentiable
    clip.encode_text(captions)     # (B, E) L2-normalised, no grad
    enc = CLIPCaptionEncoder(clip) # the CaptionEncoder of the text spec clip:SOURCE

Sources (nothing is downloaded):

* a **Hugging Face CLIP folder**: ``config.json`` (``model_type: clip``), ``model.safetensors`` (or
  ``pytorch_model.bin``), ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``),
  ``preprocessor_config.json`` (its ``image_mean``/``image_std`` are used). The folders that
  ``task: clip`` exports (:mod:`t2igan.families.clip`) and ``t2igan convert open_clip`` writes are such
  folders, and so is a snapshot of ``openai/clip-vit-base-patch32``;
* ``ARCH:FILE``: an open_clip checkpoint of a ViT CLIP, converted in memory to the same class by the
  key table of :mod:`t2igan.convert.open_clip`; tokenised with open_clip's CLIP BPE
  (``open_clip.tokenizer.SimpleTokenizer``), padded to the context length.

:meth:`CLIPBundle.pixel_values` is the differentiable form of CLIP's preprocessing for generated
images: ``[-1, 1] -> [0, 1]``, resize of the shorter side to ``image_size`` (``mode``, no antialias),
centre crop, normalisation by the mean/std.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.text.base import CaptionEncoder, TextFeatures, check_captions
from t2igan.text.clip_bpe import (  # noqa: F401  (the API)
    OPENAI_MEAN,
    OPENAI_STD,
    import_transformers,
    save_hf_clip,
)

HELP = ("give a Hugging Face CLIP folder (config.json, model.safetensors, vocab.json + merges.txt, "
        "preprocessor_config.json; a task clip run) or ARCH:FILE with a local open_clip checkpoint; nothing is downloaded")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise T2IError(f"{path}: not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise T2IError(f"{path}: not a JSON object")
    return obj


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {s[0][:80]}" if s else e.__class__.__name__


def is_open_clip_source(source: str) -> bool:
    """``ARCH:FILE`` (an architecture name, no path separators, before the first colon) rather than a folder."""
    s = str(source)
    arch, sep, rest = s.partition(":")
    if not sep or not rest or Path(s).is_dir():
        return False
    return len(arch) > 1 and "/" not in arch and "\\" not in arch


class CLIPBundle:
    """A frozen ``transformers.CLIPModel`` + tokenizer + image statistics (see the module docstring)."""

    def __init__(self, model, tokenize_fn, spec: str, image_mean, image_std, source: dict):
        self.model = model.eval().requires_grad_(False)
        self._tokenize = tokenize_fn
        self.spec = spec
        vc = model.config.vision_config
        self.image_size, self.patch_size = int(vc.image_size), int(vc.patch_size)
        self.grid = self.image_size // self.patch_size
        self.vision_width, self.vision_layers = int(vc.hidden_size), int(vc.num_hidden_layers)
        self.text_width = int(model.config.text_config.hidden_size)
        self.embed_dim = int(model.config.projection_dim)
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.image_mean, self.image_std = [float(x) for x in image_mean], [float(x) for x in image_std]
        self.source = source  # {"format": "hf" | "open_clip", ...}: identity for fingerprints
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ devices
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> CLIPBundle:
        self.model.to(device)
        return self

    # ------------------------------------------------------------------ images
    def pixel_values(self, images: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> CLIP's normalised input (B, 3, S, S); differentiable."""
        if images.dim() != 4 or images.size(1) != 3:
            raise T2IError(f"CLIP: expected images (B, 3, H, W), got {tuple(images.shape)}")
        x = (images.float() + 1) / 2
        S = self.image_size
        h, w = x.shape[-2:]
        if (h, w) != (S, S):
            scale = S / min(h, w)
            size = (max(S, round(h * scale)), max(S, round(w * scale)))
            kw = {} if mode in ("nearest", "area") else {"align_corners": False}
            x = F.interpolate(x, size=size, mode=mode, **kw)
            top, left = (size[0] - S) // 2, (size[1] - S) // 2
            x = x[..., top:top + S, left:left + S]
        mean = x.new_tensor(self.image_mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.image_std).view(1, 3, 1, 1)
        return (x - mean) / std

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings (B, E), not normalised, of CLIP inputs."""
        m = self.model
        pooled = m.vision_model(pixel_values=pixel_values.to(self.device)).pooler_output  # post_layernorm(CLS)
        return m.visual_projection(pooled)

    def encode_image(self, images: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, E) L2-normalised; gradients flow to ``images``."""
        return F.normalize(self.image_features(self.pixel_values(images, mode)), dim=-1)

    # ------------------------------------------------------------------ text
    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """dict(input_ids, attention_mask): LongTensors (B, T); the mask covers start .. end token."""
        return self._tokenize(check_captions(captions))

    def text_states(self, captions: list[str]):
        """(last-layer token states after the final layer norm (B, T, W), projected sentence (B, E)
        not normalised, mask (B, T) bool up to and including the end token)."""
        t = {k: v.to(self.device) for k, v in self.tokenize(captions).items()}
        out = self.model.text_model(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
        return out.last_hidden_state, self.model.text_projection(out.pooler_output), t["attention_mask"].bool()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """(B, E) L2-normalised projected text embeddings."""
        return F.normalize(self.text_states(captions)[1], dim=-1)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """sha256 of what the model is (format, image statistics) and of every weight."""
        if self._fingerprint is None:
            h = hashlib.sha256(json.dumps({"source": self.source, "mean": self.image_mean, "std": self.image_std},
                                          sort_keys=True).encode())
            for k, v in sorted(self.model.state_dict().items()):
                t = v.detach().to("cpu").contiguous()
                h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint


# ----------------------------------------------------------------------------- loading
def find_hf_folder(path: str | os.PathLike, help: str = HELP) -> Path:
    """The Hugging Face CLIP folder at ``path`` or ``path/pipeline`` (a task clip run)."""
    d = Path(path)
    if not d.exists():
        raise T2IError(f"CLIP weights not found: {d} ({help})")
    if not d.is_dir():
        raise T2IError(f"CLIP weights {d} is a file, not a folder (an open_clip checkpoint is given as ARCH:{d}; {help})")
    if not (d / "config.json").is_file() and (d / "pipeline" / "config.json").is_file():
        d = d / "pipeline"
    return d


def image_statistics(d: Path) -> tuple[list, list]:
    """(image_mean, image_std) of ``preprocessor_config.json`` (or the image_processor of ``processor_config.json``)."""
    if (d / "preprocessor_config.json").is_file():
        path = d / "preprocessor_config.json"
        pre = _read_json(path)
    elif (d / "processor_config.json").is_file():
        path = d / "processor_config.json"
        pre = _read_json(path).get("image_processor", {})
    else:
        raise T2IError(f"{d}: no preprocessor_config.json: the CLIP image preprocessing is missing")
    mean, std = pre.get("image_mean", list(OPENAI_MEAN)), pre.get("image_std", list(OPENAI_STD))
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3
            and all(isinstance(x, (int, float)) for x in mean + std)):
        raise T2IError(f"{path}: image_mean / image_std must be lists of 3 numbers")
    return mean, std


def load_hf_clip(path: str | os.PathLike, help: str = HELP):
    """(CLIPModel, tokenizer, image mean, image std, folder) of a Hugging Face CLIP folder, checked file by file;
    ``help`` ends the messages about a missing folder."""
    d = find_hf_folder(path, help)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise T2IError(f"{d} has no config.json: not a Hugging Face CLIP folder ({help})")
    cfg = _read_json(cfg_path)
    if cfg.get("model_type") != "clip":
        raise T2IError(f"{cfg_path}: model_type is {cfg.get('model_type')!r}, not 'clip': not a CLIP model")
    weights = [f for f in WEIGHT_FILES if (d / f).is_file()]
    if not weights:
        raise T2IError(f"{d}: no model.safetensors / pytorch_model.bin: no CLIP weights")
    if not ((d / "tokenizer.json").is_file() or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file())):
        raise T2IError(f"{d}: no vocab.json + merges.txt (or tokenizer.json): the CLIP tokenizer is missing")
    mean, std = image_statistics(d)
    tr = import_transformers()
    wfile = d / weights[0]
    try:
        model, info = tr.CLIPModel.from_pretrained(str(d), local_files_only=True, output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - transformers/safetensors/torch raise many types for foreign or corrupt files
        raise T2IError(f"{d}: cannot load the CLIP weights in {wfile.name} ({_first_line(e)})") from None
    missing = list(info.get("missing_keys") or [])
    wrong = [str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or []]
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or wrong:
        eg = (sorted(missing) + sorted(wrong))[0]
        raise T2IError(f"{d}: the weights in {wfile.name} do not match config.json ({len(missing)} missing, {len(wrong)} of the "
                       f"wrong shape, e.g. {eg})")
    try:
        tok = tr.CLIPTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - the tokenizers backend raises its own types for bad files
        raise T2IError(f"{d}: cannot read the CLIP tokenizer files ({_first_line(e)})") from None
    if len(tok) > model.config.text_config.vocab_size:
        raise T2IError(f"{d}: the tokenizer has {len(tok)} tokens but the text model only "
                       f"{model.config.text_config.vocab_size}")
    return model, tok, mean, std, d


def _hf_tokenize(tok, context: int):
    def run(captions: list[str]) -> dict[str, torch.Tensor]:
        t = tok(captions, padding=True, truncation=True, max_length=context, return_tensors="pt")
        return {"input_ids": t["input_ids"].long(), "attention_mask": t["attention_mask"].long()}
    return run


def _open_clip_tokenize(context: int):
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        raise T2IError('an open_clip checkpoint needs the open_clip package for its tokenizer: '
                       'pip install "t2igan[clip]"') from None
    tok = SimpleTokenizer(context_length=context)

    def run(captions: list[str]) -> dict[str, torch.Tensor]:
        ids = tok(captions).long()  # (B, context), zero-padded; the end token has the highest id
        end = ids.argmax(dim=-1)
        mask = torch.arange(ids.size(1))[None, :] <= end[:, None]
        return {"input_ids": ids, "attention_mask": mask.long()}
    return run


def load_clip(source: str | os.PathLike, device: str | torch.device = "cpu") -> CLIPBundle:
    """A frozen CLIP from a Hugging Face CLIP folder (or a run holding one in ``pipeline/``) or from
    ``ARCH:FILE`` (an open_clip checkpoint); every bad input is one T2IError line."""
    s = str(source).strip()
    if not s:
        raise T2IError(f"empty CLIP source; {HELP}")
    if is_open_clip_source(s):
        from t2igan.convert.open_clip import convert_open_clip

        arch, _, path = s.partition(":")
        p = Path(path)
        model, info = convert_open_clip(arch, p)
        if model.config.text_config.vocab_size != 49408:
            raise T2IError(f"{p}: a text vocabulary of {model.config.text_config.vocab_size} tokens, not open_clip's "
                           "CLIP BPE (49408); convert it to a Hugging Face folder with its own tokenizer")
        bundle = CLIPBundle(model, _open_clip_tokenize(info["context_length"]), f"clip:{s}", info["image_mean"],
                            info["image_std"], {"format": "open_clip", "arch": arch})
    else:
        model, tok, mean, std, _d = load_hf_clip(s)
        context = int(model.config.text_config.max_position_embeddings)
        bundle = CLIPBundle(model, _hf_tokenize(tok, context), f"clip:{s}", mean, std,
                            {"format": "hf", "vocab": len(tok)})
    return bundle.to(device)


# ----------------------------------------------------------------------------- the caption encoder
class CLIPCaptionEncoder(CaptionEncoder):
    """The text spec ``clip:SOURCE``: sentence = the L2-normalised projected text embedding (the space
    of :meth:`CLIPBundle.encode_image`), words = last-layer token states after the final layer norm
    (text width), masked up to and including the end token. Frozen."""

    name = "clip"
    frozen = True

    def __init__(self, clip: CLIPBundle, normalize: bool = True):
        super().__init__()
        self.clip = clip
        self.model = clip.model  # a submodule: moves with .to(), hashed by fingerprint()
        self.normalize = normalize
        self.sentence_dim, self.word_dim = clip.embed_dim, clip.text_width
        self.spec = clip.spec

    def identity(self) -> dict:
        return {"name": self.name, **self.clip.source, "normalize": self.normalize}

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def encode(self, captions: list[str]) -> TextFeatures:
        words, sent, mask = self.clip.text_states(check_captions(captions))
        if self.normalize:
            sent = F.normalize(sent, dim=-1)
        return TextFeatures(words * mask[..., None], sent, mask)
