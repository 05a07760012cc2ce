"""Golden outputs of the classic generators and discriminators (StackGAN v1, StackGAN++ and its
HDGAN option, AttnGAN, MirrorGAN), built small with a fixed seed.

They pin what a refactor of the shared blocks must not change: every state-dict key, its shape
and its place in the order (official checkpoints import by name), the default initialisation
(seeded construction draws the same numbers only if the modules are built in the same order),
and the train-mode outputs for fixed inputs. tests/data/classic_golden.safetensors and
tests/data/classic_golden_keys.txt were written by this file from the code before the
refactor into ``TreeGenerator``/``NextStageTrunk``:

    PYTHONPATH=$PWD python tests/test_classic_golden.py --write

(re-run it only when a change of outputs is intended, and say so in the commit).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from t2igan.models import attngan, mirrorgan, stackgan, stackganpp

DATA = Path(__file__).parent / "data"
GOLDEN, KEYS = DATA / "classic_golden.safetensors", DATA / "classic_golden_keys.txt"
B, T_DIM, T = 3, 16, 5  # batch, sentence/word width, words per caption


def _inputs(nz: int, n_eps: int):
    g = torch.Generator().manual_seed(1)
    z, sent = torch.randn(B, nz, generator=g), torch.randn(B, T_DIM, generator=g)
    eps = torch.randn(B, n_eps, generator=g)
    words = torch.randn(B, T_DIM, T, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]).bool()  # padding on two captions
    return z, sent, eps, words, mask


def _image(size: int, seed: int):
    return torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(seed)).tanh()


def _stackgan_v1():
    s1 = stackgan.STAGE1_G(t_dim=T_DIM, c_dim=4, nz=8, gf_dim=2, imsize=16)
    g = stackgan.STAGE2_G(s1.config, gf_dim=4, c_dim=4, r_num=2, imsize=32)
    d1, d2 = stackgan.STAGE1_D(df_dim=2, c_dim=4, imsize=16), stackgan.STAGE2_D(df_dim=2, c_dim=4, imsize=32)
    z, sent, eps, _, _ = _inputs(8, 8)
    out = g.run(z, sent, eps=eps)
    f1, f2 = d1(_image(16, 2)), d2(_image(32, 3))
    res = {"img0": out.images[0], "img1": out.images[1], "mu": out.mu, "logvar": out.logvar,
           "d1_cond": d1.get_cond_logits(f1, out.mu), "d2_cond": d2.get_cond_logits(f2, out.mu),
           "d2_uncond": d2.get_uncond_logits(f2)}
    return {"g": g, "d1": d1, "d2": d2}, res


def _stackganpp(hdgan: bool, branch_num: int, base_size: int, gf_dim: int):
    def build():
        g = stackganpp.G_NET(t_dim=T_DIM, c_dim=4, nz=8, gf_dim=gf_dim, r_num=2, branch_num=branch_num,
                             base_size=base_size)
        sizes = [base_size * 2 ** k for k in range(branch_num)] + [128, 256]  # 128/256: the deeper image codes
        ds = [stackganpp.D_NET(s, df_dim=1 if s >= 128 else 2, c_dim=4, hdgan=hdgan) for s in sizes]
        z, sent, eps, _, _ = _inputs(8, 4)
        out = g.run(z, sent, eps=eps)
        res = {f"img{k}": img for k, img in enumerate(out.images)} | {"mu": out.mu, "logvar": out.logvar}
        for s, d in zip(sizes, ds):
            x = out.images[sizes.index(s)] if s in sizes[:branch_num] else _image(s, s)
            res[f"d{s}_cond"], res[f"d{s}_uncond"] = d(x, out.mu)
        return {"g": g} | {f"d{s}": d for s, d in zip(sizes, ds)}, res
    return build


def _attention(module):
    def build():
        g = module.G_NET(t_dim=T_DIM, c_dim=4, nz=8, gf_dim=4, r_num=2, branch_num=3, base_size=8)
        sizes = [8, 16, 32, 256]
        ds = [module.D_NET(s, df_dim=1 if s >= 128 else 2, nef=T_DIM) for s in sizes]
        z, sent, eps, words, mask = _inputs(8, 4)
        out = g.run(z, sent, words, mask, eps=eps)
        res = {f"img{k}": img for k, img in enumerate(out.images)} | {"mu": out.mu, "logvar": out.logvar}
        res |= {f"att{k}": a for k, a in enumerate(out.attention)}
        for k, (s, d) in enumerate(zip(sizes, ds)):
            code = d(out.images[k] if k < 3 else _image(s, s))
            res[f"d{s}_cond"], res[f"d{s}_uncond"] = d.COND_DNET(code, sent), d.UNCOND_DNET(code)
        return {"g": g} | {f"d{s}": d for s, d in zip(sizes, ds)}, res
    return build


CASES = {
    "stackgan_v1": _stackgan_v1,
    "stackganpp": _stackganpp(False, 3, 8, 8),
    "stackganpp_64": _stackganpp(False, 1, 64, 2),  # one branch: INIT_STAGE_G with four up-blocks
    "hdgan": _stackganpp(True, 2, 16, 4),
    "attngan": _attention(attngan),
    "mirrorgan": _attention(mirrorgan),
}


def run_case(name: str):
    """-> (ordered ``case/net key shape`` lines, golden tensors) of one case, built with seed 0 and
    run on one thread (the sums of a multi-threaded reduction are ordered differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        nets, res = CASES[name]()  # train mode: BN on batch statistics
    finally:
        torch.set_num_threads(threads)
    lines, tensors = [], {}
    for net_name, net in nets.items():
        state = net.state_dict()
        lines += [f"{name}/{net_name} {k} {tuple(v.shape)}" for k, v in state.items()]
        # per entry: sum and sum of squares of the initial values (the init fingerprint)
        tensors[f"{name}/{net_name}/init"] = torch.tensor([[v.double().sum(), v.double().pow(2).sum()]
                                                           for v in state.values()], dtype=torch.float64)
    for k, v in res.items():
        v = v.detach()
        tensors[f"{name}/{k}/stats"] = torch.stack([v.double().sum(), v.double().abs().sum(), v.double().pow(2).sum()])
        if v.dim() == 4:  # a few pixels of every map, at most 4x4
            v = v[:, :, ::max(1, v.shape[2] // 4), ::max(1, v.shape[3] // 4)]
        tensors[f"{name}/{k}/values"] = v.contiguous()
    return lines, tensors


def write() -> None:
    from safetensors.torch import save_file

    lines, tensors = [], {}
    for name in CASES:
        case_lines, case_tensors = run_case(name)
        lines += case_lines
        tensors |= case_tensors
    KEYS.write_text("\n".join(lines) + "\n")
    save_file(tensors, str(GOLDEN))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(tensors)} tensors) and {KEYS} ({len(lines)} keys)")


@pytest.mark.parametrize("name", list(CASES))
def test_classic_networks_match_the_golden_file(name):
    from safetensors.torch import load_file

    lines, tensors = run_case(name)
    expect_lines = [ln for ln in KEYS.read_text().splitlines() if ln.startswith(name + "/")]
    assert lines == expect_lines  # same keys, same shapes, same order
    golden = {k: v for k, v in load_file(str(GOLDEN)).items() if k.startswith(name + "/")}
    assert sorted(tensors) == sorted(golden)
    # Bit-exact on the machine that wrote the file; another CPU may sum in another order (about
    # 1e-6 per value, more on the sums over whole maps), far below what any change of a block gives.
    for k, v in golden.items():
        tol = 1e-6 if k.endswith("/init") else 1e-4 if k.endswith("/stats") else 1e-5
        torch.testing.assert_close(tensors[k], v, rtol=tol, atol=tol, msg=lambda m, k=k: f"{k}: {m}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {sys.argv[0]} --write   (rewrites {GOLDEN.name} and {KEYS.name})")
    write()
