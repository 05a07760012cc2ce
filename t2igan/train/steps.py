"""One optimisation step per model family (the trainer owns everything else)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from t2igan import T2IError
from t2igan.data.dataset import Batch
from t2igan.data.text import Vocabulary
from t2igan.models import dfgan
from t2igan.pipeline import load_image_encoder, load_image_encoder_for, save_pretrained_text_encoder_ref, save_text_encoder, write_model_index
from t2igan.text import damsm
from t2igan.train import checkpoint as ckpt
from t2igan.train import fast


def _adam(params, lr, o, impl: str = "default"):
    """Adam with the implementation chosen by ``train.adam``: ``default`` (torch's choice: a
    per-parameter loop on CPU, foreach on CUDA), ``foreach`` (multi-tensor) or ``fused``."""
    kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, **kw)


@torch.no_grad()
def _i2t_accuracy(code: torch.Tensor, sent: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of images whose most similar caption (cosine; ``mask``ed pairs left out) is their own."""
    sims = nn.functional.normalize(code, dim=1) @ nn.functional.normalize(sent, dim=1).t()
    if mask is not None:
        sims = sims.masked_fill(mask, float("-inf"))
    return (sims.argmax(1) == torch.arange(sims.size(0), device=sims.device)).float().mean()


class DAMSMStep:
    """Pretrain the DAMSM text and image encoders with the word + sentence matching losses.

    With ``sentences`` (config ``text_encoder: minilm | minilm:DIR | clip:ARCH:CKPT``) the text
    side is that frozen pretrained encoder, read as its cached sentence vectors: only the image
    encoder trains, with the sentence loss alone (there are no word features in the cache). Its
    global code is made the encoder's width (``nef = sentence_dim``): ``emb_cnn_code`` is already
    the linear map into the text space, so the saved component is an ordinary DAMSM image encoder.
    """

    ema_of = None

    def __init__(self, cfg, vocab: Vocabulary, sentences=None):
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
        self.optimizers = {"adam": _adam(params, cfg.optim.lr_g, cfg.optim, cfg.train.adam)}
        self.T, self.I = self.text_encoder, self.image_encoder
        self.world, self.precision = fast.World(), fast.Precision()  # set by the trainer

    compilable = ("image_encoder",)

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
            regions, code, words, sent = (fast.all_gather_rows_autograd(t, W) for t in (regions, code, words, sent))
            mask = fast.all_gather_rows(mask, W)[:, :T]
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
            code = fast.all_gather_rows_autograd(code, W)
            sent, index = fast.all_gather_rows(sent, W), fast.all_gather_rows(index, W)
        # off-diagonal pairs that are no negatives: the same image, or the same caption text (a
        # frozen encoder gives it the identical vector, so no image code can tell the two apart)
        same = (index[:, None] == index[None, :]) | (sent[:, None, :] == sent[None, :, :]).all(-1)
        same.fill_diagonal_(False)
        s0, s1 = damsm.sentence_loss(code, sent, L.gamma3, mask=same)
        acc = _i2t_accuracy(code, sent, same)
        return {"loss": s0 + s1, "s_loss": s0 + s1, "i2t_acc": acc}

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        out = self.losses(batch)
        opt = self.optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        self.precision.scale(out["loss"]).backward()
        if self.cfg.optim.grad_clip > 0 and self.sentences is None:  # official: the text encoder's gradient only
            if self.precision.scaler is not None:
                self.precision.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.text_encoder.parameters(), self.cfg.optim.grad_clip)
        self.precision.step(opt)
        self.precision.update()
        return {k: v.detach() for k, v in out.items()}

    def sample(self, tokens, lengths, seed, n, ema):
        return None

    def export(self, directory: Path, ema) -> None:
        if self.sentences is not None:  # the frozen encoder's spec and fingerprint: DF-GAN checks it is the same one
            save_pretrained_text_encoder_ref(directory, self.sentences.spec, self.text_encoder)
        else:
            save_text_encoder(directory, self.text_encoder, self.text_args, self.vocab, self.cfg.data.max_words)
        ckpt.save_component(self.image_encoder, directory / "image_encoder", "damsm_image_encoder", self.image_args)
        write_model_index(directory, family="damsm", image_size=self.cfg.data.image_size)


