"""DF-GAN (Tao et al., CVPR 2022): one-stage generator with deep text-image fusion blocks, a
hinge loss and the matching-aware gradient penalty. Conditions on any text encoder's
sentence vector (DAMSM as in the official code; MiniLM, CLIP, char-CNN-RNN or precomputed
embeddings through the embedding cache).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, in_range, positive
from t2igan.core.distributed import all_gather_rows, all_gather_rows_autograd, shard_randn
from t2igan.core.folder import write_model_index
from t2igan.data.dataset import Batch
from t2igan.data.text import Vocabulary
from t2igan.families import gan_options as go
from t2igan.families.base import (SWITCHES, Family, StepBase, adam, generator_kind, micro_slices, no_sync,
                                  sample_sentences, text_side)
from t2igan.families.gan_options import GANOptions
from t2igan.models import dfgan
from t2igan.text import damsm
from t2igan.text.conditioning import Conditioning
from t2igan.text.damsm_encoder import load_image_encoder, load_image_encoder_for
from t2igan.text.spec import parse_spec, save_encoder_dir


@dataclass
class DFGANConfig:
    """DF-GAN generator/discriminator sizes (official code: NetG/NetD/NetC arguments)."""

    ngf: int = positive(32)  # generator base width (official 256x256: 32)
    ndf: int = positive(32)  # discriminator base width
    nz: int = positive(100)  # noise size
    ch_size: int = in_range(3, 3, 3)  # image channels (the data are RGB)


@dataclass
class DFGANLossConfig:
    """Extra generator terms (both off in the official DF-GAN)."""

    damsm_lambda: float = at_least(0.0, 0)  # AttnGAN's DAMSM word+sentence loss on generated images (AttnGAN birds: 5.0); 0 = off
    damsm_warmup: int = at_least(0, 0)  # steps over which the DAMSM weight ramps linearly from 0 to damsm_lambda (0 = full weight at once)
    damsm_decay_steps: int = at_least(0, 0)  # after the warm-up, steps over which the weight moves linearly to damsm_lambda_end (0 = constant)
    damsm_lambda_end: float = at_least(0.0, 0)  # DAMSM weight at the end of the decay, kept from then on
    gamma1: float = positive(4.0)  # DAMSM attention sharpness (AttnGAN TRAIN.SMOOTH.GAMMA1)
    gamma2: float = positive(5.0)  # word-region aggregation (GAMMA2)
    gamma3: float = positive(10.0)  # similarity scale (GAMMA3)
    damsm_words: bool = True  # DAMSM word loss as well as the sentence loss (false: sentence term only; must be false with a frozen text_encoder)
    damsm_image_encoder: str = ""  # with a frozen text_encoder (not a DAMSM run): the image encoder run trained against it (task damsm); "" otherwise
    matching: str = "damsm"  # the matching term on G: damsm (weight damsm_lambda, scheduled) | clip (a frozen CLIP's sentence loss, weight clip_lambda)
    matching_clip: str = ""  # matching=clip: the CLIP (clip:DIR or clip:ARCH:FILE); empty: the text encoder's clip: spec
    clip_lambda: float = at_least(5.0, 0)  # matching=clip: weight of the CLIP sentence loss (constant; temperature gamma3); 0 = off


@dataclass
class DFGANRunConfig:
    task: str = "dfgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: DFGANConfig = field(default_factory=DFGANConfig)
    text_encoder: str = "runs/damsm_synth64"  # any text encoder spec (t2igan.text.spec): a DAMSM run, minilm[:DIR], clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT; frozen ones through the embedding cache
    loss: DFGANLossConfig = field(default_factory=DFGANLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/dfgan_synth64"))
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: hinge + MA-GP, 1 D + 1 G update)


class DFGANStep(StepBase):
    """DF-GAN: hinge loss, matching-aware GP, one D and one G update per step (official order).

    With ``loss.damsm_lambda > 0`` the generator also minimises AttnGAN's DAMSM word and
    sentence losses between its images and their captions, computed by the frozen DAMSM
    image encoder of the text-encoder run (AttnGAN ``generator_loss``); off in official DF-GAN.
    ``loss.damsm_words=false`` keeps the sentence term only. With a frozen pretrained text
    encoder (MiniLM, CLIP, char-CNN-RNN, precomputed) the image encoder is ``loss.damsm_image_encoder``,
    a DAMSM run trained against that same encoder (``DAMSMStep`` with ``sentences``), and the term is
    the sentence one.

    ``loss.matching=clip`` puts a frozen CLIP's sentence loss in the DAMSM term's place
    (:mod:`t2igan.text.clip_matching`: DAMSM's sentence loss on CLIP's image embedding of the images
    and its text embedding of the captions), weight ``loss.clip_lambda``; the CLIP is
    ``loss.matching_clip`` or the text encoder's own. Both terms go through one code path (the
    matching term: :meth:`image_features`, :meth:`matching_loss`), so with micro-batches both are
    exact through the same gradient cache.
    """

    ema_of = "netG"
    switches = frozenset(SWITCHES)
    compilable = ("netG",)  # netD/netC sit under the MA-GP double backward, which torch.compile does not take

    def __init__(self, cfg, text: Conditioning, vocab: Vocabulary):
        """``text``: the frozen text side (any encoder; DAMSM reads the batch's tokens, the others
        the embedding cache, so no encoder runs during a step)."""
        super().__init__()
        self.cfg, self.vocab, self.text = cfg, vocab, text
        self.text_encoder = text.encoder
        frozen = not text.token_level
        m, size = cfg.model, cfg.data.image_size
        cond = text.sentence_dim
        self.g_args = dict(ngf=m.ngf, nz=m.nz, cond_dim=cond, imsize=size, ch_size=m.ch_size)
        self.netG = dfgan.NetG(**self.g_args)
        self.netD = dfgan.NetD(ndf=m.ndf, imsize=size, ch_size=m.ch_size)
        self.netC = dfgan.NetC(ndf=m.ndf, cond_dim=cond)
        self.modules = {"netG": self.netG, "netD": self.netD, "netC": self.netC}
        self.image_encoder = None
        L = cfg.loss
        if L.damsm_lambda > 0 and frozen:
            if not L.damsm_image_encoder:
                raise T2IError(f"loss.damsm_lambda > 0 with the frozen text encoder {cfg.text_encoder!r} needs "
                               "loss.damsm_image_encoder: an image encoder run trained against it (task damsm, "
                               f"text_encoder: {cfg.text_encoder}; e.g. configs/damsm_minilm_synth64.yaml)")
            if L.damsm_words:
                raise T2IError(f"loss.damsm_words=true needs word features, which the frozen text encoder "
                               f"{cfg.text_encoder!r} does not give (sentence vectors only): set loss.damsm_words=false")
            self.image_encoder = load_image_encoder_for(L.damsm_image_encoder, text.encoder, cfg.text_encoder).requires_grad_(False)
        elif L.damsm_lambda > 0:
            if L.damsm_image_encoder:
                raise T2IError(f"loss.damsm_image_encoder={L.damsm_image_encoder!r} is for a frozen text encoder; with the "
                               f"DAMSM text encoder {cfg.text_encoder!r} the image encoder of that run is used: set it to ''")
            self.image_encoder = load_image_encoder(parse_spec(cfg.text_encoder)[1]).requires_grad_(False)
        self.matching = None  # loss.matching=clip: the frozen CLIP's matching loss; neither checkpointed nor exported
        if L.matching == "clip" and L.clip_lambda > 0:
            from t2igan.text.clip import load_clip
            from t2igan.text.clip_matching import CLIPMatching, matching_clip_source

            self.matching = CLIPMatching(load_clip(matching_clip_source(L.matching_clip, cfg.text_encoder)), L.gamma3)
        self.frozen = [self.text_encoder] + ([self.image_encoder] if self.image_encoder is not None else [])
        if self.matching is not None:
            self.frozen.append(self.matching.model)
        self.G, self.D, self.C = self.netG, self.netD, self.netC
        self.setup_gan(cfg, "ma-gp", {"netD": self.netD, "netC": self.netC})
        o = cfg.optim
        self.g_params = list(self.netG.parameters())
        self.d_params = list(self.netD.parameters()) + list(self.netC.parameters())
        self.optimizers = {"G": adam(self.g_params, o.lr_g, o, cfg.train.adam),
                           "D": adam(self.d_params, o.lr_d, o, cfg.train.adam)}

    @property
    def has_matching(self) -> bool:
        """G has a matching term: the DAMSM one (an image encoder) or the CLIP one."""
        return self.image_encoder is not None or self.matching is not None

    def frozen_fingerprints(self) -> dict[str, str]:
        return {"matching CLIP": self.matching.clip.fingerprint()} if self.matching is not None else {}

    def matching_weight(self, step: int) -> float:
        """The matching term's weight at ``step``: DAMSM's schedule, or the constant ``loss.clip_lambda``."""
        return self.cfg.loss.clip_lambda if self.matching is not None else self.damsm_weight(step)

    def damsm_weight(self, step: int) -> float:
        """DAMSM loss weight at ``step``: linear warm-up from 0, then an optional linear decay."""
        L = self.cfg.loss
        if step + 1 < L.damsm_warmup:
            return L.damsm_lambda * (step + 1) / L.damsm_warmup
        if L.damsm_decay_steps <= 0:
            return L.damsm_lambda
        t = min(1.0, (step + 1 - max(L.damsm_warmup, 0)) / L.damsm_decay_steps)
        return L.damsm_lambda + t * (L.damsm_lambda_end - L.damsm_lambda)

    def wrap(self, fn) -> None:
        """Forward callables of the D step: the trainer's DDP / torch.compile wrappers of the modules."""
        self.G, self.D, self.C = fn("netG", self.netG), fn("netD", self.netD), fn("netC", self.netC)

    def d_penalty(self, pred_real, imgs, fake, sent, eps) -> torch.Tensor | None:
        """The gradient penalty of ``gan.loss`` (official: MA-GP on real, matching pairs); ``eps``: the
        WGAN-GP interpolation weights of these rows (drawn for the whole batch)."""
        o, kind = self.cfg.optim, go.PENALTY.get(self.loss_kind)
        if kind == "ma-gp":
            return dfgan.matching_aware_gp(pred_real, imgs, sent, o.gp_weight, o.gp_power, inv_scale=self.precision.inv_scale())
        critic = lambda x: self.C(self.D(x), sent.detach()).float().reshape(-1)  # noqa: E731
        if kind == "gp":
            return go.wgan_gp(critic, imgs, fake, self.gan.gp_lambda, eps, inv_scale=self.precision.inv_scale())
        if kind == "r1":
            return go.r1_penalty(critic, imgs, self.gan.gp_lambda, inv_scale=self.precision.inv_scale())
        return None

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One D update, then one G update, on this process's rows of the global batch.

        With ``train.accumulate`` K each update sums the gradients of K micro-batches of the rows
        (:func:`t2igan.families.base.micro_slices`), each micro-batch's mean losses and penalties
        weighted by its share of the rows, before its one optimiser step: the noise, the WGAN-GP
        interpolation weights and the mismatched pairs are those of the whole batch, sliced, so the
        update is the full batch's to float rounding. With micro-batches the D update makes the
        generator's images without a graph and the G update recomputes each micro-batch's (the same
        images: G has not moved), and the matching term (DAMSM or CLIP), contrastive over the whole
        batch, goes through a gradient cache (:meth:`matching_cache`). With K = 1 it is the one-batch step,
        unchanged."""
        self.step_now = step
        W, P = self.world, self.precision
        imgs = batch.images[-1]
        words, sent, mask = self.text.batch(batch)  # frozen, in eval mode, no gradient
        B = imgs.size(0)  # this process's share of the global batch
        sent = sent.detach()
        # mismatched pairs (image i+1, caption i) of the global batch, built by pairing each real
        # image with the previous row's caption; a process needs only the gathered captions
        sent_all = all_gather_rows(sent, W)
        rows = torch.arange(B, device=imgs.device) * W.size + W.rank  # global rows of this shard
        prev_sent = sent_all[(rows - 1) % sent_all.size(0)]
        # the global batch's noise on every process, each taking its rows: the same numbers
        # whatever the number of processes (and of micro-batches)
        noise = torch.randn(B * W.size, self.cfg.model.nz, device=imgs.device)[W.rank::W.size]
        parts = micro_slices(B, self.cfg.train.accumulate)
        fake, fakes, logs = None, [], {}
        if self.updates("D", step):
            fake, fakes, logs = self.d_update(parts, imgs, sent, prev_sent, noise)
        if not self.updates("G", step):
            P.update()
            return {**logs, **self.monitor_logs()}
        text = self.matching_text(batch, words, mask, sent, sent_all) if self.has_matching else None
        out = self.g_update(parts, fake, fakes, noise, sent, text, rows, step)
        P.update()
        return {**logs, **out, **self.monitor_logs()}

    def d_update(self, parts, imgs, sent, prev_sent, noise):
        """D/C's update over the micro-batches ``parts``. Returns (the generator's images with their
        graph when there is one micro-batch, else None; with micro-batches and a matching term, each
        micro-batch's images without a graph, for its gradient cache; the logs, full-batch means)."""
        W, P, B, one = self.world, self.precision, imgs.size(0), len(parts) == 1
        kind = go.BASE_LOSS[self.loss_kind]
        penalty_name = "ma_gp" if self.loss_kind == "ma-gp" else "d_penalty"
        # WGAN-GP's interpolation weights, drawn for the whole batch (no draw happens in between)
        eps = shard_randn(W, B, 1, 1, 1, device=imgs.device, rand=True) if go.PENALTY.get(self.loss_kind) == "gp" else None
        self.optimizers["D"].zero_grad(set_to_none=True)
        fake, fakes, logs, reals, fake_outs = None, [], {}, [], []
        for j, s in enumerate(parts):
            share = (s.stop - s.start) / B
            # leaves for the MA-GP, which takes the gradient with respect to the image and the sentence
            x, c = imgs[s].detach().requires_grad_(True), sent[s].detach().requires_grad_(True)
            with no_sync(self.D, self.C, when=j < len(parts) - 1):  # one all-reduce, after the last
                with P.autocast():
                    real_f = self.D(x)
                    pred_real = self.C(real_f, c)
                    pred_mis = self.C(real_f, prev_sent[s])
                    with contextlib.nullcontext() if one else torch.no_grad():  # the G update makes its own
                        fake = self.G(noise[s], sent[s])
                    pred_fake = self.C(self.D(fake.detach()), c)
                if W.size == 1 and one:
                    pred_mis = pred_mis.roll(-1, 0)  # the official order: row i pairs image i+1, caption i
                gp = self.d_penalty(pred_real, x, fake, c, None if eps is None else eps[s])
                d_loss, part_logs = go.matching_aware_d(kind, pred_real, pred_mis, pred_fake, gp, penalty_name)
                # gradients of the D/C parameters only: no gradient into the real images and the
                # sentence (leaves here only for the MA-GP), whose input convolution backward is wasted work
                P.scale(d_loss * share).backward(inputs=self.d_params)
            for k, v in part_logs.items():
                logs[k] = logs[k] + v * share if k in logs else v * share
            reals.append(pred_real.detach())
            fake_outs.append(pred_fake.detach())
            if not one and self.has_matching:
                fakes.append(fake)
        self.watch(torch.cat(reals), torch.cat(fake_outs))
        self.apply_update("D")
        return (fake if one else None), fakes, logs

    def g_update(self, parts, fake, fakes, noise, sent, text, rows, step) -> dict[str, torch.Tensor]:
        """G's update over the micro-batches ``parts``, through the bare D/C (their gradients are not
        wanted, nor synchronised); ``fake``: the one micro-batch's images from the D update, or None
        (made here); ``text``: what the matching term compares with (:meth:`matching_text`), None
        without one. Returns the logs (full-batch values)."""
        P, B = self.precision, noise.size(0)
        kind = go.BASE_LOSS[self.loss_kind]
        weight, cache = 0.0, None
        if self.has_matching:
            weight = self.matching_weight(step)
            if len(parts) > 1:
                cache = self.matching_cache(parts, fakes, noise, sent, text, rows)
        self.optimizers["G"].zero_grad(set_to_none=True)
        g_adv_all, term = 0.0, None
        for j, s in enumerate(parts):
            share = (s.stop - s.start) / B
            with no_sync(self.G, when=j < len(parts) - 1):
                f = fake
                if f is None:
                    with P.autocast():
                        f = self.G(noise[s], sent[s])
                with P.autocast():
                    g_out = self.netC(self.netD(f), sent[s])
                g_adv = -g_out.float().mean() if kind in ("hinge", "wgan") else go.adversarial(kind, g_out, "g")
                g_loss = g_adv * share
                if self.has_matching and cache is None:  # one micro-batch: the batch loss itself
                    term = self.matching_of(f, text)
                    g_loss = g_loss + weight * term
                elif cache is not None:  # the cached gradient of the batch loss through these images
                    term, g_regions, g_code = cache
                    g_loss = g_loss + weight * self.matching_surrogate(f, None if g_regions is None else g_regions[s], g_code[s])
                P.scale(g_loss).backward(inputs=self.g_params)  # D/C weight gradients here would be thrown away
            g_adv_all = g_adv_all + g_adv.detach() * share
        self.apply_update("G")
        out = {"g_loss": g_adv_all, "g_adv": g_adv_all}
        if term is not None:
            out["g_loss"] = g_adv_all + weight * term.detach()
            out["g_clip" if self.matching is not None else "g_damsm"] = term.detach()
        return out

    # ------------------------------------------------------------------ the matching term (DAMSM or CLIP)
    def matching_text(self, batch: Batch, words, mask, sent, sent_all) -> tuple:
        """What the matching term compares the images with, for the global batch: DAMSM's (words,
        mask, sentence vectors) of :meth:`damsm_text`, or the CLIP's text embeddings of the batch's
        captions, gathered under torchrun (no gradient), as a 1-tuple."""
        if self.matching is None:
            return self.damsm_text(words, mask, sent, sent_all)
        captions = self.text.texts_of(batch.index, batch.caption_index)
        return (all_gather_rows(self.matching.text_embeddings(captions).to(sent.device), self.world),)

    def matching_loss(self, regions, code, text) -> torch.Tensor:
        """The matching term of the global batch's image features against ``text``: DAMSM's
        (:meth:`damsm_loss`), or the CLIP sentence loss (image->text + text->image, temperature gamma3)."""
        if self.matching is None:
            return self.damsm_loss(regions, code, *text)
        from t2igan.text.clip_matching import sentence_losses_of

        s0, s1 = sentence_losses_of(code, text[0], self.cfg.loss.gamma3)
        return s0 + s1

    def damsm_text(self, words, mask, sent, sent_all):
        """The captions the DAMSM loss compares the images with: the global batch's (under torchrun
        its other captions are the negatives, as on one process)."""
        W = self.world
        if not W.distributed:
            return words, mask, sent
        if self.cfg.loss.damsm_words:
            words = all_gather_rows(words.contiguous(), W)
            mask = all_gather_rows(mask.to(torch.uint8), W).bool()
        return words, mask, sent_all

    def damsm_loss(self, regions, code, words, mask, sent) -> torch.Tensor:
        """AttnGAN's DAMSM word + sentence loss of the batch's image features (float32), or its sentence term."""
        L = self.cfg.loss
        s0, s1 = damsm.sentence_loss(code, sent, L.gamma3)
        if not L.damsm_words:
            return s0 + s1
        w0, w1 = damsm.words_loss(regions, words, mask, L.gamma1, L.gamma2, L.gamma3)
        return w0 + w1 + s0 + s1

    def image_features(self, fake):
        """The frozen image encoder's (regions, code) of ``fake``, at least float32 (out of autocast);
        with the CLIP term (None, CLIP's L2-normalised image embedding)."""
        up = lambda x: x.to(torch.promote_types(x.dtype, torch.float32))  # noqa: E731
        if self.matching is not None:
            with self.precision.autocast():
                code = self.matching.image_embeddings(fake)  # eval mode, frozen
            return None, up(code)
        self.image_encoder.eval()  # frozen BatchNorm statistics
        with self.precision.autocast():
            regions, code = self.image_encoder(fake)
        return up(regions), up(code)

    def matching_of(self, fake, text) -> torch.Tensor:
        """The matching loss of this process's images ``fake`` (all its rows) against the global batch's ``text``."""
        W = self.world
        regions, code = self.image_features(fake)
        if W.distributed:  # gradients go back to the process that made each row
            regions = None if regions is None else all_gather_rows_autograd(regions, W)
            code = all_gather_rows_autograd(code, W)
        return self.matching_loss(regions, code, text)

    def matching_cache(self, parts, fakes, noise, sent, text, rows):
        """The gradient cache of the matching term with micro-batches (it is contrastive over the whole
        batch, so not a sum over micro-batches): the image encoder's outputs on every micro-batch's
        images without a graph (``fakes``: those of the D update, else made here), the batch loss on
        them as leaves and its gradient with respect to them. Each micro-batch then backpropagates its
        rows of that gradient through its recomputed outputs (:meth:`matching_surrogate`), which adds up to
        the batch loss's gradient exactly. Returns (loss, d loss / d regions or None when the word term
        is off, d loss / d code): the gradients of this process's rows, times the number of processes
        since DDP averages what each process sends (what ``all_gather_rows_autograd`` gives without
        micro-batches: every process's loss, the same one, sends its gradient back to each row).
        The CLIP term has no regions: (loss, None, d loss / d embedding)."""
        W, P = self.world, self.precision
        with torch.no_grad():
            feats = []
            for j, s in enumerate(parts):
                f = fakes[j] if fakes else None
                if f is None:
                    with P.autocast():
                        f = self.G(noise[s], sent[s])
                feats.append(self.image_features(f))
            regions = None if feats[0][0] is None else all_gather_rows(torch.cat([r for r, _ in feats]), W).requires_grad_(True)
            code = all_gather_rows(torch.cat([c for _, c in feats]), W).requires_grad_(True)
        loss = self.matching_loss(regions, code, text)
        if regions is None:
            g_regions, (g_code,) = None, torch.autograd.grad(loss, (code,))
        else:
            g_regions, g_code = torch.autograd.grad(loss, (regions, code), allow_unused=True)
        mine = lambda g: None if g is None else g[rows] * W.size  # noqa: E731
        return loss.detach(), mine(g_regions), mine(g_code)

    def matching_surrogate(self, fake, g_regions, g_code) -> torch.Tensor:
        """A scalar whose gradient through ``fake`` is the cached batch-loss gradient of these rows:
        ``sum(g_code * code(fake))`` (+ ``sum(g_regions * regions(fake))`` with the word term)."""
        regions, code = self.image_features(fake)
        out = (code * g_code).sum()
        if g_regions is not None:
            out = out + (regions * g_regions).sum()
        return out

    @torch.no_grad()
    def sample(self, captions, seed, n, ema):
        _, sent, _ = self.text.captions(captions)
        return sample_sentences(ema if ema is not None else self.netG, sent, self.cfg.model.nz, seed, n)

    def export(self, directory: Path, ema) -> None:
        save_encoder_dir(directory, self.text_encoder)
        ckpt.save_component(ema if ema is not None else self.netG, directory / "generator", generator_kind("dfgan"), self.g_args)
        write_model_index(directory, family="dfgan", image_size=self.cfg.data.image_size,
                          generator_weights="ema" if ema is not None else "raw")


def check_matching(cfg) -> None:
    """One line for a bad loss.matching / matching_clip / clip_lambda, before anything is read or written."""
    from t2igan.text.clip_matching import check_matching as check_section

    L = cfg.loss
    if not check_section(L, cfg.text_encoder, key="loss", replaces="DAMSM term"):
        return
    for key in ("damsm_warmup", "damsm_decay_steps"):
        if getattr(L, key) > 0:
            raise T2IError(f"loss.{key}={getattr(L, key)} schedules the DAMSM weight; loss.matching=clip has the "
                           f"constant loss.clip_lambda: set loss.{key}=0")


def build(cfg, data, resume: bool):
    """(DFGANStep, Vocabulary) of a ``task: dfgan`` run."""
    check_matching(cfg)
    text, vocab = text_side(cfg, data, "dfgan")
    return DFGANStep(cfg, text, vocab), vocab


FAMILY = Family(
    name="dfgan", title="DF-GAN", paper="Tao et al., CVPR 2022", config=DFGANRunConfig, build=build, step=DFGANStep,
    generators={"dfgan": dfgan.NetG}, needs="a text encoder: a DAMSM run (task damsm) or a frozen encoder",
    preset="configs/dfgan_synth64.yaml",
)
