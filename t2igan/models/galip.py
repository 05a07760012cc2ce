"""GALIP (Tao et al., "GALIP: Generative Adversarial CLIPs for Text-to-Image Synthesis", CVPR 2023).

Generator: noise -> a ``grid x grid`` code -> ``CLIP_Adapter`` (text-fused ``M_Block``s, then the
frozen CLIP vision transformer run on those features with text prompt tokens: ``CLIP_Mapper``)
-> DF-GAN-style ``G_Block``s up to the image size. Discriminator: the frozen CLIP image encoder
(``CLIP_IMG_ENCODER``: token features of a few of its layers + its projected image embedding),
a small convolutional ``NetD`` over those features and the conditional head ``NetC``.

Written against a Hugging Face ``transformers.CLIPModel`` vision tower (``embeddings``,
``pre_layrnorm``, ``encoder.layers``, ``post_layernorm``, ``visual_projection``). The numbers the
official code fixes for ViT-B/32 (width 768, 7x7 grid, 12 layers, D features after layers
1, 4, 8, prompts in layers 1..8, 224 input) come from the CLIP given; :func:`d_feature_layers`
and :func:`mapper_prompt_layers` scale the layer choices and return the official ones for 12 layers.
Module and parameter names follow the official ``code/models/GALIP.py``.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from t2igan.models.dfgan import DFBlock

DFBLK = DFBlock  # GALIP's DFBLK is DF-GAN's fusion block (affine0, LeakyReLU, affine1, LeakyReLU)
OFFICIAL_LAYERS = 12  # ViT-B/32, the CLIP of the official code
OFFICIAL_D_LAYERS = (1, 4, 8)  # CLIP_IMG_ENCODER: layers whose token features D reads
OFFICIAL_PROMPT_END = 8  # CLIP_Mapper: a prompt token joins layers 1..8
# the CLIPVisionConfig fields that define the vision transformer (what NetG keeps of the dict it is given)
VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
               "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")


def _scale(i: int, n_layers: int) -> int:
    """Official layer index ``i`` of 12 moved to a CLIP with ``n_layers`` layers (rounded half up)."""
    return math.floor(i * n_layers / OFFICIAL_LAYERS + 0.5)


def d_feature_layers(n_layers: int) -> list[int]:
    """Layers whose outputs D reads: official 1, 4, 8 of 12, scaled to ``n_layers`` (rounded half up),
    duplicates dropped (4 layers: 0, 1, 3; 6: 1, 2, 4; 24: 2, 8, 16; 2: 0, 1; 1: 0). From 3 layers on
    there are always 3 distinct ones."""
    if n_layers < 1:
        raise ValueError(f"a CLIP vision tower has at least one layer, got {n_layers}")
    return sorted({_scale(i, n_layers) for i in OFFICIAL_D_LAYERS})


def mapper_prompt_layers(n_layers: int) -> list[int]:
    """Layers of the mapper that take a prompt token: official 1..8 of 12, i.e. 1 .. round(8 L / 12)
    (4 layers: 1, 2, 3; 24: 1..16); a one-layer CLIP takes it in layer 0."""
    return [i for i in range(1, _scale(OFFICIAL_PROMPT_END, n_layers) + 1) if i < n_layers] or [0]


def vision_arch(vision_config: dict | None) -> dict:
    """The architecture fields of a ``CLIPVisionConfig.to_dict()`` (None: transformers' default, ViT-B/32)."""
    from transformers import CLIPVisionConfig

    full = CLIPVisionConfig().to_dict() if vision_config is None else dict(vision_config)
    missing = [k for k in VISION_KEYS if k not in full]
    if missing:
        raise ValueError(f"vision_config lacks {', '.join(missing)} (give CLIPVisionConfig.to_dict())")
    return {k: full[k] for k in VISION_KEYS}


def _run_layer(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    out = layer(h, None)
    return out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple


def _grid_of(arch: dict) -> int:
    if arch["image_size"] % arch["patch_size"]:
        raise ValueError(f"CLIP image_size {arch['image_size']} is not a multiple of patch_size {arch['patch_size']}")
    return arch["image_size"] // arch["patch_size"]


# ----------------------------------------------------------------------------- the frozen CLIP parts
# (class names are the official ones)
class CLIP_IMG_ENCODER(nn.Module):
    """The frozen CLIP image encoder of D and of the similarity loss: ``img [B, 3, H, W]`` in [-1, 1]
    -> (token features of ``layers`` ``[B, len(layers), width, grid, grid]``, projected image
    embedding ``[B, E]``, not normalised). Gradients flow to the image; the CLIP weights never change.

    ``vision_model`` / ``visual_projection``: those of a ``transformers.CLIPModel`` (held, not copied:
    this module is never saved). The image is mapped to [0, 1], resized to ``image_size`` with
    ``resize_mode`` (official: ``nearest``) when its side differs, and normalised with ``mean`` / ``std``."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module, layers: list[int],
                 image_size: int, mean, std, resize_mode: str = "nearest"):
        super().__init__()
        self.vision_model, self.visual_projection = vision_model, visual_projection
        self.layers, self.image_size, self.resize_mode = list(layers), int(image_size), resize_mode
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode

    def transf_to_CLIP_input(self, img: torch.Tensor) -> torch.Tensor:
        x = img * 0.5 + 0.5
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            kw = {} if self.resize_mode == "nearest" else {"align_corners": False}
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode=self.resize_mode, **kw)
        return (x - self.mean) / self.std

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vm = self.vision_model
        h = vm.pre_layrnorm(vm.embeddings(self.transf_to_CLIP_input(img)))  # (B, 1 + g*g, W)
        B, N, W = h.shape
        g = round(math.sqrt(N - 1))
        local = []
        for i, layer in enumerate(vm.encoder.layers):
            h = _run_layer(layer, h)
            if i in self.layers:
                local.append(h[:, 1:].transpose(1, 2).reshape(B, W, g, g))
        emb = self.visual_projection(vm.post_layernorm(h[:, 0]))
        return torch.stack(local, 1), emb


class CLIP_Mapper(nn.Module):
    """The generator's frozen copy of the CLIP vision transformer (its class and position
    embeddings, ``pre_layrnorm`` and every encoder layer), run on feature maps instead of patch
    embeddings: ``(img [B, width, grid, grid], prompts [B, len(prompt_layers), width]) -> [B, width,
    grid, grid]``. Layer ``i`` of ``prompt_layers`` sees one more token, the next prompt, dropped after it.

    Its weights are copied from a CLIP once (:meth:`load_from`) and saved with the generator, so a
    saved generator is rebuilt from its own folder; ``requires_grad`` is False and it stays in eval mode."""

    def __init__(self, vision_config: dict, prompt_layers: list[int]):
        super().__init__()
        from transformers import CLIPVisionConfig
        from transformers.models.clip.modeling_clip import CLIPEncoderLayer

        arch = vision_arch(vision_config)
        cfg = CLIPVisionConfig.from_dict(arch)
        cfg._attn_implementation = "sdpa"
        self.width, self.grid = arch["hidden_size"], _grid_of(arch)
        self.prompt_layers = [int(i) for i in prompt_layers]
        bad = [i for i in self.prompt_layers if not 0 <= i < arch["num_hidden_layers"]]
        if bad or len(set(self.prompt_layers)) != len(self.prompt_layers):
            raise ValueError(f"prompt_layers {self.prompt_layers}: distinct layers of 0..{arch['num_hidden_layers'] - 1}")
        self.class_embedding = nn.Parameter(torch.zeros(self.width))
        self.position_embedding = nn.Embedding(self.grid * self.grid + 1, self.width)
        self.pre_layrnorm = nn.LayerNorm(self.width, eps=arch["layer_norm_eps"])
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg) for _ in range(arch["num_hidden_layers"]))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def load_from(self, vision_model: nn.Module) -> None:
        """Copy the weights of a ``CLIPModel.vision_model`` (of the same configuration) into this copy."""
        emb = vision_model.embeddings
        self.class_embedding.copy_(emb.class_embedding)
        self.position_embedding.weight.copy_(emb.position_embedding.weight)
        self.pre_layrnorm.load_state_dict(vision_model.pre_layrnorm.state_dict())
        for mine, theirs in zip(self.layers, vision_model.encoder.layers, strict=True):
            mine.load_state_dict(theirs.state_dict())

    def forward(self, img: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        B = img.size(0)
        h = img.flatten(2).transpose(1, 2)  # (B, g*g, W)
        cls = self.class_embedding.to(h.dtype).expand(B, 1, -1)
        h = self.pre_layrnorm(torch.cat((cls, h), 1) + self.position_embedding.weight.to(h.dtype))
        k = 0
        for i, layer in enumerate(self.layers):
            if i in self.prompt_layers:
                h = _run_layer(layer, torch.cat((h, prompts[:, k:k + 1].to(h.dtype)), 1))[:, :-1]
                k += 1
            else:
                h = _run_layer(layer, h)
        return h[:, 1:].transpose(1, 2).reshape(B, self.width, self.grid, self.grid)


# ----------------------------------------------------------------------------- generator
class M_Block(nn.Module):
    """Mapping block at the code's resolution: shortcut + (conv, fuse, conv, fuse)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, cond_dim: int, k: int, s: int, p: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, k, s, p)
        self.fuse1 = DFBLK(cond_dim, mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, k, s, p)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        self.learnable_sc = in_ch != out_ch
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sc = self.c_sc(h) if self.learnable_sc else h
        return sc + self.fuse2(self.conv2(self.fuse1(self.conv1(h), c)), c)


class CLIP_Adapter(nn.Module):
    """``map_num`` M_Blocks, a 5x5 conv to the CLIP width, the frozen CLIP_Mapper with prompts
    ``fc_prompt(c)``, and a 5x5 conv of ``features + 0.1 * mapped`` to the generator width ``G_ch``."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, G_ch: int, CLIP_ch: int, cond_dim: int,
                 k: int, s: int, p: int, map_num: int, vision_config: dict, prompt_layers: list[int]):
        super().__init__()
        self.CLIP_ch = CLIP_ch
        self.FBlocks = nn.ModuleList([M_Block(in_ch, mid_ch, out_ch, cond_dim, k, s, p)] +
                                     [M_Block(out_ch, mid_ch, out_ch, cond_dim, k, s, p) for _ in range(map_num - 1)])
        self.conv_fuse = nn.Conv2d(out_ch, CLIP_ch, 5, 1, 2)
        self.CLIP_ViT = CLIP_Mapper(vision_config, prompt_layers)
        self.conv = nn.Conv2d(CLIP_ch, G_ch, 5, 1, 2)
        self.fc_prompt = nn.Linear(cond_dim, CLIP_ch * len(prompt_layers))

    def forward(self, out: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        prompts = self.fc_prompt(c).view(c.size(0), -1, self.CLIP_ch)  # (B, P, CLIP_ch)
        for block in self.FBlocks:
            out = block(out, c)
        fuse_feat = self.conv_fuse(out)
        return self.conv(fuse_feat + 0.1 * self.CLIP_ViT(fuse_feat, prompts))


class G_Block(nn.Module):
    """Nearest-neighbour resize to ``imsize``, then shortcut + (fuse, conv, fuse, conv) (DF-GAN's
    GBlock with a fixed output size: the first block goes from the CLIP grid to 8, the last to the image)."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, imsize: int):
        super().__init__()
        self.imsize = imsize
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBLK(cond_dim, in_ch)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(h, size=(self.imsize, self.imsize))
        sc = self.c_sc(h) if self.learnable_sc else h
        return sc + self.c2(self.fuse2(self.c1(self.fuse1(h, y)), y))


def get_G_in_out_chs(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) widths of the G_Blocks: ``nf * min(2**i, 8)`` for ``i < ceil(log2(imsize)) - 1``, widest
    first (224 has the blocks of 256, as the official network that draws 224 for its 256 config)."""
    layer_num = math.ceil(math.log2(imsize)) - 1
    chs = [nf * min(2 ** i, 8) for i in range(layer_num)][::-1]
    return list(itertools.pairwise(chs))


class NetG(nn.Module):
    """GALIP generator: ``forward(noise [B, nz], c [B, cond_dim]) -> image [B, ch_size, imsize, imsize]``
    (no final tanh, as in the official code: values around [-1, 1], clamped when shown).

    The official network draws 224x224 (CLIP's input) for its 256 config; ``imsize=224`` with the
    default ViT-B/32 ``vision_config`` is that network."""

    def __init__(self, ngf: int = 64, nz: int = 100, cond_dim: int = 512, imsize: int = 224, ch_size: int = 3,
                 vision_config: dict | None = None, prompt_layers: list[int] | None = None,
                 code_ch: int = 64, mid_ch: int = 32, map_num: int = 4):
        """``ngf``: base width (official nf 64); ``nz``: noise size; ``cond_dim``: sentence width (CLIP's
        embedding, 512); ``imsize``: output side (>= 8); ``ch_size``: image channels; ``vision_config``: the
        CLIP vision tower's ``CLIPVisionConfig.to_dict()`` (None: ViT-B/32); ``prompt_layers``: mapper
        layers given a prompt token (None: :func:`mapper_prompt_layers`); ``code_ch`` / ``mid_ch``: widths of the
        mapping blocks (official 64 / 32); ``map_num``: number of M_Blocks (official 4)."""
        super().__init__()
        if imsize < 8:
            raise ValueError(f"GALIP image size must be >= 8, got {imsize}")
        arch = vision_arch(vision_config)
        layers = prompt_layers if prompt_layers is not None else mapper_prompt_layers(arch["num_hidden_layers"])
        self.ngf, self.nz, self.cond_dim, self.imsize, self.ch_size = ngf, nz, cond_dim, imsize, ch_size
        self.code_sz, self.code_ch, self.mid_ch = _grid_of(arch), code_ch, mid_ch
        self.CLIP_ch = arch["hidden_size"]
        self.config = {"ngf": ngf, "nz": nz, "cond_dim": cond_dim, "imsize": imsize, "ch_size": ch_size,
                       "vision_config": arch, "prompt_layers": [int(i) for i in layers], "code_ch": code_ch,
                       "mid_ch": mid_ch, "map_num": map_num}  # constructor arguments
        self.fc_code = nn.Linear(nz, self.code_sz * self.code_sz * code_ch)
        self.mapping = CLIP_Adapter(code_ch, mid_ch, code_ch, ngf * 8, self.CLIP_ch, cond_dim + nz, 3, 1, 1, map_num,
                                    arch, layers)
        pairs = get_G_in_out_chs(ngf, imsize)
        sizes = [8 * 2 ** i for i in range(len(pairs) - 1)] + [imsize]
        self.GBlocks = nn.ModuleList(G_Block(cond_dim + nz, i, o, s) for (i, o), s in zip(pairs, sizes))
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(pairs[-1][1], ch_size, 3, 1, 1))

    def load_clip(self, vision_model: nn.Module) -> None:
        """Copy the frozen CLIP layers of the mapper from a ``CLIPModel.vision_model`` (at training start)."""
        self.mapping.CLIP_ViT.load_from(vision_model)

    def forward(self, noise: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cond = torch.cat((noise, c), 1)  # (B, nz + cond_dim)
        code = self.fc_code(noise).view(noise.size(0), self.code_ch, self.code_sz, self.code_sz)
        out = self.mapping(code, cond)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


# ----------------------------------------------------------------------------- discriminator
class D_Block(nn.Module):
    """Residual block at the CLIP grid: ``shortcut(x) + gamma * conv_r(x) [+ beta * CLIP_feat]``
    (``gamma`` and ``beta`` learnt, starting at 0)."""

    def __init__(self, fin: int, fout: int, k: int, s: int, p: int, res: bool, CLIP_feat: bool):
        super().__init__()
        self.res, self.CLIP_feat = res, CLIP_feat
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, k, s, p, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fout, fout, k, s, p, bias=False), nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1, 1, 0)
        if res:
            self.gamma = nn.Parameter(torch.zeros(1))
        if CLIP_feat:
            self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, CLIP_feat: torch.Tensor | None = None) -> torch.Tensor:
        res = self.conv_r(x)
        out = self.conv_s(x) if self.learned_shortcut else x
        if self.res:
            out = out + self.gamma * res
        if self.CLIP_feat:
            out = out + self.beta * CLIP_feat
        return out


class NetD(nn.Module):
    """GALIP discriminator body on CLIP features ``[B, n_feats, CLIP_ch, g, g]`` -> ``[B, 8*ndf, g, g]``:
    the first layer's features pass D_Blocks that add the next layers' features (official: 768 -> 768
    twice, then 768 -> 512; 512 = 8 * nf for the official nf 64)."""

    def __init__(self, ndf: int = 64, CLIP_ch: int = 768, n_feats: int = 3):
        """``ndf``: width (output 8 * ndf); ``CLIP_ch``: the CLIP vision width; ``n_feats``: CLIP layers read."""
        super().__init__()
        self.DBlocks = nn.ModuleList(D_Block(CLIP_ch, CLIP_ch, 3, 1, 1, res=True, CLIP_feat=True)
                                     for _ in range(n_feats - 1))
        self.main = D_Block(CLIP_ch, ndf * 8, 3, 1, 1, res=True, CLIP_feat=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = h[:, 0]
        for idx, block in enumerate(self.DBlocks):
            out = block(out, h[:, idx + 1])
        return self.main(out)


def head_kernels(grid: int) -> tuple[int, int]:
    """Kernel sizes of NetC's two valid convolutions taking a ``grid x grid`` map to 1x1 (official 7: 4, 4)."""
    k1 = grid // 2 + 1
    return k1, grid - k1 + 1


class NetC(nn.Module):
    """GALIP conditional head: (features ``[B, 8*ndf, g, g]``, sentence ``[B, cond_dim]``) -> logit ``[B, 1, 1, 1]``."""

    def __init__(self, ndf: int = 64, cond_dim: int = 512, grid: int = 7):
        """``grid``: the CLIP grid (image_size // patch_size; official 7)."""
        super().__init__()
        self.cond_dim, self.grid = cond_dim, grid
        k1, k2 = head_kernels(grid)
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, k1, 1, 0, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, k2, 1, 0, bias=False),
        )

    def forward(self, out: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = cond.view(-1, self.cond_dim, 1, 1).expand(-1, -1, out.size(2), out.size(3))
        return self.joint_conv(torch.cat((out, c), 1))
