"""Pipeline: text encoder + generator, saved and loaded as one model folder.

    pipe = Pipeline.from_pretrained("runs/dfgan_synth64")   # a run dir or its pipeline/ dir
    images = pipe(["this flower has red petals"], seed=0, n=4)   # list of PIL images

Folder layout (Hugging Face style; :mod:`t2igan.core.folder`)::

    model_index.json      {"family": "dfgan", "image_size": 64, ...}
    text_encoder/         any CaptionEncoder (t2igan.text.spec.load_encoder_dir)
    vocab.json            (DAMSM text encoders)
    generator/            config.json + model.safetensors; its class is the family's (families.registry)

With a DAMSM text encoder unknown words in a caption are dropped (as the official
AttnGAN/DF-GAN code does) and reported in ``pipe.last_dropped_words``; a caption with no
known word is an error.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.folder import read_model_index, write_model_index
from t2igan.families import registry
from t2igan.families.base import generator_kind
from t2igan.text.base import CaptionEncoder
from t2igan.text.spec import load_encoder_dir, save_encoder_dir

MAX_IMAGES_PER_CALL = 4096
MAX_SEED = 2 ** 63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
TRUNCATION_MODES = ("clamp", "truncnorm")


def truncnorm_noise(count: int, nz: int, seed: int, truncation: float) -> torch.Tensor:
    """Official DF-GAN truncated noise (``code/lib/utils.py`` ``truncated_noise(count, nz, truncation,
    seed)``): ``truncation * truncnorm.rvs(-2, 2, size=(count, nz), random_state=RandomState(seed))``."""
    import numpy as np

    try:
        from scipy.stats import truncnorm
    except ImportError:
        raise T2IError("truncation_mode truncnorm (official DF-GAN sampling) needs scipy: "
                       "pip install 't2igan[official]'") from None
    if seed >= 2 ** 32:
        raise T2IError(f"truncation_mode truncnorm draws with numpy's RandomState, whose seed must be < 2**32, got {seed}")
    values = truncnorm.rvs(-2, 2, size=(count, nz), random_state=np.random.RandomState(seed)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(truncation * values))


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise T2IError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r:.40}")
    return seed


def build_generator(family: str, directory: Path) -> nn.Module:
    """The generator of a model folder whose ``model_index.json`` family is ``family``."""
    gens = registry.generators()
    if family not in gens:
        other = registry.of_model(family)
        what = f"holds a {other.title} model ({family}), not an image generator" if other else \
            f"has family {family!r}, which has no generator (known: {', '.join(gens)})"
        raise T2IError(f"{directory} {what}")
    cls = gens[family][1]
    cfg, state = ckpt.read_component(directory / "generator", generator_kind(family))
    try:
        g = cls(**cfg)
    except (TypeError, ValueError) as e:
        raise T2IError(f"{directory / 'generator' / 'config.json'}: bad arguments ({e})") from None
    ckpt.load_state_strict(g, state, str(directory / "generator"))
    return g.eval()


class Pipeline:
    def __init__(self, text_encoder: CaptionEncoder, generator: nn.Module, family: str, info: dict | None = None):
        self.text_encoder, self.generator = text_encoder.eval(), generator.eval()
        self.family, self.info = family, dict(info or {})
        # how --truncation draws the noise: "clamp" (randn clamped to [-t, t]) or "truncnorm" (t * truncnorm(-2, 2)
        # with numpy's RandomState(seed): official DF-GAN sampling; model_index.json of converted DF-GAN folders)
        self.truncation_mode = str(self.info.get("truncation_mode", "clamp"))
        if self.truncation_mode not in TRUNCATION_MODES:
            raise T2IError(f"truncation_mode must be one of {', '.join(TRUNCATION_MODES)}, got {self.truncation_mode!r}")

    # the vocabulary side of a DAMSM text encoder (None / 0 for the others)
    @property
    def vocab(self):
        return getattr(self.text_encoder, "vocab", None)

    @property
    def max_words(self) -> int:
        return int(getattr(self.text_encoder, "max_words", 0))

    @property
    def last_dropped_words(self) -> list[str]:
        return list(self.text_encoder.last_dropped_words)

    @property
    def empty_captions(self) -> str:
        """A caption with no known word: "error" (T2IError) or "pad" (encoded as the padding token
        alone, i.e. the empty caption; evaluation of caption sets uses this). DAMSM encoders only."""
        return getattr(self.text_encoder, "empty_captions", "error")

    @empty_captions.setter
    def empty_captions(self, value: str) -> None:
        if hasattr(self.text_encoder, "empty_captions"):
            self.text_encoder.empty_captions = value

    @property
    def title(self) -> str:
        """Display name of the model's family (``DF-GAN``, ``StackGAN stage I`` ...)."""
        fam = registry.of_model(self.family)
        return fam.title_of(self.family) if fam else self.family

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.info.get("image_size", getattr(self.generator, "imsize", 0)))

    def to(self, device) -> "Pipeline":
        self.text_encoder.to(device)
        self.generator.to(device)
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        fused_upsample: bool = False) -> "Pipeline":
        """``fused_upsample``: run a DF-GAN generator's upsampling blocks in their fused form
        (``train.fused_upsample``: the same function with fewer FLOPs, outputs equal to float
        rounding); refused for a generator that has no such blocks."""
        d, info = read_model_index(path)
        family = str(info.get("family"))
        gen = build_generator(family, d)
        pipe = cls(load_encoder_dir(d), gen, family, info).to(device)
        if fused_upsample:
            try:
                pipe.use_fused_upsample()
            except T2IError as e:
                raise T2IError(f"{d}: {e}") from None
        return pipe

    def use_fused_upsample(self) -> "Pipeline":
        """Switch a DF-GAN generator's upsampling blocks to their fused form (same function, fewer
        FLOPs; ``train.fused_upsample``); refused for a generator that has none."""
        from t2igan.models.dfgan import set_fused_upsample

        if set_fused_upsample(self.generator) == 0:
            raise T2IError(f"fused_upsample is for DF-GAN generators; the {self.family} generator has no upsampling "
                           "block that supports it")
        return self

    @torch.inference_mode()
    def encode(self, captions: list[str]):
        """(words ``[B, Dw, T]``, sentence ``[B, D]``, mask ``[B, T]``) of the captions."""
        f = self.text_encoder.encode(list(captions))
        dev = self.device
        return f.words_bdt.to(dev), f.sentence.to(dev), f.mask.to(dev)

    def noise(self, count: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        """``[count, nz]`` noise from ``seed``; with ``truncation`` clamped to [-t, t], or with
        ``truncation_mode == "truncnorm"`` drawn as the official DF-GAN sampling does."""
        g = torch.Generator().manual_seed(check_seed(seed))
        z = torch.randn(count, self.generator.nz, generator=g)
        if truncation is not None:
            if not truncation > 0:
                raise T2IError(f"truncation must be > 0, got {truncation}")
            if self.truncation_mode == "truncnorm":
                return truncnorm_noise(count, self.generator.nz, seed, truncation)
            z = z.clamp(-truncation, truncation)
        return z

    @property
    def attention_mask(self) -> str:
        """AttnGAN/MirrorGAN word attention over padding: ``corrected`` (default; padded words get 0
        attention) or ``official`` (the official mask tiling; identical outputs to the official code
        for padded batches). Other generators: always ``corrected``."""
        return getattr(self.generator, "attention_mask", "corrected")

    @attention_mask.setter
    def attention_mask(self, value: str) -> None:
        if not hasattr(self.generator, "attention_mask"):
            if value != "corrected":
                raise T2IError(f"attention_mask={value!r} is for AttnGAN/MirrorGAN generators, not {self.family}")
            return
        try:
            self.generator.attention_mask = value
        except ValueError as e:
            raise T2IError(str(e)) from None

    @property
    def last_long_captions(self) -> list[tuple[int, int]]:
        """(caption index, known words) of the last captions longer than ``max_words`` (cut to it,
        unless the vocabulary keeps them whole: ``long_captions="keep"``)."""
        return list(getattr(self.text_encoder, "last_long_captions", []))

    def latents(self, count: int, seed: int, truncation: float | None = None):
        """``(z [count, nz], eps)`` for ``count`` images from ``seed``: the noise z, and for models with
        conditioning augmentation its noise ``eps [count, sum(eps_dims)]`` (drawn after z from the same
        seed, one block per CA net; None for other models). Same seed, same latents."""
        z = self.noise(count, seed, truncation)
        dims = tuple(getattr(self.generator, "eps_dims", ()))
        if not dims:
            return z, None
        g = torch.Generator().manual_seed(check_seed(seed))
        torch.randn(count, self.generator.nz, generator=g)
        return z, torch.cat([torch.randn(count, k, generator=g) for k in dims], 1)

    def _inputs(self, captions, seed: int, n: int, truncation: float | None):
        if isinstance(captions, str):
            captions = [captions]
        if n < 1 or len(captions) * n > MAX_IMAGES_PER_CALL:
            raise T2IError(f"n must be between 1 and {MAX_IMAGES_PER_CALL // max(len(captions), 1)}, got {n}")
        words, sent, mask = self.encode(captions)
        words, sent, mask = (t.repeat_interleave(n, 0) for t in (words, sent, mask))
        z, eps = self.latents(sent.size(0), seed, truncation)
        return z.to(self.device), None if eps is None else eps.to(self.device), sent, words, mask

    @property
    def stage_sizes(self) -> list[int]:
        """Image size of every stage the generator draws, smallest first (one entry: a single-stage model)."""
        return list(getattr(self.generator, "stage_sizes", None) or [self.image_size])

    @property
    def attends_words(self) -> bool:
        """True when the generator returns word attention maps (AttnGAN / MirrorGAN with 2+ stages)."""
        return bool(getattr(self.generator, "returns_attention", False))

    @torch.inference_mode()
    def synthesize(self, z: torch.Tensor, sent: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                   eps: torch.Tensor | None = None):
        """One generator pass on already-encoded text: ``z [B, nz]``, ``sent [B, D]``, ``words [B, D, T]``,
        ``mask [B, T]``, ``eps`` (see :meth:`latents`) -> ``GenOutput``: every stage's images in [-1, 1]
        (smallest first) and the word attention maps per attended stage ``[B, T, h, w]``."""
        from t2igan.models.blocks import GenOutput

        g = self.generator
        if hasattr(g, "run"):
            return g.run(z, sent, words, mask, eps=eps)
        return GenOutput(images=[g(z, sent)])

    @torch.inference_mode()
    def generate_stages(self, captions: list[str], seed: int = 0, n: int = 1, batch_size: int = 64,
                        truncation: float | None = None) -> dict:
        """Every stage's images (smallest first, float [0, 1]) and, for AttnGAN/MirrorGAN, the word
        attention maps per attended stage ``[B, T, h, w]`` (sum to 1 over a caption's words)."""
        z, eps, sent, words, mask = self._inputs(captions, seed, n, truncation)
        stages: list[list[torch.Tensor]] = []
        attention: list[list[torch.Tensor]] = []
        for i in range(0, sent.size(0), batch_size):
            sl = slice(i, i + batch_size)
            out = self.synthesize(z[sl], sent[sl], words[sl], mask[sl], None if eps is None else eps[sl])
            stages.append(out.images)
            attention.append(out.attention)
        images = [torch.cat([b[k] for b in stages]).float().add(1).div(2).clamp(0, 1) for k in range(len(stages[0]))]
        maps = [torch.cat([b[k] for b in attention]).float() for k in range(len(attention[0]))]
        return {"images": images, "attention": maps, "mask": mask}

    @torch.inference_mode()
    def generate(self, captions: list[str], seed: int = 0, n: int = 1, batch_size: int = 64,
                 truncation: float | None = None, return_all_stages: bool = False):
        """Float images in [0, 1], ``[len(captions) * n, 3, S, S]``, caption-major; same seed, same images.
        ``return_all_stages``: a list with every stage's images instead, smallest first."""
        out = self.generate_stages(captions, seed=seed, n=n, batch_size=batch_size, truncation=truncation)
        return out["images"] if return_all_stages else out["images"][-1]

    def __call__(self, captions: list[str], seed: int = 0, n: int = 1, truncation: float | None = None):
        from PIL import Image

        x = self.generate(captions, seed=seed, n=n, truncation=truncation)
        arr = x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in arr]

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the model folder (any text encoder: weights, or the reference of a frozen one)."""
        final = Path(directory)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.fresh_tmp(final)
        save_encoder_dir(tmp, self.text_encoder)
        g = self.generator
        ckpt.save_component(g, tmp / "generator", generator_kind(self.family), dict(g.config))
        write_model_index(tmp, **{**self.info, "family": self.family})
        ckpt.replace_dir(tmp, final)
