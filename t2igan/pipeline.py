"""Pipeline: vocabulary + text encoder + generator, saved and loaded as one folder.

    pipe = Pipeline.from_pretrained("runs/dfgan_synth64")   # a run dir or its pipeline/ dir
    images = pipe(["this flower has red petals"], seed=0, n=4)   # list of PIL images

Folder layout (Hugging Face style)::

    model_index.json      {"family": "dfgan", "image_size": 64, ...}
    vocab.json
    text_encoder/         config.json + model.safetensors
    generator/            config.json + model.safetensors (kind per family: see ``_families``)
    image_encoder/        (DAMSM runs only)

Unknown words in a caption are dropped (as the official AttnGAN/DF-GAN code does) and
reported in ``pipe.last_dropped_words``; a caption with no known word is an error.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from t2igan import T2IError
from t2igan.data.text import Vocabulary
from t2igan.text.damsm import TextEncoder
from t2igan.train import checkpoint as ckpt

MODEL_INDEX = "model_index.json"
MAX_IMAGES_PER_CALL = 4096


def write_model_index(directory: Path, family: str, **info) -> None:
    ckpt.write_json(Path(directory) / MODEL_INDEX, {"format": "t2igan-pipeline", "version": 1, "family": family, **info})


def save_text_encoder(directory: Path, encoder: TextEncoder, args: dict, vocab: Vocabulary, max_words: int) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ckpt.save_component(encoder, directory / "text_encoder", "damsm_text_encoder", {**args, "max_words": max_words})
    vocab.save(directory / "vocab.json")


PRETRAINED_REF = "pretrained_text_encoder"  # text_encoder/config.json naming a frozen encoder spec, no weights


def save_pretrained_text_encoder_ref(directory: Path, spec: str, encoder) -> None:
    """A pipeline whose generator is conditioned on a frozen pretrained encoder (MiniLM, CLIP) stores
    the encoder's spec and fingerprint, not its weights (they come from their own local files)."""
    d = Path(directory) / "text_encoder"
    d.mkdir(parents=True, exist_ok=True)
    ckpt.write_json(d / ckpt.CONFIG, {"kind": PRETRAINED_REF, "spec": spec, "fingerprint": encoder.fingerprint()})


def _pretrained_ref(d: Path):
    p = d / "text_encoder" / ckpt.CONFIG
    if not p.is_file():
        return None
    cfg = ckpt.read_json(p)
    if cfg.get("kind") != PRETRAINED_REF:
        return None
    from t2igan.text.base import load_caption_encoder

    enc = load_caption_encoder(str(cfg.get("spec")))
    if cfg.get("fingerprint") and enc.fingerprint() != cfg["fingerprint"]:
        raise T2IError(f"{p}: the text encoder {cfg.get('spec')!r} found here has other weights than the one "
                       "this model was trained with")
    return enc


def load_text_encoder(directory: str | os.PathLike) -> tuple[TextEncoder, dict, Vocabulary, int]:
    """(encoder in eval mode, constructor args, vocabulary, max_words) from a pipeline/run folder."""
    d = resolve_dir(directory)
    cfg, state = ckpt.read_component(d / "text_encoder", "damsm_text_encoder")
    max_words = int(cfg.pop("max_words", 18))
    vocab = Vocabulary.load(d / "vocab.json")
    try:
        enc = TextEncoder(**cfg)
    except TypeError as e:
        raise T2IError(f"{d / 'text_encoder' / 'config.json'}: bad arguments ({e})") from None
    if enc.ntoken != len(vocab):
        raise T2IError(f"{d}: text encoder has {enc.ntoken} tokens but vocab.json has {len(vocab)} words")
    ckpt.load_state_strict(enc, state, str(d / "text_encoder"))
    return enc.eval(), cfg, vocab, max_words


