"""CLIP as the image-text matching loss of a GAN (in place of DAMSM): the frozen CLIP's image
embedding of generated images against its text embedding of the batch's captions, in the form of
DAMSM's sentence loss (official ``sent_loss``: a softmax over the batch, image->text and
text->image, cosine similarities times ``gamma3``).

    m = CLIPMatching(load_clip("runs/clip_faces64"), gamma3=10.0)
    s0, s1 = m.sentence_losses(fake_images, captions)   # fake_images (B, 3, H, W) in [-1, 1]

Sentence level only. The CLIP towers stay frozen (``requires_grad_(False)``, eval mode); the
gradient flows to the images through the image tower and CLIP's own differentiable preprocessing
(:meth:`t2igan.text.clip.CLIPBundle.pixel_values`). Nothing here is family-specific: any step
holding generated images and caption texts can use it. It is a training-only part: nothing of it
is exported."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from t2igan.text import damsm
from t2igan.text.clip import CLIPBundle


class CLIPMatching:
    """The CLIP matching loss of one frozen CLIP (``clip``) at temperature ``gamma3``."""

    def __init__(self, clip: CLIPBundle, gamma3: float = 10.0):
        self.clip, self.gamma3 = clip, float(gamma3)
        clip.model.eval().requires_grad_(False)

    @property
    def model(self) -> torch.nn.Module:
        return self.clip.model

    def to(self, device) -> CLIPMatching:
        self.clip.to(device)
        return self

    @torch.no_grad()
    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        """(B, E) L2-normalised CLIP text embeddings; no grad."""
        return self.clip.encode_text(captions)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, E) L2-normalised CLIP image embeddings of images in [-1, 1]; differentiable w.r.t. ``images``.
        CLIP's input is cast to the towers' dtype (a float64 CLIP, as in exactness tests, takes float64)."""
        m = self.clip.model.eval()
        pixels = self.clip.pixel_values(images).to(next(m.parameters()).dtype)
        return F.normalize(self.clip.image_features(pixels), dim=-1)

    def sentence_losses(self, images: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image->text, text->image) cross-entropies of DAMSM's sentence loss on CLIP embeddings."""
        return sentence_losses_of(self.image_embeddings(images), self.text_embeddings(captions).to(images.device),
                                  self.gamma3)


def sentence_losses_of(img_emb: torch.Tensor, txt_emb: torch.Tensor, gamma3: float):
    """DAMSM's sentence loss (:func:`t2igan.text.damsm.sentence_loss`) of image (B, E) and text (B, E)
    embeddings, in at least float32."""
    up = lambda x: x.to(torch.promote_types(x.dtype, torch.float32))  # noqa: E731
    return damsm.sentence_loss(up(img_emb), up(txt_emb), gamma3)


MATCHING = ("damsm", "clip")


def check_matching(section, text_encoder: str, *, key: str, prefix: str = "", replaces: str = "DAMSM loss") -> bool:
    """One line for a bad ``matching`` / ``matching_clip`` / ``clip_lambda`` of a config section (AttnGAN's
    ``model``, DF-GAN's ``loss``; ``key`` is its name in the messages), before anything is read or
    written; True when ``matching`` is clip."""
    from t2igan import T2IError

    if section.matching not in MATCHING:
        raise T2IError(f"{prefix}{key}.matching={section.matching!r}; choose one of {', '.join(MATCHING)}")
    if section.matching != "clip":
        return False
    spec = section.matching_clip.strip()
    if spec and not spec.startswith("clip:"):
        raise T2IError(f"{prefix}{key}.matching_clip={section.matching_clip!r} is not a clip: spec "
                       "(clip:DIR or clip:ARCH:FILE)")
    if section.clip_lambda > 0 and not matching_clip_source(section.matching_clip, text_encoder):
        raise T2IError(f"{prefix}{key}.matching=clip needs a CLIP: set {key}.matching_clip=clip:DIR (or use a clip: "
                       f"text encoder); the text encoder here is {text_encoder!r}")
    if section.damsm_lambda > 0:
        raise T2IError(f"{prefix}{key}.matching=clip replaces the {replaces}: set {key}.damsm_lambda=0 "
                       f"(got {section.damsm_lambda})")
    return True


def matching_clip_source(matching_clip: str, text_encoder: str) -> str:
    """The load_clip source of a matching CLIP: ``matching_clip`` (a ``clip:`` spec), else the text
    encoder's own ``clip:`` spec; "" when there is neither."""
    spec = matching_clip.strip() or (text_encoder if text_encoder.startswith("clip:") else "")
    return spec[len("clip:"):] if spec.startswith("clip:") else spec
