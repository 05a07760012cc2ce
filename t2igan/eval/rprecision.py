"""R-precision with the DAMSM encoders (AttnGAN, DM-GAN, DF-GAN protocol).

For each generated image: its true caption and 99 captions of other images of the split
(mismatched, and never the same text as the true caption) are encoded by the DAMSM text
encoder; the image by the DAMSM image encoder (global code). The image is a hit when the
true caption has the highest cosine similarity among the 100. The samples are split into
10 bins (the papers: 30,000 samples in 10 bins of 3,000) and R-precision is the mean ±
std of the per-bin hit rate.

    scorer = DAMSMScorer.from_pretrained("runs/damsm_synth64")
    codes = scorer.image_codes(images)         # float [B, 3, H, W] in [0, 1]
    sents = scorer.sentence_codes(captions)
    r_precision(codes, true_idx, sents, exclude, seed=0)
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from t2igan import T2IError


class DAMSMScorer:
    """The DAMSM text encoder + image encoder of a DAMSM run (``RUN/pipeline``)."""

    def __init__(self, text_encoder, image_encoder, vocab, max_words: int, source: str, sha256: str):
        self.text_encoder, self.image_encoder = text_encoder.eval(), image_encoder.eval()
        self.vocab, self.max_words, self.source, self.weights_sha256 = vocab, max_words, source, sha256

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device="cpu") -> "DAMSMScorer":
        import hashlib

        from t2igan.core.folder import resolve_dir
        from t2igan.eval.evaluator import sha256_file
        from t2igan.text.damsm_encoder import load_damsm_text_encoder as load_text_encoder
        from t2igan.text.damsm_encoder import load_image_encoder

        d = resolve_dir(path)
        if not (d / "image_encoder").is_dir():
            raise T2IError(f"{d} has no image_encoder/: R-precision needs a DAMSM run's pipeline "
                           "(text_encoder + image_encoder), e.g. runs/damsm_synth64")
        te, _, vocab, max_words = load_text_encoder(d)
        ie = load_image_encoder(d)
        h = hashlib.sha256()
        for part in ("text_encoder", "image_encoder"):
            for f in sorted((d / part).glob("*.safetensors")):
                h.update(bytes.fromhex(sha256_file(f)))
        return cls(te.to(device), ie.to(device), vocab, max_words, str(d.resolve()), h.hexdigest())

    @property
    def device(self) -> torch.device:
        return next(self.image_encoder.parameters()).device

    @torch.no_grad()
    def image_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Global image codes [B, nef] of float images in [0, 1] (uint8 accepted)."""
        x = images.to(self.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        return self.image_encoder(x * 2 - 1)[1].float().cpu()

    @torch.no_grad()
    def sentence_codes(self, captions: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(captions), batch_size):
            # a caption with no word in the DAMSM vocabulary (an unseen emoji name) is encoded from the
            # padding token alone, as generation does in `t2igan eval`, rather than stopping the evaluation
            tokens, lengths, _ = self.vocab.batch(captions[i:i + batch_size], self.max_words, empty="pad")
            out.append(self.text_encoder(tokens.to(self.device), lengths.to(self.device))[1].float().cpu())
        return torch.cat(out)

    def describe(self) -> dict:
        return {"name": "DAMSM (t2igan): bi-LSTM text encoder + CNN image encoder global code",
                "dir": self.source, "weights_sha256": self.weights_sha256}


def draw_mismatched(true_idx: torch.Tensor, caption_text: list[str], n_mismatch: int = 99, seed: int = 0,
                    owner: list[int] | None = None) -> torch.Tensor:
    """[N, 1 + n_mismatch] caption indices: column 0 the true caption, then ``n_mismatch`` random
    captions whose text differs from the true one (and, when ``owner`` maps a caption to its image,
    of other images)."""
    g = torch.Generator().manual_seed(seed)
    ids: dict[str, int] = {}
    text_id = torch.tensor([ids.setdefault(t, len(ids)) for t in caption_text])
    own = torch.tensor(owner) if owner is not None else None
    out = torch.empty(len(true_idx), 1 + n_mismatch, dtype=torch.long)
    for i, t in enumerate(true_idx.tolist()):
        ok = text_id != text_id[t]
        if own is not None:
            ok &= own != own[t]
        pool = ok.nonzero().squeeze(1)
        if len(pool) < n_mismatch:
            raise T2IError(f"R-precision: fewer than {n_mismatch} captions differ from '{caption_text[t]}' "
                           f"(only {len(pool)}); the split is too small")
        out[i, 0] = t
        out[i, 1:] = pool[torch.randperm(len(pool), generator=g)[:n_mismatch]]  # without replacement
    return out


def r_precision(image_codes: torch.Tensor, candidates: torch.Tensor, sentence_codes: torch.Tensor,
                bins: int = 10) -> dict:
    """image_codes [N, D]; candidates [N, 1 + M] caption indices (true first); sentence_codes [C, D].

    Returns mean/std (over ``bins`` contiguous bins of the samples) of the top-1 hit rate.
    """
    n = len(image_codes)
    if n < bins:
        raise T2IError(f"R-precision with {bins} bins needs at least {bins} samples, got {n}")
    img = F.normalize(image_codes.double(), dim=1)  # (N, D)
    sent = F.normalize(sentence_codes.double(), dim=1)[candidates]  # (N, 1+M, D)
    sims = torch.einsum("nd,nmd->nm", img, sent)  # (N, 1+M)
    hit = (sims[:, 0:1] > sims[:, 1:]).all(dim=1).double()  # ties count as misses
    per_bin = torch.stack([b.mean() for b in hit.tensor_split(bins)])
    return {"mean": float(per_bin.mean()), "std": float(per_bin.std()) if bins > 1 else 0.0,
            "bins": bins, "n": n, "candidates": int(candidates.shape[1]), "per_bin": [round(float(x), 6) for x in per_bin]}
