"""open_clip ViT CLIP checkpoints -> ``transformers.CLIPModel`` (a declared key table, strict).

    model, info = convert_open_clip("ViT-B-32-quickgelu", "open_clip_model.safetensors")
    write_hf_folder("ViT-B-32-quickgelu", "open_clip_model.pt", "weights/clip-b32")  # a Hugging Face CLIP folder

The file is a state dict of ``open_clip.model.CLIP`` with its built-in towers (a ViT image tower,
CLIP's causal text transformer), as ``.safetensors`` or a tensors-only ``.pt``/``.bin``
(``torch.load(weights_only=True)``). The architecture comes from the state dict's shapes (widths,
depths, patch size, image size, context length, vocabulary, projection); what shapes do not tell
comes from open_clip's model config of ``ARCH`` when open_clip knows the name: attention heads
(else width / 64, open_clip's default head width) and the activation: QuickGELU for OpenAI
weights (open_clip's ``*-quickgelu`` names, ``quick_gelu: true``), GELU otherwise.

The table (:data:`TABLE`): every target weight filled once with its shape, every source key used
(the attention's packed ``in_proj`` is first split into q / k / v rows, :func:`split_in_proj`).
Towers the table cannot express (layer scale, attentional pooling, ResNet/timm/HF towers, SigLIP's
logit bias) leave keys that fit nothing, and the file is refused in one line.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.weights import load_state_strict
from t2igan.text.clip_bpe import OPENAI_MEAN, OPENAI_STD, save_hf_clip

Tensor = torch.Tensor
T = torch.t  # (in, out) projection matrix -> nn.Linear weight (out, in)


@dataclass(frozen=True)
class Rule:
    """Source keys matching ``pattern`` (full match) go to ``target`` (``\\1`` groups) through ``transform``."""

    pattern: str
    target: str
    transform: Callable[[Tensor], Tensor] | None = None


@dataclass(frozen=True)
class KeyTable:
    """A declared source -> target key mapping; :meth:`apply` loads a module only when every target
    weight is filled exactly once with its shape and every source key is used or ignored on purpose."""

    rules: tuple
    ignore: tuple = ()
    optional: tuple = ()  # target keys a file may lack (kept at their initial value)

    def apply(self, state: dict[str, Tensor], module: torch.nn.Module, source: str, what: str) -> int:
        own = module.state_dict()
        out, origin, unknown = {}, {}, []
        rules = [(re.compile(r.pattern), r) for r in self.rules]
        for k, v in state.items():
            if any(re.fullmatch(p, k) for p in self.ignore):
                continue
            for rx, rule in rules:
                m = rx.fullmatch(k)
                if m is not None and (t := m.expand(rule.target)) in own:
                    if t in out:
                        raise T2IError(f"{source}: {origin[t]!r} and {k!r} both map to {t!r}")
                    out[t], origin[t] = (rule.transform(v) if rule.transform else v), k
                    break
            else:
                unknown.append(k)
        missing = [t for t in own if t not in out and not any(re.fullmatch(p, t) for p in self.optional)]
        if unknown or missing:
            parts = ([f"{len(unknown)} of its {len(state)} keys fit nothing (e.g. {', '.join(map(repr, unknown[:3]))})"]
                     if unknown else [])
            parts += [f"{len(missing)} of the {len(own)} weights are missing (e.g. {', '.join(map(repr, missing[:3]))})"] \
                if missing else []
            raise T2IError(f"{source}: not {what}: {'; '.join(parts)}")
        for t, v in out.items():
            if tuple(v.shape) != tuple(own[t].shape):
                raise T2IError(f"{source}: {origin[t]!r} has shape {tuple(v.shape)}, {what} of this configuration "
                               f"expects {tuple(own[t].shape)} for {t!r}")
            if not v.is_floating_point():
                raise T2IError(f"{source}: {origin[t]!r} is {str(v.dtype).removeprefix('torch.')}, not a float tensor")
        full = {t: out[t].to(own[t].dtype).contiguous().clone() if t in out else own[t].clone() for t in own}
        load_state_strict(module, full, source)
        return len(out)

_V, _L = r"visual\.transformer\.resblocks\.(\d+)\.", r"transformer\.resblocks\.(\d+)\."
_BLOCK = [  # open_clip ResidualAttentionBlock -> transformers CLIPEncoderLayer
    (r"ln_1\.(weight|bias)", r"layer_norm1.\2"),
    (r"attn\.in_proj_(weight|bias)\.(q|k|v)", r"self_attn.\3_proj.\2"),
    (r"attn\.out_proj\.(weight|bias)", r"self_attn.out_proj.\2"),
    (r"ln_2\.(weight|bias)", r"layer_norm2.\2"),
    (r"mlp\.c_fc\.(weight|bias)", r"mlp.fc1.\2"),
    (r"mlp\.c_proj\.(weight|bias)", r"mlp.fc2.\2"),
]
TABLE = KeyTable(
    rules=(
        Rule(r"logit_scale", "logit_scale"),
        # text tower
        Rule(r"token_embedding\.weight", "text_model.embeddings.token_embedding.weight"),
        Rule(r"positional_embedding", "text_model.embeddings.position_embedding.weight"),
        *[Rule(_L + src, r"text_model.encoder.layers.\1." + dst) for src, dst in _BLOCK],
        Rule(r"ln_final\.(weight|bias)", r"text_model.final_layer_norm.\1"),
        Rule(r"text_projection", "text_projection.weight", T),
        # image tower
        Rule(r"visual\.class_embedding", "vision_model.embeddings.class_embedding"),
        Rule(r"visual\.conv1\.weight", "vision_model.embeddings.patch_embedding.weight"),
        Rule(r"visual\.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
        Rule(r"visual\.ln_pre\.(weight|bias)", r"vision_model.pre_layrnorm.\1"),
        *[Rule(_V + src, r"vision_model.encoder.layers.\1." + dst) for src, dst in _BLOCK],
        Rule(r"visual\.ln_post\.(weight|bias)", r"vision_model.post_layernorm.\1"),
        Rule(r"visual\.proj", "visual_projection.weight", T),
    ),
    ignore=(r"attn_mask",),  # the causal mask buffer of older open_clip versions (rebuilt by transformers)
    optional=(r".*position_ids",),
)

# open_clip config values the table cannot express (the key names would still fit): refused
_UNSUPPORTED_VISION = {"pool_type": "tok", "final_ln_after_pool": False, "no_ln_pre": False, "attentional_pool": False,
                       "pos_embed_type": "learnable", "ls_init_value": None, "qk_norm": False, "scaled_cosine_attn": False,
                       "scale_heads": False, "scale_attn": False, "scale_fc": False, "scale_attn_inner": False,
                       "act_kwargs": None, "norm_kwargs": None, "block_type": None, "timm_model_name": None}
_UNSUPPORTED_TEXT = {"pool_type": "argmax", "final_ln_after_pool": False, "embed_cls": False, "no_causal_mask": False,
                     "proj_bias": False, "proj_type": "linear", "ls_init_value": None, "qk_norm": False,
                     "act_kwargs": None, "norm_kwargs": None, "block_type": None, "hf_model_name": None,
                     "hf_tokenizer_name": None, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn": False,
                     "scale_fc": False, "scale_attn_inner": False}


def read_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict in an open_clip checkpoint file (``.safetensors``, or a tensors-only torch file)."""
    p = Path(path)
    if not p.is_file():
        raise T2IError(f"CLIP checkpoint not found: {p} (give a local open_clip checkpoint file, "
                       ".safetensors/.pt/.bin; nothing is downloaded)")
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for foreign bytes
            raise T2IError(f"{p}: not a checkpoint of open_clip (unreadable safetensors file: "
                           f"{e.__class__.__name__})") from None
    if p.stat().st_size == 0:
        raise T2IError(f"{p}: empty file, not a checkpoint of open_clip")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)  # tensors only: no code runs
    except Exception as e:  # noqa: BLE001 - torch raises many types for pickles with code, truncated or foreign files
        raise T2IError(f"{p}: not a checkpoint of open_clip (not a tensors-only torch file: {e.__class__.__name__})") from None
    for key in ("state_dict", "model"):  # open_clip's training checkpoints: {"epoch", "state_dict", ...}
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise T2IError(f"{p}: not a checkpoint of open_clip (no state dict of tensors in it)")
    if all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def split_in_proj(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """``*.attn.in_proj_{weight,bias}`` (q, k, v rows packed) -> ``*.attn.in_proj_{weight,bias}.{q,k,v}``."""
    out = {}
    for k, v in state.items():
        if k.endswith((".attn.in_proj_weight", ".attn.in_proj_bias")):
            if v.shape[0] % 3:
                raise T2IError(f"{source}: {k!r} has shape {tuple(v.shape)}, not 3 x width rows (q, k, v)")
            for name, part in zip("qkv", v.chunk(3, dim=0)):
                out[f"{k}.{name}"] = part
        else:
            out[k] = v
    return out


def arch_config(arch: str) -> dict | None:
    """open_clip's model config of ``arch`` (None when open_clip or the name is unknown)."""
    try:
        import open_clip
    except ImportError:
        return None
    try:
        return open_clip.get_model_config(arch)
    except Exception:  # noqa: BLE001 - an unknown name (open_clip raises several types)
        return None


def _layers(state, prefix: str) -> int:
    n = 0
    while f"{prefix}{n}.ln_1.weight" in state:
        n += 1
    return n


def config_from_state(state: dict[str, Tensor], source: str, arch: str, cfg: dict | None):
    """The ``transformers.CLIPConfig`` of an open_clip ViT CLIP state dict (shapes + open_clip's config)."""
    import transformers

    what = "a checkpoint of open_clip"
    if cfg is not None:
        if cfg.get("custom_text") or "hf_model_name" in cfg.get("text_cfg", {}) or "timm_model_name" in cfg.get("vision_cfg", {}):
            raise T2IError(f"open_clip {arch}: only CLIP models with built-in ViT image and text transformers are supported")
        if not isinstance(cfg.get("vision_cfg", {}).get("layers", 0), int):
            raise T2IError(f"open_clip {arch}: a ResNet image tower; only ViT towers are supported")
        for section, table in (("vision_cfg", _UNSUPPORTED_VISION), ("text_cfg", _UNSUPPORTED_TEXT)):
            for key, ok in table.items():
                if cfg.get(section, {}).get(key, ok) != ok:
                    raise T2IError(f"open_clip {arch}: {section}.{key}={cfg[section][key]!r} is not supported "
                                   f"(transformers' CLIPModel has {key}={ok!r})")
        if "init_logit_bias" in cfg:
            raise T2IError(f"open_clip {arch}: a SigLIP model (logit bias); only CLIP models are supported")
    for key in ("token_embedding.weight", "visual.conv1.weight", "text_projection", "visual.proj"):
        if key not in state:
            raise T2IError(f"{source}: not {what} with ViT towers (no '{key}')")
    vocab, width = state["token_embedding.weight"].shape
    vwidth, channels, patch, patch2 = state["visual.conv1.weight"].shape
    n_pos = state["visual.positional_embedding"].shape[0] if "visual.positional_embedding" in state else 0
    side = math.isqrt(max(n_pos - 1, 0))
    if patch != patch2 or side * side != n_pos - 1 or channels != 3:
        raise T2IError(f"{source}: not {what} with a square ViT image tower (conv1 {tuple(state['visual.conv1.weight'].shape)}, "
                       f"{n_pos} positions)")
    ctx = state["positional_embedding"].shape[0] if "positional_embedding" in state else 0
    proj = state["text_projection"]
    if proj.dim() != 2 or state["visual.proj"].dim() != 2 or proj.shape[1] != state["visual.proj"].shape[1]:
        raise T2IError(f"{source}: not {what}: text_projection {tuple(proj.shape)} and visual.proj "
                       f"{tuple(state['visual.proj'].shape)} do not give one embedding width")
    vc, tc = (cfg or {}).get("vision_cfg", {}), (cfg or {}).get("text_cfg", {})
    vheads = vwidth // int(vc.get("head_width", 64))
    theads = int(tc.get("heads", max(1, width // 64)))
    quick = bool((cfg or {}).get("quick_gelu", False)) or arch.lower().endswith("-quickgelu")
    vl, tl = _layers(state, "visual.transformer.resblocks."), _layers(state, "transformer.resblocks.")
    if not vl or not tl:
        raise T2IError(f"{source}: not {what}: no transformer blocks (visual.transformer.resblocks.0 / transformer.resblocks.0)")
    act = "quick_gelu" if quick else "gelu"
    return transformers.CLIPConfig(
        text_config={"vocab_size": int(vocab), "hidden_size": int(width), "num_hidden_layers": tl,
                     "num_attention_heads": theads,
                     "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                     "max_position_embeddings": int(ctx), "hidden_act": act, "layer_norm_eps": 1e-5,
                     "bos_token_id": int(vocab) - 2, "eos_token_id": int(vocab) - 1, "pad_token_id": 0},
        vision_config={"hidden_size": int(vwidth), "num_hidden_layers": vl, "num_attention_heads": max(1, vheads),
                       "intermediate_size": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                       "image_size": int(side * patch), "patch_size": int(patch), "hidden_act": act,
                       "layer_norm_eps": 1e-5},
        projection_dim=int(proj.shape[1]))


def convert_open_clip(arch: str, path: str | os.PathLike):
    """(transformers.CLIPModel with the file's weights, info dict: arch, image mean/std, context length)."""
    import transformers

    p = Path(path)
    source = str(p)
    state = read_state(p)
    cfg = arch_config(arch)
    if "logit_bias" in state:
        raise T2IError(f"{source}: a SigLIP checkpoint (logit_bias); only CLIP models are supported")
    config = config_from_state(state, source, arch, cfg)
    tc, vc = config.text_config, config.vision_config
    if tc.hidden_size % tc.num_attention_heads or vc.hidden_size % vc.num_attention_heads:
        raise T2IError(f"{source}: the text/image widths ({tc.hidden_size}, {vc.hidden_size}) do not divide into "
                       f"the heads of open_clip {arch} ({tc.num_attention_heads}, {vc.num_attention_heads})")
    model = transformers.CLIPModel(config)
    TABLE.apply(split_in_proj(state, source), model, source, f"a checkpoint of open_clip {arch} (ViT CLIP)")
    pre = (cfg or {}).get("preprocess_cfg", {})

    info = {"arch": arch, "image_mean": list(pre.get("mean", OPENAI_MEAN)), "image_std": list(pre.get("std", OPENAI_STD)),
            "context_length": int(config.text_config.max_position_embeddings), "quick_gelu": config.text_config.hidden_act == "quick_gelu"}
    return model.eval(), info


# ----------------------------------------------------------------------------- a Hugging Face folder
def write_hf_folder(arch: str, path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert once and write a Hugging Face CLIP folder (weights, OpenAI's BPE as vocab.json + merges.txt,
    preprocessor_config.json) that every tool then reads as ``DIR``."""
    model, info = convert_open_clip(arch, path)  # checked whole before anything is written
    if model.config.text_config.vocab_size != 49408:
        raise T2IError(f"{path}: a text vocabulary of {model.config.text_config.vocab_size} tokens, not open_clip's CLIP BPE")
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.fresh_tmp(final)  # written beside, then swapped in: an existing folder is never half-replaced
    save_hf_clip(tmp, model, info["image_mean"], info["image_std"], open_clip_bpe=True)
    ckpt.replace_dir(tmp, final)
    return final