def load_image_encoder(directory: str | os.PathLike):
    """The DAMSM image encoder (eval mode) saved beside the text encoder of a DAMSM run."""
    from t2igan.text.damsm import ImageEncoder

    d = resolve_dir(directory)
    if not (d / "image_encoder").is_dir():
        raise T2IError(f"{d} has no image_encoder/ (the DAMSM loss needs the image encoder of a DAMSM run)")
    cfg, state = ckpt.read_component(d / "image_encoder", "damsm_image_encoder")
    try:
        enc = ImageEncoder(**cfg)
    except TypeError as e:
        raise T2IError(f"{d / 'image_encoder' / 'config.json'}: bad arguments ({e})") from None
    ckpt.load_state_strict(enc, state, str(d / "image_encoder"))
    return enc.eval()


def load_image_encoder_for(directory: str | os.PathLike, encoder, spec: str):
    """The DAMSM image encoder (eval mode) of a run trained against the frozen caption encoder
    ``encoder`` (task damsm with ``text_encoder: spec``); one trained against another encoder,
    or other weights of it, is refused (the fingerprints differ)."""
    d = resolve_dir(directory)
    p = d / "text_encoder" / ckpt.CONFIG
    ref = ckpt.read_json(p) if p.is_file() else {}
    if ref.get("kind") != PRETRAINED_REF:
        raise T2IError(f"{d}: its image encoder was not trained against a frozen text encoder (no {PRETRAINED_REF} "
                       f"in {p}); train one with task damsm, text_encoder: {spec}")
    if ref.get("fingerprint") != encoder.fingerprint():
        raise T2IError(f"{p}: this image encoder was trained against the text encoder {ref.get('spec')!r}, "
                       f"not {spec!r} (other encoder or other weights)")
    enc = load_image_encoder(d)
    if enc.nef != encoder.sentence_dim:
        raise T2IError(f"{d / 'image_encoder' / ckpt.CONFIG}: nef={enc.nef} but the text encoder {spec!r} "
                       f"gives {encoder.sentence_dim}-d sentence vectors")
    return enc


def resolve_dir(path: str | os.PathLike) -> Path:
    """Accept a pipeline folder or a run folder holding ``pipeline/``."""
    p = Path(path)
    if (p / MODEL_INDEX).is_file():
        return p
    if (p / "pipeline" / MODEL_INDEX).is_file():
        return p / "pipeline"
    if not p.exists():
        raise T2IError(f"model folder not found: {p}")
    raise T2IError(f"{p} is not a t2igan pipeline or run folder (no {MODEL_INDEX} in it or in {p / 'pipeline'})")


def _families() -> dict[str, tuple[str, type]]:
    """family (model_index.json) -> (generator component kind, generator class)."""
    from t2igan.models import attngan, dfgan, gan_int_cls, mirrorgan, stackgan, stackganpp

    return {
        "dfgan": ("dfgan_generator", dfgan.NetG),
        "gan_int_cls": ("gan_int_cls_generator", gan_int_cls.NetG),
        "stackgan_stage1": ("stackgan_stage1_generator", stackgan.STAGE1_G),
        "stackgan_stage2": ("stackgan_stage2_generator", stackgan.STAGE2_G),
        "stackganpp": ("stackganpp_generator", stackganpp.G_NET),
        "attngan": ("attngan_generator", attngan.G_NET),
        "mirrorgan": ("mirrorgan_generator", mirrorgan.G_NET),
    }


def generator_kind(family: str) -> str:
    fams = _families()
    if family not in fams:
        raise T2IError(f"family {family!r} has no generator (known: {', '.join(fams)})")
    return fams[family][0]


def generator_config(g: nn.Module) -> dict:
    """Constructor arguments of a generator (classic families keep them in ``g.config``)."""
    if hasattr(g, "config"):
        return dict(g.config)
    return dict(ngf=g.ngf, nz=g.nz, cond_dim=g.cond_dim, imsize=g.imsize, ch_size=g.ch_size)  # DF-GAN NetG


def _build_generator(family: str, directory: Path) -> nn.Module:
    fams = _families()
    if family not in fams:
        raise T2IError(f"{directory}: family {family!r} has no generator (known: {', '.join(fams)})")
    kind, cls = fams[family]
    cfg, state = ckpt.read_component(directory / "generator", kind)
    try:
        g = cls(**cfg)
    except (TypeError, ValueError) as e:
        raise T2IError(f"{directory / 'generator' / 'config.json'}: bad arguments ({e})") from None
    ckpt.load_state_strict(g, state, str(directory / "generator"))
    return g.eval()


