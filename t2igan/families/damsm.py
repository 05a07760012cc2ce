"""DAMSM (Xu et al., AttnGAN, CVPR 2018): pretrain the text and image encoders with the word and
sentence matching losses. Every AttnGAN-style loss and the R-precision metric use a DAMSM run.

With ``text_encoder`` set to a frozen encoder (``minilm``, ``clip:ARCH:CKPT``,
``char-cnn-rnn:DIR``, ``precomputed:DATA_ROOT``) only the image encoder trains, against that
encoder's cached sentence vectors: the image side of the DAMSM loss for a GAN conditioned on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from t2igan import T2IError
from t2igan.core.config import DataConfig, ImageEncoderConfig, OptimConfig, TrainConfig, in_range, positive
from t2igan.core.distributed import all_gather_rows, all_gather_rows_autograd
from t2igan.core.folder import write_model_index
from t2igan.data.dataset import Batch
from t2igan.data.text import Vocabulary
from t2igan.families.base import Family, StepBase, adam
from t2igan.text import damsm
from t2igan.text.base import save_reference
from t2igan.text.damsm_encoder import save_damsm_text_encoder, save_image_encoder


@dataclass
class TextEncoderConfig:
    """The DAMSM bi-LSTM text encoder (AttnGAN's RNN_ENCODER)."""

    embed_dim: int = positive(256)  # nef: sentence/word feature size (DAMSM.EMBEDDING_DIM)
    word_dim: int = positive(300)  # ninput: word embedding size
    num_layers: int = positive(1)  # LSTM layers
    dropout: float = in_range(0.5, 0, 1, hi_open=True)  # dropout on word embeddings


@dataclass
class DAMSMLossConfig:
    gamma1: float = positive(4.0)  # attention sharpness over words (TRAIN.SMOOTH.GAMMA1)
    gamma2: float = positive(5.0)  # word-region aggregation (GAMMA2)
    gamma3: float = positive(10.0)  # similarity scale (GAMMA3)
    words: bool = True  # word-level loss as well as the sentence loss (false: sentence loss only; must be false with a frozen text_encoder)


@dataclass
class DAMSMRunConfig:
    task: str = "damsm"
    data: DataConfig = field(default_factory=DataConfig)
    text_encoder: str = ""  # "": train the DAMSM bi-LSTM with the image encoder; a frozen encoder spec (minilm[:DIR], clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT): that frozen encoder's cached sentence vectors, only the image encoder trains (nef = its width; section text unused)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    loss: DAMSMLossConfig = field(default_factory=DAMSMLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=2e-4, beta1=0.5, beta2=0.999, grad_clip=0.25))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/damsm_synth64", ema_decay=0.0, batch_size=48))


@torch.no_grad()
def _i2t_accuracy(code: torch.Tensor, sent: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of images whose most similar caption (cosine; ``mask``ed pairs left out) is their own."""
    sims = nn.functional.normalize(code, dim=1) @ nn.functional.normalize(sent, dim=1).t()
    if mask is not None:
        sims = sims.masked_fill(mask, float("-inf"))
    return (sims.argmax(1) == torch.arange(sims.size(0), device=sims.device)).float().mean()


class DAMSMStep(StepBase):
    """Pretrain the DAMSM text and image encoders with the word + sentence matching losses.

    With ``sentences`` (config ``text_encoder``: a frozen encoder spec, minilm, clip, char-cnn-rnn, precomputed) the text
    side is that frozen pretrained encoder, read as its cached sentence vectors: only the image
    encoder trains, with the sentence loss alone (there are no word features in the cache). Its
    global code is made the encoder's width (``nef = sentence_dim``): ``emb_cnn_code`` is already
    the linear map into the text space, so the saved component is an ordinary DAMSM image encoder.
    """

    switches = frozenset({"precision", "channels_last", "compile", "adam", "ddp"})
    compilable = ("image_encoder",)

    def __init__(self, cfg, vocab: Vocabulary, sentences=None):
        super().__init__()
        self.cfg, self.vocab, self.sentences = cfg, vocab, sentences
        t, i = cfg.text, cfg.image
        if sentences is None:
            self.text_args = dict(ntoken=len(vocab), ninput=t.word_dim, nhidden=t.embed_dim, nlayers=t.num_layers, drop_prob=t.dropout)
            self.image_args = dict(nef=t.embed_dim, width=i.width, image_size=i.image_size)
            self.text_encoder = damsm.TextEncoder(**self.text_args)
            self.image_encoder = damsm.ImageEncoder(**self.image_args)
            self.modules = {"text_encoder": self.text_encoder, "image_encoder": self.image_encoder}
            params = list(self.text_encoder.parameters()) + list(self.image_encoder.parameters())
        else:
            if cfg.loss.words:
                raise T2IError(f"loss.words=true needs word features, which the frozen text encoder {cfg.text_encoder!r} "
                               "does not give (sentence vectors only): set loss.words=false")
            self.text_args = None
            self.text_encoder = sentences.encoder.eval().requires_grad_(False)  # frozen, not checkpointed
            self.image_args = dict(nef=sentences.encoder.sentence_dim, width=i.width, image_size=i.image_size)
            self.image_encoder = damsm.ImageEncoder(**self.image_args)
            self.modules = {"image_encoder": self.image_encoder}
            params = list(self.image_encoder.parameters())
        self.optimizers = {"adam": adam(params, cfg.optim.lr_g, cfg.optim, cfg.train.adam)}
        self.T, self.I = self.text_encoder, self.image_encoder

    def wrap(self, fn) -> None:
        if self.sentences is None:
            self.T = fn("text_encoder", self.text_encoder)
        self.I = fn("image_encoder", self.image_encoder)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        L, W = self.cfg.loss, self.world
        with self.precision.autocast():
            regions, code = self.I(batch.images[-1])
        if self.sentences is not None:
            return self.frozen_text_losses(batch, code.float())
        words, sent, mask = self.T(batch.tokens, batch.lengths)
        # the matching losses contrast every image with every caption of the global batch:
        # each process computes them on the gathered features (gradients flow back to the
        # process that computed a row; DDP's average then gives the global batch's gradient)
        regions, code = regions.float(), code.float()
        if W.distributed:
            T = batch.tokens.size(1)
            regions, code, words, sent = (all_gather_rows_autograd(t, W) for t in (regions, code, words, sent))
            mask = all_gather_rows(mask, W)[:, :T]
        out = {}
        if L.words:
            w0, w1 = damsm.words_loss(regions, words, mask, L.gamma1, L.gamma2, L.gamma3)
            out["w_loss"] = w0 + w1
        s0, s1 = damsm.sentence_loss(code, sent, L.gamma3)
        acc = _i2t_accuracy(code, sent)
        loss = w0 + w1 + s0 + s1 if L.words else s0 + s1
        return {"loss": loss, **out, "s_loss": s0 + s1, "i2t_acc": acc}

    def frozen_text_losses(self, batch: Batch, code: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sentence loss between the image codes and the frozen encoder's cached caption vectors."""
        L, W = self.cfg.loss, self.world
        sent = self.sentences.lookup(batch.index, batch.caption_index).to(code.device)  # (B, D), no gradient
        index = batch.index.to(code.device)
        if W.distributed:
            code = all_gather_rows_autograd(code, W)
            sent, index = all_gather_rows(sent, W), all_gather_rows(index, W)
        # off-diagonal pairs that are no negatives: the same image, or the same caption text (a
        # frozen encoder gives it the identical vector, so no image code can tell the two apart)
        same = (index[:, None] == index[None, :]) | (sent[:, None, :] == sent[None, :, :]).all(-1)
        same.fill_diagonal_(False)
        s0, s1 = damsm.sentence_loss(code, sent, L.gamma3, mask=same)
        acc = _i2t_accuracy(code, sent, same)
        return {"loss": s0 + s1, "s_loss": s0 + s1, "i2t_acc": acc}

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        out = self.losses(batch)
        # official: the text encoder's gradient norm is clipped, not the image encoder's
        clip = (list(self.text_encoder.parameters()), self.cfg.optim.grad_clip) if self.sentences is None else None
        self.optimize("adam", out["loss"], clip=clip)
        self.precision.update()
        return {k: v.detach() for k, v in out.items()}

    def export(self, directory: Path, ema) -> None:
        if self.sentences is not None:  # the frozen encoder's spec and fingerprint: DF-GAN checks it is the same one
            save_reference(Path(directory) / "text_encoder", self.text_encoder)
        else:
            save_damsm_text_encoder(directory, self.text_encoder, self.text_args, self.vocab, self.cfg.data.max_words)
        save_image_encoder(directory, self.image_encoder, self.image_args)
        write_model_index(directory, family="damsm", image_size=self.cfg.data.image_size)


def build(cfg, data, resume: bool):
    """(DAMSMStep, Vocabulary) of a ``task: damsm`` run."""
    from t2igan.text.cache import CachedSentences
    from t2igan.text.spec import load_caption_encoder, parse_spec

    vocab_path = Path(cfg.train.out_dir) / "pipeline" / "vocab.json"
    if resume and vocab_path.is_file():
        vocab = Vocabulary.load(vocab_path)
    else:
        vocab = Vocabulary.build((c for caps in data.captions for c in caps), cfg.data.min_word_count)
    sents = None
    if cfg.text_encoder:  # a frozen encoder: only the image encoder trains, against its cached vectors
        if parse_spec(cfg.text_encoder)[0] == "damsm":
            raise T2IError(f"text_encoder={cfg.text_encoder!r}: a damsm run trains its own text encoder (leave "
                           "text_encoder empty) or trains an image encoder against a frozen one: minilm, minilm:DIR, "
                           "clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT")
        enc = load_caption_encoder(cfg.text_encoder)
        sents = CachedSentences(enc, enc.spec, data.captions, Path(cfg.data.root) / ".cache" / "text_embeddings")
    return DAMSMStep(cfg, vocab, sentences=sents), vocab


FAMILY = Family(
    name="damsm", title="DAMSM", paper="Xu et al., AttnGAN, CVPR 2018", config=DAMSMRunConfig, build=build, step=DAMSMStep,
    outputs=("damsm",), text="trains", preset="configs/damsm_synth64.yaml",
)
