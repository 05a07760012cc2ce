"""The official DAMSM image encoder (AttnGAN ``code/model.py`` ``CNN_ENCODER``, also DF-GAN's
``models/DAMSM.py``): an ImageNet Inception-v3 trunk (torchvision's ``inception_v3`` blocks under
their torchvision names, ``Conv2d_1a_3x3`` ... ``Mixed_7c``) with two trained projections:

* ``emb_features``: 1x1 conv (no bias) of the ``Mixed_6e`` map ``[B, 768, 17, 17]`` -> region
  features ``[B, nef, 17, 17]``;
* ``emb_cnn_code``: linear of the 8x8-average-pooled ``Mixed_7c`` map ``[B, 2048]`` -> global code
  ``[B, nef]``.

Input: images in [-1, 1] of any size, resized bilinearly to 299x299 first (the official
``nn.Upsample(size=(299, 299), mode='bilinear')``; ``align_corners=False`` as modern torch runs it
and as DF-GAN writes it; ``align_corners=True`` reproduces torch < 0.4, which AttnGAN was
released on). The parameter names equal the official state dict's, so ``image_encoder200.pth``
loads one to one; the ImageNet trunk weights are in that file (no download here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KIND = "damsm_inception_image_encoder"


class CNN_ENCODER(nn.Module):  # noqa: N801 - official name
    """``forward(x [B, 3, H, W] in [-1, 1]) -> (regions [B, nef, 17, 17], code [B, nef])``."""

    def __init__(self, nef: int = 256, align_corners: bool = False):
        """``nef``: width of both outputs (official 256); ``align_corners``: of the 299x299 resize."""
        super().__init__()
        from torchvision.models.inception import (BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD,
                                                  InceptionE)

        self.nef, self.align_corners = nef, align_corners
        self.config = dict(nef=nef, align_corners=align_corners)
        self.image_size = 299
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.emb_features = nn.Conv2d(768, nef, kernel_size=1, stride=1, padding=0, bias=False)
        self.emb_cnn_code = nn.Linear(2048, nef)
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)  # official init_trainable_weights
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=self.align_corners)  # (B, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))  # (B, 768, 17, 17)
        features = x
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        x = F.avg_pool2d(x, kernel_size=8).flatten(1)  # (B, 2048)
        return self.emb_features(features), self.emb_cnn_code(x)