class Pipeline:
    def __init__(self, vocab: Vocabulary, text_encoder: TextEncoder, generator: nn.Module, family: str,
                 max_words: int, info: dict | None = None):
        self.vocab, self.text_encoder, self.generator = vocab, text_encoder.eval(), generator.eval()
        self.family, self.max_words, self.info = family, max_words, dict(info or {})
        self.last_dropped_words: list[str] = []
        # a caption with no known word: "error" (T2IError) or "pad" (encoded as the padding token
        # alone, i.e. the empty caption; evaluation of caption sets uses this)
        self.empty_captions = "error"

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
        d = resolve_dir(path)
        info = ckpt.read_json(d / MODEL_INDEX)
        if info.get("format") != "t2igan-pipeline":
            raise T2IError(f"{d / MODEL_INDEX}: not a t2igan pipeline index")
        family = info.get("family")
        if family == "damsm":
            raise T2IError(f"{d} holds DAMSM encoders (a text/image encoder run), not an image generator")
        if family == "stream":
            raise T2IError(f"{d} holds a STREAM image captioner (MirrorGAN's), not an image generator")
        enc = _pretrained_ref(d)
        if enc is not None:
            vocab, max_words = None, 0
        else:
            enc, _, vocab, max_words = load_text_encoder(d)
        gen = _build_generator(family, d)
        pipe = cls(vocab, enc, gen, family, max_words, info).to(device)
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
        if self.vocab is None:  # a frozen caption-level encoder (t2igan.text.base.CaptionEncoder)
            self.last_dropped_words = []
            f = self.text_encoder.encode(list(captions))
            return f.words_bdt, f.sentence, f.mask
        tokens, lengths, dropped = self.vocab.batch(list(captions), self.max_words, empty=self.empty_captions)
        self.last_dropped_words = dropped
        dev = self.device
        return self.text_encoder(tokens.to(dev), lengths.to(dev))

    def noise(self, count: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(count, self.generator.nz, generator=g)
        if truncation is not None:
            if not truncation > 0:
                raise T2IError(f"truncation must be > 0, got {truncation}")
            z = z.clamp(-truncation, truncation)
        return z

    def latents(self, count: int, seed: int, truncation: float | None = None):
        """``(z [count, nz], eps)`` for ``count`` images from ``seed``: the noise z, and for models with
        conditioning augmentation its noise ``eps [count, sum(eps_dims)]`` (drawn after z from the same
        seed, one block per CA net; None for other models). Same seed, same latents."""
        z = self.noise(count, seed, truncation)
        dims = tuple(getattr(self.generator, "eps_dims", ()))
        if not dims:
            return z, None
        g = torch.Generator().manual_seed(int(seed))
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
        g = self.generator
        if hasattr(g, "branch_num"):  # StackGAN++ / HDGAN / AttnGAN / MirrorGAN tree
            return [g.imsize // 2 ** (g.branch_num - 1 - k) for k in range(g.branch_num)]
        if hasattr(g, "STAGE1_G"):  # StackGAN stage II over a frozen stage I
            return [g.STAGE1_G.imsize, g.imsize]
        return [self.image_size]

    @property
    def attends_words(self) -> bool:
        """True when the generator returns word attention maps (AttnGAN / MirrorGAN with 2+ stages)."""
        from t2igan.models.attngan import G_NET

        return isinstance(self.generator, G_NET) and self.generator.branch_num > 1

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
        if self.vocab is None:
            raise T2IError("save_pretrained: copy the run's pipeline folder instead (this model uses a frozen "
                           "pretrained text encoder)")
        final = Path(directory)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.fresh_tmp(final)
        te = self.text_encoder
        args = dict(ntoken=te.ntoken, ninput=te.ninput, nhidden=te.nef, nlayers=te.nlayers,
                    drop_prob=te.drop.p, bidirectional=te.num_directions == 2)
        save_text_encoder(tmp, te, args, self.vocab, self.max_words)
        g = self.generator
        ckpt.save_component(g, tmp / "generator", generator_kind(self.family), generator_config(g))
        write_model_index(tmp, **{**self.info, "family": self.family})
        ckpt.replace_dir(tmp, final)
