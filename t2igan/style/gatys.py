"""Gatys et al., "Image Style Transfer Using Convolutional Neural Networks" (CVPR 2016).

The image itself is optimised (L-BFGS or Adam) so that its VGG-19 ``conv4_2`` responses match
the content image's and the Gram matrices of its ``conv1_1 .. conv5_1`` responses match the
style image's:

    L_content = 1/2 * sum (F_l - P_l)^2                               (l = conv4_2)
    E_l       = 1 / (4 N_l^2 M_l^2) * sum (G_l - A_l)^2                (N_l channels, M_l = H_l W_l)
    L_style   = sum_l w_l E_l,  w_l = 1/5                              (conv1_1 .. conv5_1)
    L_total   = alpha * L_content + beta * L_style                     (paper: alpha/beta = 1e-3 .. 1e-4)

Features are read after the ReLU of each named convolution (``relu4_2`` for conv4_2, as the
paper's "feature responses"), max pooling is replaced by average pooling (the paper's choice
for synthesis). The paper starts from white noise; ``init`` also offers the content image
(the common, faster choice, and the default here).
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from t2igan import T2IError
from t2igan.models.vgg import VGG19Features, gram, load_vgg19, resolve_weights

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"


def relu(name: str) -> str:
    return name.replace("conv", "relu")


@dataclass
class StyleOptions:
    size: int = 256  # longest side of the output (the content image is resized to it; the style image to the same size)
    steps: int = 500  # optimisation iterations at most (paper figures: ~1000 to the eye)
    optimizer: str = "lbfgs"  # lbfgs | adam
    lr: float = 0.0  # step size; 0: 1.0 for L-BFGS, 0.02 for Adam (pixels in [0, 1])
    content_weight: float = 1.0  # alpha
    style_weight: float = 1e3  # beta (alpha/beta = 1e-3, the paper's Fig. 2 middle column)
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = ()  # w_l; empty: 1/len(style_layers) each (paper)
    content_layer: str = CONTENT_LAYER
    init: str = "content"  # content | noise (paper) | style
    pool: str = "avg"  # avg (paper) | max (torchvision)
    plateau_patience: int = 50  # stop when the total loss fell by less than plateau_tol (relative) over this many iterations; 0 = off
    plateau_tol: float = 1e-3
    seed: int = 0  # noise init
    device: str = "cpu"

    def check(self) -> None:
        if self.size < 16 or self.size > 4096:
            raise T2IError(f"size must be between 16 and 4096 pixels, got {self.size}")
        if self.steps < 1:
            raise T2IError(f"steps must be at least 1, got {self.steps}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise T2IError(f"optimizer must be lbfgs or adam, got {self.optimizer!r}")
        if self.init not in ("content", "noise", "style"):
            raise T2IError(f"init must be content, noise or style, got {self.init!r}")
        if self.pool not in ("avg", "max"):
            raise T2IError(f"pool must be avg or max, got {self.pool!r}")
        if self.lr < 0 or self.content_weight < 0 or self.style_weight < 0 or self.plateau_tol < 0 or self.plateau_patience < 0:
            raise T2IError("lr, content_weight, style_weight, plateau_tol and plateau_patience must be >= 0")
        if self.style_layer_weights and len(self.style_layer_weights) != len(self.style_layers):
            raise T2IError(f"{len(self.style_layer_weights)} style layer weights for {len(self.style_layers)} style layers")


@dataclass
class StyleResult:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    history: dict = field(default_factory=dict)  # iteration, content, style, total: lists; stopped_by


def load_image(path: str | os.PathLike, size: int | None = None, hw: tuple[int, int] | None = None) -> torch.Tensor:
    """An RGB image file as (1, 3, H, W) in [0, 1]; longest side ``size`` or exactly ``hw``."""
    p = Path(path)
    if not p.is_file():
        raise T2IError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if hw is not None:
                im = im.resize((hw[1], hw[0]), Image.BICUBIC)
            elif size is not None:
                s = size / max(im.size)
                im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise T2IError(f"{p}: not a readable image ({str(e)[:80]})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def save_image(x: torch.Tensor, path: str | os.PathLike) -> None:
    arr = (x.detach().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)


def losses(vgg: VGG19Features, x: torch.Tensor, targets: dict, o: StyleOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(content loss, style loss) of image ``x`` (1, 3, H, W) against the precomputed targets."""
    names = [relu(o.content_layer)] + [relu(n) for n in o.style_layers]
    f = vgg(x, names)
    c = 0.5 * (f[relu(o.content_layer)] - targets["content"]).pow(2).sum()
    w = o.style_layer_weights or tuple(1.0 / len(o.style_layers) for _ in o.style_layers)
    s = x.new_zeros(())
    for wl, n in zip(w, o.style_layers):
        fl = f[relu(n)]
        _, ch, h, wd = fl.shape
        s = s + wl * (gram(fl) - targets["gram"][n]).pow(2).sum() / (4.0 * ch ** 2 * (h * wd) ** 2)
    return c, s


