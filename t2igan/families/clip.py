"""CLIP (Radford et al., ICML 2021) trained here on a caption dataset, task ``clip``: a small
``transformers.CLIPModel`` learnt from images and captions only (never the attribute labels) with
the symmetric contrastive (InfoNCE) loss and a learnable temperature.

Its export (``RUN/pipeline``) is a complete Hugging Face CLIP folder (``save_pretrained`` +
``vocab.json``/``merges.txt`` + ``preprocessor_config.json``, and the project's ``model_index.json``,
family ``clip``): ``load_clip("RUN")``, ``text_encoder: clip:RUN`` and plain
``transformers.CLIPModel.from_pretrained("RUN/pipeline")`` read it, the same way as a real
pretrained CLIP folder. The tokenizer is a CLIP-format BPE learnt from the training captions at
build time (:mod:`t2igan.text.clip_bpe`). At every export the caption -> image retrieval of the
test split (when the dataset has one) is written to ``RUN/clip_eval.json``.

Choices where the paper is silent for a model this small: one random caption per image per step
(the data layer draws it), pairs in a batch whose caption texts are identical are not negatives
of each other (masked out of both softmaxes), AdamW with CLIP's betas/eps and weight decay on
matrices only (not on gains, biases or the temperature), linear warmup then cosine decay to
``train.max_steps``; the temperature is clamped to 100 (CLIP's ceiling).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import (
    DataConfig,
    OptimConfig,
    TrainConfig,
    at_least,
    in_range,
    positive,
)
from t2igan.core.distributed import all_gather_rows, all_gather_rows_autograd
from t2igan.core.folder import write_model_index
from t2igan.data.dataset import Batch
from t2igan.data.text import Vocabulary
from t2igan.families.base import Family, StepBase
from t2igan.text.clip import OPENAI_MEAN, OPENAI_STD, save_hf_clip
from t2igan.text.clip_bpe import BOS, EOS, MAX_VOCAB, build_clip_bpe

EVAL_FILE = "clip_eval.json"
ACTS = ("quick_gelu", "gelu")
SCHEDULES = ("cosine", "constant")


@dataclass
class CLIPModelConfig:
    """The two towers of ``transformers.CLIPModel`` (image side = data.image_size)."""

    patch_size: int = positive(8)  # ViT patch side (data.image_size must be a multiple)
    vision_width: int = positive(128)  # image transformer width (hidden_size)
    vision_layers: int = positive(4)  # image transformer blocks
    vision_heads: int = positive(4)  # image attention heads (must divide vision_width)
    text_width: int = positive(128)  # text transformer width
    text_layers: int = positive(4)  # text transformer blocks
    text_heads: int = positive(4)  # text attention heads (must divide text_width)
    mlp_ratio: int = positive(4)  # MLP hidden = mlp_ratio x width (CLIP: 4)
    projection_dim: int = positive(128)  # joint embedding width (CLIP's embed_dim)
    context_length: int = at_least(32, 4)  # text positions: start token + caption tokens + end token (CLIP: 77)
    vocab_size: int = at_least(MAX_VOCAB, 514)  # at most this many BPE tokens (bytes + merges + 2 specials)
    hidden_act: str = "quick_gelu"  # quick_gelu (OpenAI CLIP) | gelu
    logit_scale_init: float = in_range(2.6592, 0, 4.6052)  # log(1 / 0.07): CLIP's initial temperature
    max_logit_scale: float = positive(100.0)  # the temperature's ceiling (CLIP: 100)


@dataclass
class CLIPScheduleConfig:
    kind: str = "cosine"  # cosine (to 0 at train.max_steps) | constant, after the warmup
    warmup_steps: int = at_least(100, 0)  # linear warmup from 0


@dataclass
class CLIPEvalConfig:
    max_images: int = at_least(2000, 0)  # test images in the export's retrieval (0 = none, skip it)
    batch_size: int = positive(256)


@dataclass
class CLIPRunConfig:
    task: str = "clip"
    data: DataConfig = field(default_factory=lambda: DataConfig(crop=False))
    model: CLIPModelConfig = field(default_factory=CLIPModelConfig)
    schedule: CLIPScheduleConfig = field(default_factory=CLIPScheduleConfig)
    eval: CLIPEvalConfig = field(default_factory=CLIPEvalConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=5e-4, beta1=0.9, beta2=0.98, weight_decay=0.2))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/clip_synth64", ema_decay=0.0,
                                                                   batch_size=128, max_steps=2000, sample_every=0))


def check_config(cfg) -> None:
    """One line per bad value, before anything is built or written."""
    m = cfg.model
    if m.hidden_act not in ACTS:
        raise T2IError(f"model.hidden_act={m.hidden_act!r}: one of {', '.join(ACTS)}")
    if cfg.schedule.kind not in SCHEDULES:
        raise T2IError(f"schedule.kind={cfg.schedule.kind!r}: one of {', '.join(SCHEDULES)}")
    if cfg.data.image_size % m.patch_size:
        raise T2IError(f"model.patch_size={m.patch_size} does not divide data.image_size={cfg.data.image_size}")
    for tower in ("vision", "text"):
        w, h = getattr(m, f"{tower}_width"), getattr(m, f"{tower}_heads")
        if w % h:
            raise T2IError(f"model.{tower}_heads={h} does not divide model.{tower}_width={w}")
    if cfg.data.num_scales != 1:
        raise T2IError(f"data.num_scales={cfg.data.num_scales}: task clip trains on one image size (1)")
    if cfg.train.ema_decay:
        raise T2IError(f"train.ema_decay={cfg.train.ema_decay}: task clip keeps no EMA (0)")


def clip_config(cfg, vocab: dict[str, int]):
    """The ``transformers.CLIPConfig`` of a run config and its tokenizer vocabulary."""
    import transformers

    m = cfg.model
    return transformers.CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": m.text_width,
                     "intermediate_size": m.mlp_ratio * m.text_width, "num_hidden_layers": m.text_layers,
                     "num_attention_heads": m.text_heads, "max_position_embeddings": m.context_length,
                     "hidden_act": m.hidden_act, "bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS],
                     "pad_token_id": vocab[EOS]},
        vision_config={"hidden_size": m.vision_width, "intermediate_size": m.mlp_ratio * m.vision_width,
                       "num_hidden_layers": m.vision_layers, "num_attention_heads": m.vision_heads,
                       "image_size": cfg.data.image_size, "patch_size": m.patch_size, "hidden_act": m.hidden_act},
        projection_dim=m.projection_dim, logit_scale_init_value=m.logit_scale_init)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor,
                     same: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE on L2-normalised (B, E) embeddings: mean of the image->text and
    text->image cross-entropies of ``exp(logit_scale) * img @ txt.T``; ``same``: (B, B) bool of
    off-diagonal pairs that are no negatives (left out). Returns (loss, i2t accuracy, t2i accuracy)."""
    logits = logit_scale.exp() * img @ txt.t()  # (B, B)
    if same is not None:
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(img), device=img.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    with torch.no_grad():
        i2t = (logits.argmax(1) == target).float().mean()
        t2i = (logits.argmax(0) == target).float().mean()
    return loss, i2t, t2i