class DFGANStep:
    """DF-GAN: hinge loss, matching-aware GP, one D and one G update per step (official order).

    With ``loss.damsm_lambda > 0`` the generator also minimises AttnGAN's DAMSM word and
    sentence losses between its images and their captions, computed by the frozen DAMSM
    image encoder of the text-encoder run (AttnGAN ``generator_loss``); off in official DF-GAN.
    ``loss.damsm_words=false`` keeps the sentence term only. With a frozen pretrained text
    encoder (MiniLM, CLIP) the image encoder is ``loss.damsm_image_encoder``, a DAMSM run trained
    against that same encoder (``DAMSMStep`` with ``sentences``), and the term is the sentence one.
    """

    ema_of = "netG"

    def __init__(self, cfg, vocab: Vocabulary, text_encoder: damsm.TextEncoder, text_args: dict, sentences=None):
        """``sentences``: a :class:`t2igan.text.cache.CachedSentences` when conditioning on a frozen
        pretrained encoder (``text_encoder`` is then that CaptionEncoder); the training captions'
        vectors are looked up instead of running the encoder every step."""
        self.cfg, self.vocab = cfg, vocab
        self.text_encoder, self.text_args = text_encoder.eval().requires_grad_(False), text_args
        self.sentences = sentences
        m, size = cfg.model, cfg.data.image_size
        cond = text_encoder.sentence_dim if sentences is not None else text_encoder.nef
        self.g_args = dict(ngf=m.ngf, nz=m.nz, cond_dim=cond, imsize=size, ch_size=m.ch_size)
        self.netG = dfgan.NetG(**self.g_args)
        self.netD = dfgan.NetD(ndf=m.ndf, imsize=size, ch_size=m.ch_size)
        self.netC = dfgan.NetC(ndf=m.ndf, cond_dim=cond)
        self.modules = {"netG": self.netG, "netD": self.netD, "netC": self.netC}
        self.image_encoder = None
        L = cfg.loss
        if L.damsm_lambda > 0 and sentences is not None:
            if not L.damsm_image_encoder:
                raise T2IError(f"loss.damsm_lambda > 0 with the frozen text encoder {cfg.text_encoder!r} needs "
                               "loss.damsm_image_encoder: an image encoder run trained against it (task damsm, "
                               f"text_encoder: {cfg.text_encoder}; e.g. configs/damsm_minilm_synth64.yaml)")
            if L.damsm_words:
                raise T2IError(f"loss.damsm_words=true needs word features, which the frozen text encoder "
                               f"{cfg.text_encoder!r} does not give (sentence vectors only): set loss.damsm_words=false")
            self.image_encoder = load_image_encoder_for(L.damsm_image_encoder, text_encoder, cfg.text_encoder).requires_grad_(False)
        elif L.damsm_lambda > 0:
            if L.damsm_image_encoder:
                raise T2IError(f"loss.damsm_image_encoder={L.damsm_image_encoder!r} is for a frozen text encoder; with the "
                               f"DAMSM text encoder {cfg.text_encoder!r} the image encoder of that run is used: set it to ''")
            self.image_encoder = load_image_encoder(cfg.text_encoder.removeprefix("damsm:")).requires_grad_(False)
        self.G, self.D, self.C = self.netG, self.netD, self.netC
        self.world, self.precision = fast.World(), fast.Precision()  # set by the trainer
        o = cfg.optim
        self.g_params = list(self.netG.parameters())
        self.d_params = list(self.netD.parameters()) + list(self.netC.parameters())
        self.optimizers = {"G": _adam(self.g_params, o.lr_g, o, cfg.train.adam),
                           "D": _adam(self.d_params, o.lr_d, o, cfg.train.adam)}

    compilable = ("netG",)  # netD/netC sit under the MA-GP double backward, which torch.compile does not take

    def to_device(self, device):
        self.text_encoder.to(device)
        if self.image_encoder is not None:
            self.image_encoder.to(device)

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

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        o, W, P = self.cfg.optim, self.world, self.precision
        self.text_encoder.eval()  # frozen: no dropout
        imgs = batch.images[-1]
        if self.sentences is not None:
            sent = self.sentences.lookup(batch.index, batch.caption_index).to(imgs.device)
        else:
            with torch.no_grad():
                words, sent, mask = self.text_encoder(batch.tokens, batch.lengths)
        B = imgs.size(0)  # this process's share of the global batch
        imgs = imgs.requires_grad_(True)
        sent = sent.detach().requires_grad_(True)
        # mismatched pairs (image i+1, caption i) of the global batch, built by pairing each real
        # image with the previous row's caption; a process needs only the gathered captions
        sent_all = fast.all_gather_rows(sent.detach(), W)
        rows = torch.arange(B, device=imgs.device) * W.size + W.rank  # global rows of this shard
        prev_sent = sent_all[(rows - 1) % sent_all.size(0)]
        # the global batch's noise on every process, each taking its rows: the same numbers
        # whatever the number of processes
        noise = torch.randn(B * W.size, self.cfg.model.nz, device=imgs.device)[W.rank::W.size]
        # --- discriminator
        with P.autocast():
            real_f = self.D(imgs)
            pred_real = self.C(real_f, sent)
            pred_mis = self.C(real_f, prev_sent)
            fake = self.G(noise, sent.detach())
            pred_fake = self.C(self.D(fake.detach()), sent)
        if W.size == 1:
            pred_mis = pred_mis.roll(-1, 0)  # the official order: row i pairs image i+1, caption i
        d_real = dfgan.hinge_d(pred_real.float(), True)
        d_mis = dfgan.hinge_d(pred_mis.float(), False)
        d_fake = dfgan.hinge_d(pred_fake.float(), False)
        gp = dfgan.matching_aware_gp(pred_real, imgs, sent, o.gp_weight, o.gp_power, inv_scale=P.inv_scale())
        d_loss = d_real + (d_fake + d_mis) / 2.0 + gp
        self.optimizers["D"].zero_grad(set_to_none=True)
        # gradients of the D/C parameters only: no gradient into the real images and the
        # sentence (leaves here only for the MA-GP), whose input convolution backward is wasted work
        P.scale(d_loss).backward(inputs=self.d_params)
        P.step(self.optimizers["D"])
        # --- generator (through the bare D/C: their gradients are not wanted, nor synchronised)
        with P.autocast():
            g_out = self.netC(self.netD(fake), sent.detach())
        g_adv = -g_out.float().mean()
        g_loss, out = g_adv, {}
        if self.image_encoder is not None:
            self.image_encoder.eval()  # frozen BatchNorm statistics
            with P.autocast():
                regions, code = self.image_encoder(fake)
            L = self.cfg.loss
            if L.damsm_words:
                w0, w1 = damsm.words_loss(regions.float(), words, mask, L.gamma1, L.gamma2, L.gamma3)
            s0, s1 = damsm.sentence_loss(code.float(), sent.detach(), L.gamma3)
            # per process: the batch's other captions are the negatives
            damsm_loss = w0 + w1 + s0 + s1 if L.damsm_words else s0 + s1
            g_loss = g_adv + self.damsm_weight(step) * damsm_loss
            out["g_damsm"] = damsm_loss.detach()
        self.optimizers["G"].zero_grad(set_to_none=True)
        P.scale(g_loss).backward(inputs=self.g_params)  # D/C weight gradients here would be thrown away
        P.step(self.optimizers["G"])
        P.update()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "g_adv": g_adv.detach(), "d_real": d_real.detach(),
                "d_fake": d_fake.detach(), "d_mis": d_mis.detach(), "ma_gp": gp.detach(), **out}

    @torch.no_grad()
    def sample(self, tokens, lengths, seed, n, ema):
        g = ema if ema is not None else self.netG
        was = g.training
        g.eval()
        if self.sentences is not None:  # grids: the vocabulary-normalised caption text, re-encoded
            caps = [self.vocab.decode(t[:k].tolist()) for t, k in zip(tokens.cpu(), lengths.cpu())]
            sent = self.text_encoder.encode(caps).sentence
        else:
            _, sent, _ = self.text_encoder(tokens, lengths)
        sent = sent.repeat_interleave(n, 0)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(sent.size(0), self.cfg.model.nz, generator=gen).to(sent.device)
        out = g(noise, sent)
        g.train(was)
        return out

    def export(self, directory: Path, ema) -> None:
        if self.sentences is not None:
            save_pretrained_text_encoder_ref(directory, self.sentences.spec, self.text_encoder)
        else:
            save_text_encoder(directory, self.text_encoder, self.text_args, self.vocab, self.cfg.data.max_words)
        ckpt.save_component(ema if ema is not None else self.netG, directory / "generator", "dfgan_generator", self.g_args)
        write_model_index(directory, family="dfgan", image_size=self.cfg.data.image_size,
                          generator_weights="ema" if ema is not None else "raw")
