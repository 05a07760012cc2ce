"""MirrorGAN (Qiao et al., "MirrorGAN: Learning Text-to-image Generation by Redescription",
CVPR 2019).

The generator is AttnGAN's with GLAM, global-local collaborative attention: each later stage
attends over the words (as AttnGAN) *and* over the sentence (the CA code projected to the
image width, gated by a channel softmax of its product with the image features); the three
are joined by a 1x1 ``conv``. STREAM, an image captioner (CNN encoder + LSTM decoder,
``CAPTION_CNN``/``CAPTION_RNN``), is trained first on real images and frozen; its caption
cross-entropy on the generated image is added to the generator loss (``LAMBDA1``).

Names follow qiaott/MirrorGAN ``model.py`` / ``GLAttention.py`` (``NEXT_STAGE_G.att``
(``conv_context``, ``conv_sentence_vis``, ``linear``), ``.conv``, ``.residual``,
``.upsample``; ``CAPTION_CNN.linear/.bn``, ``CAPTION_RNN.embed/.lstm/.linear``). The official
``CAPTION_CNN`` wraps an ImageNet ResNet-152 (``resnet``); pretrained weights cannot be
assumed here, so ``features`` is a small CNN trained from scratch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from t2igan.models import attngan
from t2igan.models.blocks import NextStageTrunk, conv1x1


class GLAttentionGeneral(nn.Module):
    """GLAM: word attention (as AttnGAN) + sentence attention.

    input ``[B, idf, h, w]``, sentence (CA code) ``[B, ncf]``, words ``[B, cdf, T]``, mask
    ``[B, T]`` -> word context, weighted sentence (both ``[B, idf, h, w]``), word attention
    ``[B, T, h, w]`` and sentence attention ``[B, idf, h, w]`` (softmax over channels).
    """

    def __init__(self, idf: int, cdf: int, ncf: int = 100):
        super().__init__()
        self.conv_context = conv1x1(cdf, idf)
        self.conv_sentence_vis = conv1x1(idf, idf)
        self.linear = nn.Linear(ncf, idf)  # official: nn.Linear(100, idf), 100 = CONDITION_DIM

    official_mask = False  # True: the official padding-mask tiling (set through G_NET.attention_mask)

    def forward(self, input, sentence, context, mask=None):
        B, idf, ih, iw = input.shape
        target = input.reshape(B, idf, ih * iw).transpose(1, 2)  # (B, Q, idf)
        source = self.conv_context(context.unsqueeze(3)).squeeze(3)  # (B, idf, T)
        attn = attngan.attention_softmax(target @ source, mask, self.official_mask).transpose(1, 2)  # (B, T, Q)
        weighted = (source @ attn).reshape(B, idf, ih, iw)
        s = self.linear(sentence).view(B, idf, 1, 1).expand(-1, -1, ih, iw)
        sent_att = self.conv_sentence_vis(input * s).softmax(dim=1)  # legacy nn.Softmax() on 4-D: dim 1
        return weighted, s * sent_att, attn.reshape(B, -1, ih, iw), sent_att


class NEXT_STAGE_G(NextStageTrunk, nn.Module):  # noqa: N801
    """GLAM -> 1x1 ``conv`` of ``cat(h, word context, weighted sentence)`` -> residual blocks ->
    2x upsample (width ngf)."""

    def __init__(self, ngf: int, nef: int, ncf: int, num_residual: int = 2):
        super().__init__()
        self.att = GLAttentionGeneral(ngf, nef, ncf)
        self.build_trunk(ngf * 2, num_residual)
        self.conv = conv1x1(ngf * 3, ngf * 2)  # after the trunk: key order and seeded init kept

    def forward(self, h_code, c_code, word_embs, mask):
        c, ws, att, _ = self.att(h_code, c_code, word_embs, mask)
        return self.trunk(self.conv(torch.cat((h_code, c, ws), 1))), att


class G_NET(attngan.G_NET):  # noqa: N801
    """AttnGAN's generator with GLAM stages; same ``run`` interface."""

    next_stage = NEXT_STAGE_G


D_NET = attngan.D_NET  # MirrorGAN keeps AttnGAN's discriminators


class CAPTION_CNN(nn.Module):  # noqa: N801
    """Image ``[B, 3, S, S]`` in [-1, 1] -> feature ``[B, embed_size]`` (CNN, ``linear``, ``bn``)."""

    def __init__(self, embed_size: int = 256, width: int = 32, image_size: int = 64):
        super().__init__()
        self.image_size = image_size
        w = width
        layers: list[nn.Module] = []
        cin = 3
        for cout in (w, 2 * w, 4 * w, 8 * w):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(8 * w, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def forward(self, images):
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.bn(self.linear(self.features(images)))


class CAPTION_RNN(nn.Module):  # noqa: N801
    """Teacher-forced LSTM decoder: the image feature is the first input, then the words."""

    def __init__(self, embed_size: int, hidden_size: int, vocab_size: int, num_layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)

    def forward(self, features, captions, cap_lens):
        emb = torch.cat((features.unsqueeze(1), self.embed(captions)), 1)  # (B, T + 1, E)
        packed = pack_padded_sequence(emb, cap_lens.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        hiddens, _ = self.lstm(packed)
        return self.linear(hiddens.data), packed.sorted_indices  # logits per packed step


def caption_loss(cnn: CAPTION_CNN, rnn: CAPTION_RNN, images, tokens, lengths) -> torch.Tensor:
    """Cross-entropy of STREAM's teacher-forced word predictions against the caption (official
    ``caption_loss`` on ``pack_padded_sequence(captions)``)."""
    logits, _ = rnn(cnn(images), tokens, lengths)
    target = pack_padded_sequence(tokens, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False).data
    return F.cross_entropy(logits, target)
