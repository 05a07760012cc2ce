"""StackGAN v1 (Zhang et al., "StackGAN: Text to Photo-realistic Image Synthesis with Stacked
Generative Adversarial Networks", ICCV 2017).

Stage I draws a low-resolution image from noise and the conditioning-augmented sentence;
stage II encodes the (frozen) stage-I image, joins it with the condition, refines it with
residual blocks and upsamples to the high resolution.

Module names follow hanzhanggit/StackGAN-Pytorch ``code/model.py`` (``STAGE1_G.ca_net.fc``,
``.fc``, ``.upsample1..4``, ``.img``; ``STAGE1_D.encode_img``, ``get_cond_logits.outlogits``;
``STAGE2_G.STAGE1_G``, ``.encoder``, ``.hr_joint``, ``.residual``, ``.upsample1..4``, ``.img``;
``STAGE2_D.get_uncond_logits``), so official weights load by name. Defaults are
``code/miscc/config.py`` (the birds shape): ``GF_DIM = 128, DF_DIM = 64, CONDITION_DIM =
128, Z_DIM = 100, R_NUM = 4``, 64 -> 256. The official heads end in ``nn.Sigmoid`` for
``BCELoss``; here they return logits for ``BCEWithLogits`` (same loss, no parameters).
"""
from __future__ import annotations

import torch
from torch import nn

from t2igan.models.blocks import CA_NET, GenOutput, ResBlockReLU, Upsamplings, conv3x3, log2_int, to_rgb, up_block_relu


class D_GET_LOGITS(nn.Module):  # noqa: N801 - official name
    """Conditional head (image code ++ condition replicated at 4x4) or unconditional head."""

    def __init__(self, ndf: int, nef: int, bcondition: bool = True):
        super().__init__()
        self.ef_dim, self.bcondition = nef, bcondition
        if bcondition:
            self.outlogits = nn.Sequential(conv3x3(ndf * 8 + nef, ndf * 8), nn.BatchNorm2d(ndf * 8),
                                           nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4))
        else:
            self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4))

    def forward(self, h_code, c_code=None):
        if self.bcondition and c_code is not None:
            c = c_code.view(-1, self.ef_dim, 1, 1).expand(-1, -1, h_code.size(2), h_code.size(3))
            h_code = torch.cat((h_code, c), 1)
        return self.outlogits(h_code).view(-1)


