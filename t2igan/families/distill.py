"""Distillation: train a text encoder to reproduce given sentence embeddings.

The student is the DAMSM bi-LSTM (:class:`t2igan.text.damsm.TextEncoder`) or Reed's
char-CNN-RNN (:class:`t2igan.text.char_cnn_rnn.CharCNNRNN`); its sentence vector must have
the teacher's width (``student.embed_dim: 0`` takes it from the teacher). The teacher is

* a frozen encoder spec (``minilm``, ``minilm:DIR``, ``clip:ARCH:CKPT``, ``damsm:RUN``): its
  embeddings of every caption are computed once into the embedding cache
  (:mod:`t2igan.text.cache`), or
* ``pickle``: the dataset's precomputed embeddings (StackGAN's
  ``char-CNN-RNN-embeddings.pickle`` ``[N, captions, D]``, read by :mod:`t2igan.data.birds`
  through the restricted unpickler).

Loss: ``SmoothL1(student, target)`` (``beta``) + ``cosine_weight * (1 - cos)``. After every
export the student is scored on the held-out split (``eval_split``): the mean cosine
similarity between student and teacher vectors of each held-out caption, next to a
baseline that predicts the mean training target for every caption. It is written to
``distill_metrics.json`` in the exported pipeline folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, in_range, positive
from t2igan.core.folder import write_model_index
from t2igan.data.birds import load_any
from t2igan.data.folder import CaptionedImages
from t2igan.data.text import Vocabulary
from t2igan.families.base import Family, StepBase
from t2igan.text.cache import EmbeddingCache, flatten_captions
from t2igan.text.char_cnn_rnn import CharCNNRNN, CharCNNRNNCaptionEncoder, encode_chars
from t2igan.text.damsm import TextEncoder
from t2igan.text.damsm_encoder import save_damsm_text_encoder
from t2igan.text.spec import load_caption_encoder

METRICS = "distill_metrics.json"


@dataclass
class DistillStudentConfig:
    """The encoder trained to reproduce the teacher's embeddings (t2igan.families.distill)."""

    arch: str = "damsm"  # damsm (bi-LSTM) | char_cnn_rnn
    embed_dim: int = at_least(0, 0)  # sentence width; 0 = the teacher's (it must match)
    word_dim: int = positive(300)  # damsm: word embedding size (ninput)
    num_layers: int = positive(1)  # damsm: LSTM layers
    dropout: float = in_range(0.5, 0, 1, hi_open=True)  # damsm: on word embeddings; char_cnn_rnn: before the output Linear
    cnn_dim: int = positive(512)  # char_cnn_rnn: last conv / RNN width
    rnn_type: str = "gru"  # char_cnn_rnn: gru | rnn
    variant: str = "long"  # char_cnn_rnn: long (18 steps) | short (8 steps)
    doc_length: int = at_least(201, 48)  # char_cnn_rnn: characters per caption (the CNN needs >= 48)


@dataclass
class DistillTeacherConfig:
    source: str = "minilm"  # any text encoder spec (t2igan.text.spec: damsm:RUN, minilm[:DIR], clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT) or 'pickle' (dataset embeddings)
    cache_dir: str = ""  # embedding cache folder ('' = DATA_ROOT/.cache/text_embeddings)
    batch_size: int = positive(256)  # captions per teacher forward pass when filling the cache


@dataclass
class DistillLossConfig:
    beta: float = at_least(1.0, 0)  # SmoothL1 beta (torch default)
    cosine_weight: float = at_least(0.0, 0)  # + cosine_weight * (1 - cos(student, teacher))


@dataclass
class DistillRunConfig:
    task: str = "distill"
    data: DataConfig = field(default_factory=DataConfig)
    student: DistillStudentConfig = field(default_factory=DistillStudentConfig)
    teacher: DistillTeacherConfig = field(default_factory=DistillTeacherConfig)
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    eval_split: str = "test"  # held-out captions scored after each export ('' = none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=1e-3, beta1=0.9, beta2=0.999, grad_clip=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/distill", ema_decay=0.0, batch_size=64,
                                                                   max_steps=3000))