def stylize(content: torch.Tensor, style: torch.Tensor, vgg: VGG19Features, options: StyleOptions | None = None,
            progress: bool = True) -> StyleResult:
    """Optimise an image (1, 3, H, W) in [0, 1] to ``content``'s content in ``style``'s style."""
    from tqdm import tqdm

    o = options or StyleOptions()
    o.check()
    dev = torch.device(o.device)
    vgg = vgg.to(dev).eval()
    content, style = content.to(dev), style.to(dev)
    with torch.no_grad():
        fc = vgg(content, [relu(o.content_layer)])
        fs = vgg(style, [relu(n) for n in o.style_layers])
        targets = {"content": fc[relu(o.content_layer)], "gram": {n: gram(fs[relu(n)]) for n in o.style_layers}}
    g = torch.Generator().manual_seed(o.seed)
    if o.init == "content":
        x0 = content.clone()
    elif o.init == "style":
        x0 = torch.nn.functional.interpolate(style, size=content.shape[-2:], mode="bilinear", align_corners=False)
    else:
        x0 = torch.rand(content.shape, generator=g).to(dev)
    x = x0.clone().requires_grad_(True)
    lr = o.lr or (1.0 if o.optimizer == "lbfgs" else 0.02)

    def new_optimizer():
        if o.optimizer == "lbfgs":
            return torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=50, line_search_fn="strong_wolfe",
                                     tolerance_grad=0.0, tolerance_change=0.0)  # the plateau stop decides
        return torch.optim.Adam([x], lr=lr)

    opt = new_optimizer()
    hist = {"iteration": [], "content": [], "style": [], "total": [], "options": {k: list(v) if isinstance(v, tuple) else v
                                                                                  for k, v in asdict(o).items()}}
    last = {}
    # L-BFGS skips curvature pairs with y.s < 1e-10, so an objective whose scale is tiny (a random
    # VGG, small images) would stall it: it minimises total / (total at the start), a constant
    # factor (same optimum; the recorded losses are unscaled)
    with torch.no_grad():
        c0, s0 = losses(vgg, x, targets, o)
        scale = 1.0 / max(float(o.content_weight * c0 + o.style_weight * s0), 1e-30) if o.optimizer == "lbfgs" else 1.0

    def closure():
        opt.zero_grad(set_to_none=True)
        c, s = losses(vgg, x, targets, o)
        total = o.content_weight * c + o.style_weight * s
        (total * scale).backward()
        last.update(content=c.item(), style=s.item(), total=total.item())
        return total * scale

    stopped = "steps"
    bar = tqdm(range(1, o.steps + 1), desc="style", unit="it", disable=not progress, dynamic_ncols=True)
    for it in bar:
        opt.step(closure)
        if o.optimizer == "lbfgs" and opt.state[x].get("t") == 0:
            # the line search found no step along the quasi-Newton direction (ReLU kinks): restart
            # from steepest descent with an empty memory (as scipy's L-BFGS-B does)
            opt = new_optimizer()
        if o.optimizer == "adam":  # projected steps; L-BFGS's curvature pairs would not survive a projection
            with torch.no_grad():  # (it stalls), so its pixels are clamped to [0, 1] only in the output
                x.clamp_(0, 1)
        if not all(math.isfinite(v) for v in last.values()):
            stopped = "non-finite loss"
            break
        hist["iteration"].append(it)
        for k in ("content", "style", "total"):
            hist[k].append(last[k])
        bar.set_postfix(content=f"{last['content']:.3g}", style=f"{last['style']:.3g}")
        P = o.plateau_patience
        if P and len(hist["total"]) > P:
            before, now = min(hist["total"][:-P]), min(hist["total"])
            if before - now <= o.plateau_tol * abs(before):
                stopped = f"plateau (total loss fell < {o.plateau_tol:g} relative over {P} iterations)"
                break
    bar.close()
    hist["stopped_by"] = stopped
    return StyleResult(x.detach().clamp(0, 1).cpu(), hist)


def plot_history(hist: dict, path: str | os.PathLike) -> None:
    """Content, style (weighted) and total loss against the iteration, log scale (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = hist["options"]
    it = hist["iteration"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot(it, [o["content_weight"] * v for v in hist["content"]], label="alpha * content")
    ax.plot(it, [o["style_weight"] * v for v in hist["style"]], label="beta * style")
    ax.plot(it, hist["total"], label="total", color="k", lw=1)
    if all(v > 0 for v in hist["total"]):
        ax.set_yscale("log")
    ax.set_xlabel(f"iteration ({o['optimizer']})")
    ax.set_ylabel("loss")
    ax.set_title(f"Gatys style transfer: stopped by {hist['stopped_by'].split(' (')[0]}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_style(content_path, style_path, out, vgg_path=None, options: StyleOptions | None = None,
              progress: bool = True) -> dict:
    """The ``t2igan style`` command: writes OUT (the image), OUT's stem + ``.loss.json`` and
    ``.loss.png`` (the loss curve). Every input is checked before anything is written."""
    o = options or StyleOptions()
    o.check()
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise T2IError(f"output must end in .png, .jpg or .webp: {out}")
    content = load_image(content_path, size=o.size)
    style = load_image(style_path, hw=tuple(content.shape[-2:]))
    vgg = load_vgg19(resolve_weights(vgg_path), pool=o.pool)
    res = stylize(content, style, vgg, o, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(res.image, out)
    js, png = out.with_suffix(".loss.json"), out.with_suffix(".loss.png")
    hist = {**res.history, "content_image": str(content_path), "style_image": str(style_path), "vgg19": str(vgg_path or
            os.environ.get("T2IGAN_VGG19_WEIGHTS"))}
    tmp = js.with_name(js.name + ".tmp")
    tmp.write_text(json.dumps(hist, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, js)
    plot_history(hist, png)
    n = len(hist["total"])
    summary = {"image": str(out), "loss_json": str(js), "loss_plot": str(png), "iterations": n,
               "stopped_by": hist["stopped_by"]}
    if n:
        summary.update(content_first=hist["content"][0], content_last=hist["content"][-1],
                       style_first=hist["style"][0], style_last=hist["style"][-1])
    print(json.dumps(summary), file=sys.stdout)
    return summary