def normalize_pixels(images: torch.Tensor, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    """(B, 3, S, S) in [-1, 1] -> CLIP's normalised input."""
    x = (images.float() + 1) / 2
    return (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)


class CLIPStep(StepBase):
    """One contrastive step of a ``transformers.CLIPModel`` on a batch of (image, one of its captions).

    Under torchrun every image is contrasted with every caption of the global batch: each process
    embeds its rows, the embeddings are all-gathered (gradients sent back to the process that
    computed a row) and every process computes the global batch's loss. A gathered row's gradient
    then comes back summed over the W processes (W times the one-process gradient of that row),
    while the temperature's is the global loss's own on every process; the average of
    :meth:`optimize` (``manual_sync``: the towers are called through ``vision_model`` /
    ``text_model``, not a ``forward`` a DDP wrapper would see) makes both the one-process gradient."""

    switches = frozenset({"precision", "ddp"})
    manual_sync = True

    def __init__(self, cfg, captions: list[list[str]], vocab: dict[str, int], merges: list[tuple[str, str]], test=None):
        super().__init__()
        import transformers

        self.cfg, self.captions, self.vocab, self.merges, self.test = cfg, captions, vocab, merges, test
        self.model = transformers.CLIPModel(clip_config(cfg, vocab))
        self.tokenizer = transformers.CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m) for m in merges],
                                                    model_max_length=cfg.model.context_length)
        self.modules = {"clip": self.model}
        o = cfg.optim
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in n or "bias" in n or "logit_scale" in n else decay).append(p)
        self.optimizers = {"adamw": torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr_g, betas=(o.beta1, o.beta2), eps=1e-6)}
        self.max_steps = cfg.train.max_steps

    def wrap(self, fn) -> None:
        """No wrappers (``manual_sync``); under torchrun (the process group joined) every process must
        hold the same BPE, each having learnt its own from the captions at build time."""
        if self.world.distributed:
            import torch.distributed as dist

            mine = hashlib.sha256(json.dumps([self.vocab, self.merges], sort_keys=True).encode()).hexdigest()
            every = [None] * self.world.size
            dist.all_gather_object(every, mine)
            if len(set(every)) > 1:
                raise T2IError(f"task clip under torchrun: the {self.world.size} processes learnt different BPE "
                               "tokenizers from the captions; train one process first (RUN/pipeline) and --resume")
        super().wrap(fn)

    def tokenize(self, texts: list[str], device) -> dict[str, torch.Tensor]:
        t = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.model.context_length,
                           return_tensors="pt")
        return {"input_ids": t["input_ids"].to(device), "attention_mask": t["attention_mask"].to(device)}

    def embed(self, pixel_values: torch.Tensor, tokens: dict[str, torch.Tensor]):
        m = self.model
        img = m.visual_projection(m.vision_model(pixel_values=pixel_values).pooler_output)
        txt = m.text_projection(m.text_model(**tokens).pooler_output)
        return F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)

    def lr_at(self, step: int) -> float:
        s, base = self.cfg.schedule, self.cfg.optim.lr_g
        if s.warmup_steps and step < s.warmup_steps:
            return base * (step + 1) / s.warmup_steps
        if s.kind == "constant":
            return base
        span = max(1, self.max_steps - s.warmup_steps)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - s.warmup_steps) / span)))

    def texts_of(self, index: torch.Tensor, caption_index: torch.Tensor) -> list[str]:
        """The caption texts of batch rows (image index, caption index), read with one device sync."""
        return [self.captions[i][j] for i, j in zip(index.tolist(), caption_index.tolist())]

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        self.step_now = step
        images = batch.images[-1]
        tokens = self.tokenize(self.texts_of(batch.index, batch.caption_index), images.device)
        with self.autocast():
            img, txt = self.embed(normalize_pixels(images), tokens)
        index, caption_index = batch.index, batch.caption_index
        if self.world.distributed:  # the global batch's rows, in its order, on every process
            img, txt = all_gather_rows_autograd(img, self.world), all_gather_rows_autograd(txt, self.world)
            index, caption_index = (all_gather_rows(t.to(images.device), self.world) for t in (index, caption_index))
        texts = self.texts_of(index, caption_index)
        same = torch.tensor([[a == b for b in texts] for a in texts], device=images.device)
        same.fill_diagonal_(False)  # identical caption texts of two images: no negatives of each other
        loss, i2t, t2i = contrastive_loss(img, txt, self.model.logit_scale.float(), same)
        opt = self.optimizers["adamw"]
        for g in opt.param_groups:
            g["lr"] = self.lr_at(step)
        self.optimize("adamw", loss, clip=(list(self.model.parameters()), self.cfg.optim.grad_clip)
                      if self.cfg.optim.grad_clip > 0 else None)
        self.precision.update()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(self.cfg.model.max_logit_scale))
        return {"loss": loss.detach(), "i2t_acc": i2t, "t2i_acc": t2i,
                "logit_scale": self.model.logit_scale.detach().exp()}

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def retrieval(self) -> dict | None:
        """Caption -> image retrieval on the test split: every caption of the first ``eval.max_images``
        test images ranks those images by cosine similarity; hit@k = its own image among the k nearest."""
        from t2igan.eval.retrieval import retrieval_hits

        if self.test is None or self.cfg.eval.max_images == 0:
            return None
        data = self.test
        n = min(len(data), self.cfg.eval.max_images)
        images = data.images_uint8(self.cfg.data.image_size)[:n]
        dev = next(self.model.parameters()).device
        was = self.model.training
        self.model.eval()
        try:
            bs = self.cfg.eval.batch_size
            gal = []
            for i in range(0, n, bs):
                x = torch.from_numpy(images[i:i + bs].copy()).permute(0, 3, 1, 2).to(dev).float() / 127.5 - 1
                m = self.model
                gal.append(F.normalize(m.visual_projection(m.vision_model(pixel_values=normalize_pixels(x)).pooler_output),
                                       dim=-1).float().cpu())
            texts = [c for i in range(n) for c in data.captions[i]]
            target = torch.tensor([i for i in range(n) for _ in data.captions[i]])
            q = []
            for i in range(0, len(texts), bs):
                t = self.tokenize(texts[i:i + bs], dev)
                q.append(F.normalize(self.model.text_projection(self.model.text_model(**t).pooler_output),
                                     dim=-1).float().cpu())
        finally:
            self.model.train(was)
        r = retrieval_hits(torch.cat(q), torch.cat(gal), target, ks=(1, 5))
        return {"protocol": (f"caption -> image retrieval on split test: each of the {len(texts)} captions of the first "
                             f"{n} test images ranks those {n} images by cosine similarity of the projected CLIP "
                             "embeddings; hit@k = its own image among the k nearest; chance@k = k / n"),
                "split": "test", "n_images": n, "n_captions": len(texts), "steps": self.step_now + 1,
                "top1": r["hit@1"], "top5": r["hit@5"], "chance@1": r["chance@1"], "chance@5": r["chance@5"]}

    def export(self, directory: Path, ema) -> None:
        d = Path(directory)
        save_hf_clip(d, self.model, OPENAI_MEAN, OPENAI_STD, vocab=self.vocab, merges=self.merges)
        write_model_index(d, family="clip", image_size=self.cfg.data.image_size,
                          projection_dim=self.cfg.model.projection_dim)
        r = self.retrieval()
        if r is not None:
            ckpt.write_json(Path(self.cfg.train.out_dir) / EVAL_FILE, r)


