"""MirrorGAN (Qiao et al., CVPR 2019): AttnGAN's tree with global-local attention, trained to
make its images re-describable: a frozen STREAM captioner (task ``stream``, trained first on
real images) scores each generated image's caption cross-entropy. Defaults of
``cfg/train_bird.yml``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, positive
from t2igan.core.folder import resolve_dir, write_model_index
from t2igan.data.dataset import Batch
from t2igan.data.text import Vocabulary
from t2igan.families.attngan import AttnGANConfig, AttnGANStep, check_matching
from t2igan.families.base import Family, StepBase, adam
from t2igan.families.classic import classic_optim, classic_text, classic_train, model_error
from t2igan.families.gan_options import GANOptions
from t2igan.models import mirrorgan
from t2igan.text.conditioning import vocabulary_for
from t2igan.text.spec import load_caption_encoder


@dataclass
class MirrorGANConfig(AttnGANConfig):
    """MirrorGAN; defaults: cfg/train_bird.yml (DAMSM LAMBDA 0.0, caption LAMBDA1 10.0)."""

    damsm_lambda: float = at_least(0.0, 0)
    caption_lambda: float = at_least(10.0, 0)  # TRAIN.SMOOTH.LAMBDA1: STREAM caption cross-entropy on fakes


@dataclass
class STREAMConfig:
    """MirrorGAN's STREAM captioner; CAP section of cfg/train_bird.yml. The official CNN is an
    ImageNet ResNet-152; here a small CNN trained from scratch (``width``)."""

    embed_size: int = positive(256)
    hidden_size: int = positive(256)  # the decoder LSTM has 2 * hidden_size units (official)
    num_layers: int = positive(1)
    width: int = positive(32)  # CNN base width
    image_size: int = at_least(64, 16)  # side the CNN sees (generated images are resized to it; its 4 stride-2 convs need >= 16)


@dataclass
class MirrorGANRunConfig:
    task: str = "mirrorgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: MirrorGANConfig = field(default_factory=MirrorGANConfig)
    text_encoder: str = "runs/damsm_synth64"  # a text encoder with word features (see AttnGAN)
    stream: str = "runs/stream_synth64"  # trained STREAM captioner run (task stream); frozen
    optim: OptimConfig = field(default_factory=classic_optim)
    train: TrainConfig = field(default_factory=lambda: classic_train("mirrorgan_synth64", 0.999))
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: BCE, 1 D + 1 G update)


@dataclass
class STREAMRunConfig:
    task: str = "stream"
    data: DataConfig = field(default_factory=DataConfig)
    model: STREAMConfig = field(default_factory=STREAMConfig)
    text_encoder: str = "runs/damsm_synth64"  # only its vocabulary is used (same token ids as the GAN; non-DAMSM: built from the training captions)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=1e-3, beta1=0.9, beta2=0.999))
    train: TrainConfig = field(default_factory=lambda: classic_train("stream_synth64"))


class MirrorGANStep(AttnGANStep):
    family = "mirrorgan"
    gen_module = mirrorgan

    def __init__(self, cfg, text, vocab, steps_per_epoch=1, image_encoder=None, stream=None):
        super().__init__(cfg, text, vocab, steps_per_epoch, image_encoder)
        self.caption_cnn, self.caption_rnn = stream
        for net in stream:
            net.eval().requires_grad_(False)
            self.frozen.append(net)

    def extra_g_loss(self, out, batch, words, sent, mask):
        logs = super().extra_g_loss(out, batch, words, sent, mask)
        self.caption_cnn.eval()
        self.caption_rnn.train()  # cuDNN RNN backward needs train mode; no dropout with 1 layer, weights frozen
        if self.world.distributed:
            cap = caption_loss_global(self.caption_cnn, self.caption_rnn, out.images[-1], batch.tokens, batch.lengths)
        else:
            cap = mirrorgan.caption_loss(self.caption_cnn, self.caption_rnn, out.images[-1], batch.tokens, batch.lengths)
        return {**logs, "cap_loss": cap * self.cfg.model.caption_lambda}


def caption_loss_global(cnn, rnn, images, tokens, lengths) -> torch.Tensor:
    """:func:`mirrorgan.caption_loss` under torchrun: this process's token cross-entropies summed and
    divided by the global batch's token count over the processes, so that the average over the
    processes (the gradient all-reduce) is the global batch's per-token mean."""
    import torch.distributed as dist
    from torch.nn.utils.rnn import pack_padded_sequence

    logits, _ = rnn(cnn(images), tokens, lengths)
    target = pack_padded_sequence(tokens, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False).data
    n = torch.tensor([float(target.numel())], device=logits.device)
    dist.all_reduce(n)
    return F.cross_entropy(logits, target, reduction="sum") * (dist.get_world_size() / n[0])