def teacher_targets(cfg, data: CaptionedImages) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(table [N_captions, D] float32, offsets [N_images + 1], description) for a split."""
    flat, offsets = flatten_captions(data.captions)
    src = cfg.teacher.source
    if src == "pickle":
        emb = data.meta.get("embeddings")
        if emb is None:
            raise T2IError(f"{data.root} [{data.split}]: teacher.source=pickle but the dataset has no precomputed "
                           "embeddings (char-CNN-RNN-embeddings.pickle in the StackGAN layout)")
        emb = torch.as_tensor(emb, dtype=torch.float32)  # (N, C, D)
        rows = []
        for i, caps in enumerate(data.captions):
            if len(caps) > emb.shape[1]:
                raise T2IError(f"{data.root} [{data.split}]: image {i} ({data.ids[i]}) has {len(caps)} captions but "
                               f"the embeddings pickle holds {emb.shape[1]} per image")
            rows.append(emb[i, : len(caps)])
        return torch.cat(rows), offsets, f"pickle embeddings {list(emb.shape)}"
    teacher = load_caption_encoder(src)
    cache_dir = Path(cfg.teacher.cache_dir) if cfg.teacher.cache_dir else Path(data.root) / ".cache" / "text_embeddings"
    table = EmbeddingCache(cache_dir, batch_size=cfg.teacher.batch_size).sentences(teacher, flat)
    return table, offsets, f"{teacher.name} ({src}), cache {cache_dir}"


def build_student(cfg, vocab, dim: int) -> tuple[nn.Module, dict]:
    s = cfg.student
    if s.embed_dim and s.embed_dim != dim:
        raise T2IError(f"student.embed_dim={s.embed_dim} but the teacher's embeddings are {dim}-d; "
                       f"set student.embed_dim={dim} (or 0 to follow the teacher)")
    if s.arch == "damsm":
        if dim % 2:
            raise T2IError(f"a bidirectional DAMSM student needs an even width, the teacher's is {dim}")
        args = dict(ntoken=len(vocab), ninput=s.word_dim, nhidden=dim, nlayers=s.num_layers, drop_prob=s.dropout)
        return TextEncoder(**args), args
    if s.arch == "char_cnn_rnn":
        args = dict(emb_dim=dim, cnn_dim=s.cnn_dim, rnn_type=s.rnn_type, avg=True, dropout=s.dropout,
                    doc_length=s.doc_length, variant=s.variant)
        return CharCNNRNN(**args), args
    raise T2IError(f"student.arch must be 'damsm' or 'char_cnn_rnn', got {s.arch!r}")


class DistillStep(StepBase):
    """Regress the student's sentence vectors onto the teacher's (a fixed table, never a module).

    Both loss terms are means over the rows, so under torchrun the average of the processes'
    gradients over their equal shares (:meth:`optimize`, ``manual_sync``) is the global batch's;
    the student has no BatchNorm and its dropout masks are drawn per process."""

    switches = frozenset({"precision", "ddp"})  # no 2-d convolutions: channels_last would change nothing
    manual_sync = True

    def __init__(self, cfg, vocab, data: CaptionedImages, eval_data: CaptionedImages | None):
        super().__init__()
        self.cfg, self.vocab, self.data, self.eval_data = cfg, vocab, data, eval_data
        self.table, self.offsets, self.source = teacher_targets(cfg, data)
        self.dim = int(self.table.shape[1])
        self.student, self.args = build_student(cfg, vocab, self.dim)
        self.modules = {"student": self.student}
        o = cfg.optim
        self.optimizers = {"adam": torch.optim.Adam(self.student.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2),
                                                    weight_decay=o.weight_decay)}
        self.eval_table = None
        if eval_data is not None:
            self.eval_table, self.eval_offsets, _ = teacher_targets(cfg, eval_data)

    # ------------------------------------------------------------------ student forward
    def student_sentences(self, captions: list[str] | None, tokens=None, lengths=None, device=None) -> torch.Tensor:
        if self.cfg.student.arch == "damsm":
            if tokens is None:
                tokens, lengths, _ = self.vocab.batch(captions, self.cfg.data.max_words)
            dev = device or next(self.student.parameters()).device
            return self.student(tokens.to(dev), lengths.to(dev))[1]
        dev = device or next(self.student.parameters()).device
        return self.student(encode_chars(captions, self.student.doc_length).to(dev))[0]

    def losses(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        L = self.cfg.loss
        l1 = F.smooth_l1_loss(pred, target, beta=L.beta)
        cos = F.cosine_similarity(pred, target, dim=1).mean()
        return {"loss": l1 + L.cosine_weight * (1 - cos), "smooth_l1": l1, "cos": cos}

    def train_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        rows = self.offsets[batch.index.cpu()] + batch.caption_index.cpu()
        target = self.table[rows].to(batch.tokens.device)
        caps = None if self.cfg.student.arch == "damsm" else [self.data.captions[int(i)][int(j)] for i, j in
                                                               zip(batch.index, batch.caption_index)]
        with self.autocast():
            pred = self.student_sentences(caps, batch.tokens, batch.lengths, device=batch.tokens.device)
        out = self.losses(pred.float(), target)
        self.optimize("adam", out["loss"], clip=(list(self.student.parameters()), self.cfg.optim.grad_clip))
        self.precision.update()
        return {k: v.detach() for k, v in out.items()}

    @torch.no_grad()
    def evaluate(self, batch_size: int = 500) -> dict:
        """Mean/median cosine(student, teacher) over every held-out caption, and the mean-target baseline."""
        if self.eval_data is None:
            return {}
        was = self.student.training
        self.student.eval()
        flat, _ = flatten_captions(self.eval_data.captions)
        try:
            pred = torch.cat([self.student_sentences(flat[i:i + batch_size]).float().cpu()
                              for i in range(0, len(flat), batch_size)])
        finally:
            self.student.train(was)
        cos = F.cosine_similarity(pred, self.eval_table, dim=1)
        base = F.cosine_similarity(self.table.mean(0, keepdim=True), self.eval_table, dim=1)
        return {"split": self.eval_data.split, "captions": len(flat), "cosine_mean": round(float(cos.mean()), 4),
                "cosine_median": round(float(cos.median()), 4), "cosine_p10": round(float(cos.quantile(0.1)), 4),
                "baseline_mean_target_cosine": round(float(base.mean()), 4), "teacher": self.source}

    def export(self, directory: Path, ema) -> None:
        directory = Path(directory)
        if self.cfg.student.arch == "damsm":
            save_damsm_text_encoder(directory, self.student, self.args, self.vocab, self.cfg.data.max_words)
        else:
            CharCNNRNNCaptionEncoder(self.student).save_pretrained(directory / "text_encoder")
        write_model_index(directory, family="text_encoder", student=self.cfg.student.arch, teacher=self.cfg.teacher.source)
        metrics = self.evaluate()
        if metrics:
            ckpt.write_json(directory / METRICS, metrics)


def build(cfg, data: CaptionedImages, resume: bool):
    """(DistillStep, vocabulary) for ``t2igan train`` (task ``distill``)."""
    vocab_path = Path(cfg.train.out_dir) / "pipeline" / "vocab.json"
    if resume and vocab_path.is_file():
        vocab = Vocabulary.load(vocab_path)
    else:
        vocab = Vocabulary.build((c for caps in data.captions for c in caps), cfg.data.min_word_count)
    eval_data = load_any(cfg.data.root, cfg.eval_split) if cfg.eval_split else None
    return DistillStep(cfg, vocab, data, eval_data), vocab


FAMILY = Family(
    name="distill", title="text-encoder distillation", paper="(t2igan)", config=DistillRunConfig, build=build, step=DistillStep,
    outputs=("text_encoder",), text="trains", needs="a teacher: a frozen encoder or the dataset's embeddings pickles",
    preset="configs/distill_minilm_synth64.yaml",
)