def _read_tokenizer(d: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = ckpt.read_json(d / "vocab.json")
    lines = (d / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(x.split(" ", 1)) for x in lines if x and not x.startswith("#version")]
    return vocab, merges


def build(cfg, data, resume: bool):
    """(CLIPStep, Vocabulary) of a ``task: clip`` run: the BPE learnt from the training captions (read
    back from ``RUN/pipeline`` on resume)."""
    from t2igan.data.birds import load_any

    check_config(cfg)
    pipe = Path(cfg.train.out_dir) / "pipeline"
    if resume and (pipe / "vocab.json").is_file() and (pipe / "merges.txt").is_file():
        vocab, merges = _read_tokenizer(pipe)
    else:
        vocab, merges = build_clip_bpe((c for caps in data.captions for c in caps), vocab_size=cfg.model.vocab_size)
    test = None
    if cfg.eval.max_images and cfg.data.split != "test":
        try:
            test = load_any(cfg.data.root, "test")
        except T2IError:
            test = None  # no test split: no retrieval numbers
    words = Vocabulary.build((c for caps in data.captions for c in caps), cfg.data.min_word_count)
    return CLIPStep(cfg, data.captions, vocab, merges, test), words


FAMILY = Family(
    name="clip", title="CLIP", paper="Radford et al., CLIP, ICML 2021", config=CLIPRunConfig, build=build, step=CLIPStep,
    outputs=("clip",), text="trains", preset="configs/clip_synth64.yaml",
)