# ----------------------------------------------------------------------------- STREAM
class STREAMStep(StepBase):
    """Train MirrorGAN's STREAM captioner on real images (teacher-forced cross-entropy)."""

    switches = frozenset({"precision", "channels_last", "adam", "ddp"})
    manual_sync = True  # the gradient average of optimize(); BatchNorm1d of the CNN: the global batch's

    def __init__(self, cfg, vocab):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        m = cfg.model
        self.cnn_args = dict(embed_size=m.embed_size, width=m.width, image_size=m.image_size)
        self.rnn_args = dict(embed_size=m.embed_size, hidden_size=2 * m.hidden_size, vocab_size=len(vocab),
                             num_layers=m.num_layers)
        self.caption_cnn = mirrorgan.CAPTION_CNN(**self.cnn_args)
        self.caption_rnn = mirrorgan.CAPTION_RNN(**self.rnn_args)
        self.modules = {"caption_cnn": self.caption_cnn, "caption_rnn": self.caption_rnn}
        params = list(self.caption_cnn.parameters()) + list(self.caption_rnn.parameters())
        self.optimizers = {"adam": adam(params, cfg.optim.lr_g, cfg.optim, cfg.train.adam)}

    def train_step(self, batch: Batch, step: int):
        with self.autocast():
            loss_fn = caption_loss_global if self.world.distributed else mirrorgan.caption_loss
            loss = loss_fn(self.caption_cnn, self.caption_rnn, batch.images[-1], batch.tokens, batch.lengths).float()
        self.optimize("adam", loss)
        self.precision.update()
        return {"cap_loss": loss.detach()}

    def export(self, directory: Path, ema) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vocab.save(directory / "vocab.json")
        ckpt.save_component(self.caption_cnn, directory / "caption_cnn", "stream_caption_cnn", self.cnn_args)
        ckpt.save_component(self.caption_rnn, directory / "caption_rnn", "stream_caption_rnn", self.rnn_args)
        write_model_index(directory, family="stream", image_size=self.cfg.data.image_size)


def load_stream(path: str, vocab):
    """(CAPTION_CNN, CAPTION_RNN) of a trained ``stream`` run, checked against ``vocab``."""
    d = resolve_dir(path)
    nets = []
    for name, kind, cls in (("caption_cnn", "stream_caption_cnn", mirrorgan.CAPTION_CNN),
                            ("caption_rnn", "stream_caption_rnn", mirrorgan.CAPTION_RNN)):
        cfg, state = ckpt.read_component(d / name, kind)
        try:
            net = cls(**cfg)
        except TypeError as e:
            raise T2IError(f"{d / name / 'config.json'}: bad arguments ({e})") from None
        ckpt.load_state_strict(net, state, str(d / name))
        nets.append(net)
    if Vocabulary.load(d / "vocab.json").words != vocab.words:
        raise T2IError(f"stream={path}: its vocabulary differs from the text encoder's; train STREAM with the same "
                       "text_encoder")
    return tuple(nets)


def build(cfg, data, resume: bool):
    check_matching(cfg)  # model.matching=clip works here too (the AttnGAN step's loss), checked the same way
    text, vocab, img, spe = classic_text(cfg, data, "mirrorgan", words=MirrorGANStep.words)
    stream = load_stream(cfg.stream, vocab)
    try:
        return MirrorGANStep(cfg, text, vocab, spe, image_encoder=img, stream=stream), vocab
    except ValueError as e:
        raise model_error("mirrorgan", e) from None


def build_stream(cfg, data, resume: bool):
    """STREAM reads only the tokens: the vocabulary is its text encoder's (a DAMSM run), or one built
    from the training captions for any other encoder, so MirrorGAN trained on that encoder matches it."""
    enc = load_caption_encoder(cfg.text_encoder)
    max_words = getattr(enc, "max_words", None)
    if max_words is not None and max_words != cfg.data.max_words:
        raise T2IError(f"data.max_words={cfg.data.max_words} but the text encoder in {cfg.text_encoder} uses {max_words}")
    vocab = vocabulary_for(enc, data.captions, cfg.data.min_word_count)
    return STREAMStep(cfg, vocab), vocab


FAMILY = Family(
    name="mirrorgan", title="MirrorGAN", paper="Qiao et al., CVPR 2019", config=MirrorGANRunConfig, build=build, step=MirrorGANStep,
    generators={"mirrorgan": mirrorgan.G_NET}, text="words",
    needs="a text encoder and a STREAM run (task stream) on its vocabulary", preset="configs/mirrorgan_synth64.yaml",
)
STREAM = Family(
    name="stream", title="STREAM captioner", paper="Qiao et al., CVPR 2019 (MirrorGAN's STREAM)",
    config=STREAMRunConfig, build=build_stream, step=STREAMStep, outputs=("stream",), text="none",
    needs="a text encoder (for its vocabulary)", preset="configs/stream_synth64.yaml",
)