def _encode_img(ndf: int, imsize: int) -> nn.Sequential:
    """STAGE1_D / STAGE2_D image encoder: stride-2 convs down to 4x4 (widths ndf * 2**i),
    then 3x3 convs halving the width back to 8*ndf (official STAGE2_D at 256: 32ndf -> 16 -> 8).
    Below 64 px (CPU presets) the widths start higher so the 4x4 code still has 8*ndf channels."""
    n = log2_int(imsize, "StackGAN image size") - 2
    if n < 1:
        raise ValueError(f"StackGAN discriminator image size must be >= 8, got {imsize}")
    chs = [ndf * 2 ** (i + max(0, 4 - n)) for i in range(n)]
    layers: list[nn.Module] = [nn.Conv2d(3, chs[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for a, b in zip(chs[:-1], chs[1:]):
        layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, inplace=True)]
    c = chs[-1]
    while c > ndf * 8:
        layers += [conv3x3(c, c // 2), nn.BatchNorm2d(c // 2), nn.LeakyReLU(0.2, inplace=True)]
        c //= 2
    return nn.Sequential(*layers)


class STAGE1_G(Upsamplings, nn.Module):  # noqa: N801
    """Stage-I generator: ``run(noise, sent, eps=None) -> GenOutput([image], mu, logvar)``."""

    def __init__(self, t_dim: int = 1024, c_dim: int = 128, nz: int = 100, gf_dim: int = 128, imsize: int = 64):
        super().__init__()
        self.config = dict(t_dim=t_dim, c_dim=c_dim, nz=nz, gf_dim=gf_dim, imsize=imsize)
        self.nz, self.c_dim, self.imsize, self.eps_dims = nz, c_dim, imsize, (c_dim,)
        self.gf_dim = ngf = gf_dim * 8
        n_up = log2_int(imsize, "stage-I image size") - 2
        if not 1 <= n_up <= 4:
            raise ValueError(f"stage-I image size must be 8..64, got {imsize}")
        self.ca_net = CA_NET(t_dim, c_dim, glu=False)
        self.fc = nn.Sequential(nn.Linear(nz + c_dim, ngf * 4 * 4, bias=False), nn.BatchNorm1d(ngf * 4 * 4), nn.ReLU(True))
        chs = [ngf // 2 ** i for i in range(n_up + 1)]
        self.build_upsamplings(chs, up_block_relu)
        self.img = to_rgb(chs[-1])

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        c_code, mu, logvar = self.ca_net(sent, eps)
        h = self.upsamplings(self.fc(torch.cat((noise, c_code), 1)).view(-1, self.gf_dim, 4, 4))
        return GenOutput(images=[self.img(h)], mu=mu, logvar=logvar)

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent).images[-1]


class STAGE1_D(nn.Module):  # noqa: N801
    def __init__(self, df_dim: int = 64, c_dim: int = 128, imsize: int = 64):
        super().__init__()
        self.encode_img = _encode_img(df_dim, imsize)
        self.get_cond_logits = D_GET_LOGITS(df_dim, c_dim)
        self.get_uncond_logits = None

    def forward(self, image):
        return self.encode_img(image)


class STAGE2_G(Upsamplings, nn.Module):  # noqa: N801
    """Stage-II generator; holds the frozen stage-I generator as ``STAGE1_G`` (as the official
    code does), which always stays in eval mode and takes no gradient.

    ``stage1``: constructor arguments of the stage-I generator (its ``config``).
    ``run`` returns both images: ``[stage-I (imsize/4 ... ), stage-II]``.
    """

    def __init__(self, stage1: dict, gf_dim: int = 128, c_dim: int = 128, r_num: int = 4, imsize: int = 256):
        super().__init__()
        self.config = dict(stage1=dict(stage1), gf_dim=gf_dim, c_dim=c_dim, r_num=r_num, imsize=imsize)
        self.STAGE1_G = STAGE1_G(**stage1)
        self.STAGE1_G.requires_grad_(False)
        s1 = self.STAGE1_G.imsize
        self.nz, self.c_dim, self.imsize, self.ef_dim = self.STAGE1_G.nz, c_dim, imsize, c_dim
        self.stage_sizes = [s1, imsize]  # run() draws both stages
        ngf = gf_dim
        n_up = log2_int(imsize, "stage-II image size") - log2_int(s1, "stage-I image size") + 2  # from s1/4
        if not 1 <= n_up <= 4:
            raise ValueError(f"stage-II image size {imsize} must be 2..16 times the stage-I size {s1} * 4 / 4")
        self.ca_net = CA_NET(self.STAGE1_G.config["t_dim"], c_dim, glu=False)
        self.encoder = nn.Sequential(
            conv3x3(3, ngf), nn.ReLU(True),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.hr_joint = nn.Sequential(conv3x3(c_dim + ngf * 4, ngf * 4), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.residual = nn.Sequential(*[ResBlockReLU(ngf * 4) for _ in range(r_num)])
        chs = [ngf * 4 // 2 ** i for i in range(n_up + 1)]  # 256: 4ngf, 2ngf, ngf, ngf/2, ngf/4
        self.build_upsamplings(chs, up_block_relu)
        self.img = to_rgb(chs[-1])

    def train(self, mode: bool = True):
        super().train(mode)
        self.STAGE1_G.eval()  # frozen stage I: BN uses its running statistics
        return self

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        eps1 = eps2 = None
        if eps is not None:  # [B, 2 * c_dim]: stage-I then stage-II condition noise
            eps1, eps2 = eps[:, :self.STAGE1_G.c_dim], eps[:, self.STAGE1_G.c_dim:]
        with torch.no_grad():
            stage1_img = self.STAGE1_G.run(noise, sent, eps=eps1).images[-1].detach()
        encoded = self.encoder(stage1_img)
        c_code, mu, logvar = self.ca_net(sent, eps2)
        c = c_code.view(-1, self.ef_dim, 1, 1).expand(-1, -1, encoded.size(2), encoded.size(3))
        h = self.upsamplings(self.residual(self.hr_joint(torch.cat((encoded, c), 1))))
        return GenOutput(images=[stage1_img, self.img(h)], mu=mu, logvar=logvar)

    @property
    def eps_dims(self) -> tuple[int, int]:  # stage-I CA noise, then stage-II CA noise
        return (self.STAGE1_G.c_dim, self.c_dim)

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent).images[-1]


class STAGE2_D(nn.Module):  # noqa: N801
    def __init__(self, df_dim: int = 64, c_dim: int = 128, imsize: int = 256):
        super().__init__()
        self.encode_img = _encode_img(df_dim, imsize)
        self.get_cond_logits = D_GET_LOGITS(df_dim, c_dim, bcondition=True)
        self.get_uncond_logits = D_GET_LOGITS(df_dim, c_dim, bcondition=False)

    def forward(self, image):
        return self.encode_img(image)
