"""Reed's char-CNN-RNN text encoder (Reed et al., CVPR 2016, "Learning deep representations of
fine-grained visual descriptions") trained here with the structured joint embedding (SJE)
loss, task ``sje``: the encoder StackGAN, GAN-INT-CLS and HDGAN were trained on. Its export is
a text encoder for any family (``text_encoder: char-cnn-rnn:RUN``); converted ``.t7``
weights (``t2igan convert t7``) load the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from t2igan.core import weights as ckpt
from t2igan.core.config import DataConfig, ImageEncoderConfig, OptimConfig, TrainConfig, at_least, in_range, positive
from t2igan.core.distributed import all_gather_rows_autograd
from t2igan.core.folder import write_model_index
from t2igan.data.text import Vocabulary
from t2igan.families.base import Family, StepBase
from t2igan.text import damsm
from t2igan.text.char_cnn_rnn import CharCNNRNN, CharCNNRNNCaptionEncoder, encode_chars


@dataclass
class CharCNNRNNConfig:
    """Reed's hybrid char-CNN-RNN (t2igan.text.char_cnn_rnn.CharCNNRNN); defaults = the pretrained CUB model."""

    emb_dim: int = positive(1024)  # output embedding
    cnn_dim: int = positive(512)  # last conv / RNN width
    rnn_type: str = "gru"  # gru (FixedGRU) | rnn (FixedRNN)
    avg: bool = True  # time-average the GRU states
    dropout: float = in_range(0.0, 0, 1, hi_open=True)
    doc_length: int = at_least(201, 48)  # characters per caption (the CNN needs >= 48)
    variant: str = "long"  # long (HybridCNNLong) | short (HybridCNN)


@dataclass
class SJELossConfig:
    symmetric: bool = True  # Reed's -symmetric 1: hinge over texts per image and over images per text


@dataclass
class SJERunConfig:
    task: str = "sje"
    data: DataConfig = field(default_factory=DataConfig)
    model: CharCNNRNNConfig = field(default_factory=CharCNNRNNConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    loss: SJELossConfig = field(default_factory=SJELossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=7e-4))  # RMSprop lr (train_cub_hybrid.sh)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/char_cnn_rnn_synth64", ema_decay=0.0,
                                                                   batch_size=40, max_steps=3000))


def sje_loss(img: torch.Tensor, txt: torch.Tensor, symmetric: bool = True):
    """Reed's ``JointEmbeddingLoss``: for each image i, ``sum_{j != i} max(0, 1 + <v_i, t_j> - <v_i, t_i>)``
    divided by ``B * B``; ``symmetric`` adds the same with texts as queries. Returns (loss, i2t accuracy)."""
    score = img @ txt.t()  # (B, B)
    B = score.size(0)
    off = ~torch.eye(B, dtype=torch.bool, device=score.device)
    pos = score.diagonal()
    loss = ((score - pos[:, None] + 1).clamp(min=0) * off).sum() / (B * B)
    if symmetric:
        loss = loss + ((score - pos[None, :] + 1).clamp(min=0) * off).sum() / (B * B)
    acc = (score.argmax(1) == torch.arange(B, device=score.device)).float().mean()
    return loss, acc


class SJEStep(StepBase):
    """Train the char-CNN-RNN jointly with a small CNN image encoder (its global code, ``emb_dim``
    wide) under the symmetric SJE hinge loss, with RMSprop as Reed's ``train_sje_hybrid.lua``.

    Reed used fixed GoogLeNet features with a no-op image encoder; ImageNet weights cannot be
    assumed here, so the image side is :class:`t2igan.text.damsm.ImageEncoder`'s global code,
    trained from scratch.

    Under torchrun the hinge contrasts every image with every caption of the global batch: the
    embeddings of each process's rows are all-gathered (gradients sent back), every process
    computes the global loss (divided by the global ``B * B``) and :meth:`optimize` averages the
    gradients (``manual_sync``: the image encoder's region features are unused here, which a DDP
    wrapper refuses); the image encoder's BatchNorm uses the global batch's statistics.
    """

    switches = frozenset({"precision", "channels_last", "ddp"})  # RMSprop: train.adam does not apply
    manual_sync = True

    def __init__(self, cfg, vocab, data):
        super().__init__()
        self.cfg, self.vocab, self.data = cfg, vocab, data
        m = cfg.model
        self.text_args = dict(emb_dim=m.emb_dim, cnn_dim=m.cnn_dim, rnn_type=m.rnn_type, avg=m.avg,
                              dropout=m.dropout, doc_length=m.doc_length, variant=m.variant)
        self.text_encoder = CharCNNRNN(**self.text_args)
        self.image_args = dict(nef=m.emb_dim, width=cfg.image.width, image_size=cfg.image.image_size)
        self.image_encoder = damsm.ImageEncoder(**self.image_args)
        self.modules = {"text_encoder": self.text_encoder, "image_encoder": self.image_encoder}
        params = list(self.text_encoder.parameters()) + list(self.image_encoder.parameters())
        # optim.rmsprop defaults (alpha 0.99, epsilon 1e-8); learning rate from the config
        self.optimizers = {"rmsprop": torch.optim.RMSprop(params, lr=cfg.optim.lr_g, alpha=0.99, eps=1e-8)}

    def captions_of(self, batch) -> list[str]:
        return [self.data.captions[int(i)][int(j)] for i, j in zip(batch.index, batch.caption_index)]

    def train_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        dev = batch.images[-1].device
        onehot = encode_chars(self.captions_of(batch), self.text_encoder.doc_length).to(dev)
        with self.autocast():
            txt, _ = self.text_encoder(onehot)
            _, img = self.image_encoder(batch.images[-1])
        img, txt = img.float(), txt.float()
        if self.world.distributed:  # the global batch's rows, in its order, on every process
            img, txt = all_gather_rows_autograd(img, self.world), all_gather_rows_autograd(txt, self.world)
        loss, acc = sje_loss(img, txt, self.cfg.loss.symmetric)
        self.optimize("rmsprop", loss, clip=(list(self.text_encoder.parameters()), self.cfg.optim.grad_clip))
        self.precision.update()
        return {"loss": loss.detach(), "i2t_acc": acc.detach()}

    def export(self, directory: Path, ema) -> None:
        CharCNNRNNCaptionEncoder(self.text_encoder).save_pretrained(Path(directory) / "text_encoder")
        ckpt.save_component(self.image_encoder, Path(directory) / "image_encoder", "sje_image_encoder", self.image_args)
        write_model_index(directory, family="sje", image_size=self.cfg.data.image_size)


def build(cfg, data, resume: bool):
    vocab = Vocabulary.build(c for caps in data.captions for c in caps)  # batches carry tokens; SJE reads characters
    return SJEStep(cfg, vocab, data), vocab


FAMILY = Family(
    name="sje", title="char-CNN-RNN (SJE)", paper="Reed et al., CVPR 2016", config=SJERunConfig, build=build, step=SJEStep,
    outputs=("sje",), text="trains", preset="configs/char_cnn_rnn_synth64.yaml",
)
