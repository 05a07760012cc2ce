"""Building blocks shared by the model families."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class Affine(nn.Module):
    """Text-conditioned channel-wise affine transform (DF-GAN): ``gamma(y) * x + beta(y)``.
    Initialised to the identity (gamma = 1, beta = 0)."""

    def __init__(self, cond_dim: int, num_features: int):
        super().__init__()

        def mlp():
            return nn.Sequential(OrderedDict([
                ("linear1", nn.Linear(cond_dim, num_features)),
                ("relu1", nn.ReLU(inplace=True)),
                ("linear2", nn.Linear(num_features, num_features)),
            ]))

        self.fc_gamma, self.fc_beta = mlp(), mlp()
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma = self.fc_gamma(y)[:, :, None, None]  # (B, C, 1, 1)
        beta = self.fc_beta(y)[:, :, None, None]
        return gamma * x + beta
