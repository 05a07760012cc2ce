"""SRNet under torchrun and autocast: 2 gloo processes train the parameters of 1 on the same global
batch (the reference's stability options; the generator every 3rd step with a wider weight clip and
the VGG perceptual and style terms; no weight clipping with the bce loss), and
``train.precision=bf16`` gives the fp32 losses to bf16 rounding.

What must be the global batch's for that: the BatchNorm statistics of the generator and of both
discriminators (the trainer's global BatchNorm), the gradient average before each optimiser step
and before the ``d_clip`` weight clipping, the skeleton dice (a ratio of batch sums, all-reduced)
and the VGG style term's division by the batch size. The L1, adversarial and perceptual terms are
per-sample means, which the average over equal shards makes the global mean. Weights are compared
with :func:`assert_same` of tests/test_distributed.py (tolerance below).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

if __name__ == "__main__":  # the worker of test_srnet_two_processes_equal_one (under torchrun)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest
import torch

from test_distributed import assert_same, initial_weights, torchrun, train_here, weights

from t2igan.families.srnet import dice_loss, vgg_losses

ROOT = Path(__file__).resolve().parents[1]
SIZE = (16, 32)  # the smallest the networks take: the discriminators end at H/16 x W/16
TINY = {"model.cnum": 4, "model.ndf": 8, "train.batch_size": 8, "train.max_steps": 3, "train.progress": False,
        "train.log_every": 1, "train.sample_every": 0, "train.ckpt_every": 0, "train.threads": 1}
RUNS = {
    "reference": {},  # D every step, G every 2nd, D weights clipped to 0.01, the clamped log loss
    "every_third_vgg": {"stability.g_every": 3, "stability.d_clip": 0.05, "vgg": True},
    "unclipped_bce": {"stability.d_clip": 0.0, "loss.gan": "bce"},
}
# Not loss.gan=wgan: the discriminators end in BatchNorm(1), whose training-mode output has the batch
# mean beta whatever the input, so mean(D(fake)) - mean(D(real)) is 0 up to rounding and its gradients
# are rounding noise (which Adam turns into steps of +-lr on either run). Not g_every=1 either: three
# generator updates in three steps amplify rounding so far (one process on 1 thread against 2 threads:
# median tensor 1.4e-2 of the distance moved) that no tolerance tells rounding from a wrong term.
#
# Tolerance: the generator's first Adam step is lr * sign(gradient) per element, and at these widths
# (cnum 4: biases of 8 to 32 elements) an element whose gradient is ~0 takes either sign on either
# run: measured worst tensor 9e-2 of the distance moved, median 2e-7. Without the gradient average or
# with per-process BatchNorm statistics the worst tensor is off by 1 to 4 and the median by ~1; a
# per-process dice moves the worst by 0.35 (and is checked exactly by the worker, below).
TOLERANCE = 0.2
MEDIAN = 1e-4


def bias_before_batchnorm() -> set[str]:
    """Checkpoint keys of the convolution biases that feed a BatchNorm (the generator's
    Conv_bn_block and residual-sum biases, the discriminators' after their first layer): the
    normalisation removes any constant, so their gradient is 0 up to rounding, which Adam turns
    into steps of +-lr of random sign on either run. Compared only for being finite."""
    from t2igan.models import srnet

    keys = set()
    for name, m in srnet.Generator(3, cnum=4).named_modules():
        if isinstance(m, srnet.Conv_bn_block):
            keys.add(f"generator/{name}._conv.bias")
        elif isinstance(m, srnet.Res_block):
            keys.add(f"generator/{name}._conv3.bias")
    return keys | {f"discriminator{d}/_conv{k}.bias" for d in (1, 2) for k in (2, 3, 4, 5)}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    from t2igan.data.srnet_synth import write_srnet_synth

    root = tmp_path_factory.mktemp("srnet_ddp") / "pairs"
    write_srnet_synth(root, 16, SIZE, seed=0, test_fraction=0.25, progress=False)
    return root


@pytest.fixture(scope="module")
def vgg19(tmp_path_factory) -> Path:
    """A VGG-19 file in torchvision's format with He-scaled random weights (features of order 1
    at every layer, so the perceptual and style terms move the generator)."""
    from torchvision.models.vgg import cfgs, make_layers

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"]).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {f"features.{k}": (torch.randn(s, generator=g) * (2.0 / (s[1] * 9)) ** 0.5 if len(s) == 4 else torch.zeros(s))
             for k, s in shapes.items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path


def overrides(name: str, pairs: Path, vgg19: Path, out: Path) -> list[str]:
    o = {**TINY, **RUNS[name], "data.root": str(pairs), "train.out_dir": str(out)}
    if o.pop("vgg", False):
        o["loss.vgg19"] = str(vgg19)
    return [f"{k}={v}" for k, v in o.items()]


def test_srnet_two_processes_equal_one(pairs, vgg19, tmp_path):
    listing = tmp_path / "runs.json"
    listing.write_text(json.dumps([overrides(n, pairs, vgg19, tmp_path / f"{n}_two") for n in RUNS]))
    # the runs of ``listing`` one after the other in the same two processes, then the dice check
    torchrun(None, [], worker=listing, script=__file__, extra=(tmp_path / "dice.pt",))
    for n in RUNS:
        summary = json.loads((tmp_path / f"{n}_two" / "train_summary.json").read_text())
        assert summary["processes"] == 2 and summary["step"] == 3, n
        init = initial_weights("srnet", overrides(n, pairs, vgg19, tmp_path / f"{n}_init"))
        train_here("srnet", overrides(n, pairs, vgg19, tmp_path / f"{n}_one"))
        one, two = weights(tmp_path / f"{n}_one"), weights(tmp_path / f"{n}_two")
        assert any(k.startswith("generator/") and "running_var" in k for k in one), n  # global BatchNorm statistics
        assert any(not torch.equal(one[k], init[k]) for k in one if k.startswith("generator/") and k.endswith("weight"))
        clip = RUNS[n].get("stability.d_clip", 0.01)
        if clip > 0:  # clipped after the averaged gradient's step, on both runs
            d = [v for k, v in two.items() if k.startswith("discriminator") and v.dtype.is_floating_point
                 and "running" not in k]
            assert max(float(v.abs().max()) for v in d) <= clip + 1e-9, n
        noise = bias_before_batchnorm()
        assert noise <= one.keys() and all(torch.isfinite(two[k]).all() for k in noise)
        keep = lambda w: {k: v for k, v in w.items() if k not in noise}  # noqa: E731
        assert_same(keep(one), keep(two), init, tol=TOLERANCE)
        rel = [float((one[k] - two[k]).norm() / (one[k] - init[k]).norm().clamp_min(1e-12)) for k in keep(one)
               if one[k].dtype.is_floating_point]
        assert sorted(rel)[len(rel) // 2] < MEDIAN, n  # the typical tensor agrees to float rounding
    dice = torch.load(tmp_path / "dice.pt")  # the worker's: 2 shards of a batch, gradients averaged as the step does
    pred, target = dice["pred"].requires_grad_(True), dice["target"]
    loss = dice_loss(target, pred, 1e-8)
    loss.backward()
    assert float(dice["loss"]) == pytest.approx(float(loss.detach()), rel=1e-6)
    assert torch.allclose(dice["grad"], pred.grad, rtol=1e-5, atol=1e-12)


# ----------------------------------------------------------------------------- one process: precision, switches
def build_step(pairs: Path, vgg19: Path, seed: int = 0, **extra):
    """An SRNetStep with the VGG terms on and the generator every step, seeded weights."""
    from t2igan.config import load_config
    from t2igan.data.birds import load_any
    from t2igan.families import srnet as fam

    cfg = load_config(None, overrides("every_third_vgg", pairs, vgg19, pairs.parent / "unused")
                      + [f"{k}={v}" for k, v in {"stability.g_every": 1, **extra}.items()], task="srnet")
    torch.manual_seed(seed)
    return fam.build(cfg, load_any(pairs, "train"), False)[0]


def test_vgg_terms_of_equal_shards_average_to_the_global_batch(vgg19):
    """The style term divides by the batch size: with ``processes`` each shard's term is its part of
    the global batch's, so the average over the processes (the step's gradient average) is the
    one-process term; the perceptual term is a per-sample mean."""
    from t2igan.models.vgg import load_vgg19

    vgg = load_vgg19(vgg19)
    g = torch.Generator().manual_seed(0)
    t_f, o_f = (torch.rand(4, 3, *SIZE, generator=g) * 2 - 1 for _ in range(2))
    per, sty = vgg_losses(vgg, t_f, o_f)
    shards = [vgg_losses(vgg, t_f[r::2], o_f[r::2], processes=2) for r in range(2)]
    assert float(sty) > 0 and float(per) > 0
    assert float(sum(s[1] for s in shards) / 2) == pytest.approx(float(sty), rel=1e-5)
    assert float(sum(s[0] for s in shards) / 2) == pytest.approx(float(per), rel=1e-5)
    assert float(sum(vgg_losses(vgg, t_f[r::2], o_f[r::2])[1] for r in range(2)) / 2) == pytest.approx(2 * float(sty),
                                                                                                       rel=1e-5)


def test_bf16_step_runs_and_its_losses_are_close_to_fp32(pairs, vgg19):
    from t2igan.core.distributed import Precision

    batch = SimpleNamespace(index=torch.arange(8))
    ref, bf = build_step(pairs, vgg19), build_step(pairs, vgg19)
    bf.precision = Precision("bf16", "cpu")
    dtypes = []
    bf.G.register_forward_hook(lambda m, args, out: dtypes.append(out[3].dtype))
    for step in range(2):
        a, b = ref.train_step(batch, step), bf.train_step(batch, step)
        assert a.keys() == b.keys() and "g_vgg_style" in a
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in b.values())  # losses in float32
        for k in a:
            # bf16 keeps 8 bits of mantissa; the adversarial terms read a BatchNorm(1) output through a log,
            # so they move most: 5.4% on 2 threads, under 5% on 1
            assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-1, abs=1e-3), (step, k, float(a[k]), float(b[k]))
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the forward ran under autocast
    assert any(float(a[k]) != float(b[k]) for k in a)
    grads = [p.grad for m in bf.modules.values() for p in m.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_channels_last_step_equals_the_default(pairs, vgg19):
    from t2igan.train.fast import to_channels_last

    batch = SimpleNamespace(index=torch.arange(8))
    ref, cl = build_step(pairs, vgg19), build_step(pairs, vgg19, **{"train.channels_last": True})
    for m in cl.modules.values():
        to_channels_last(m)
    seen = []
    cl.D1.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    for step, rel in ((0, 1e-5), (1, 1e-2)):  # step 1 follows an Adam step, which amplifies rounding
        a, b = ref.train_step(batch, step), cl.train_step(batch, step)
        assert a.keys() == b.keys() and all(float(b[k]) == pytest.approx(float(a[k]), rel=rel, abs=1e-7) for k in a), step
    assert seen and all(seen)  # NHWC images
    convs = [p for m in cl.modules.values() for p in m.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_switches(pairs, vgg19, tmp_path):
    """precision, channels_last and torchrun are honoured; compile, fused_upsample, adam and
    accumulate refused in one line; fp16 needs CUDA (no gradient penalty: every backward is loss-scaled)."""
    from t2igan import T2IError
    from t2igan.config import load_config
    from t2igan.families.base import check_switches
    from t2igan.families.srnet import SRNetStep
    from t2igan.train import fast

    def cfg(**extra):
        return load_config(None, overrides("reference", pairs, vgg19, tmp_path / "r")
                           + [f"{k}={v}" for k, v in extra.items()], task="srnet")

    check_switches(cfg(**{"train.precision": "bf16", "train.channels_last": True}).train, SRNetStep.switches, "srnet",
                   world_size=2)
    for key, value in [("train.compile", True), ("train.fused_upsample", True), ("train.adam", "foreach"),
                       ("train.accumulate", 2)]:
        with pytest.raises(T2IError, match=f"{key}={str(value).lower()}: the srnet step does not support it"):
            check_switches(cfg(**{key: value}).train, SRNetStep.switches, "srnet")
    with pytest.raises(T2IError, match="fp16 needs a CUDA device"):
        fast.check(cfg(**{"train.precision": "fp16"}).train, torch.device("cpu"))


def _dice_shards(out: Path) -> None:
    """The skeleton dice of a batch computed on this process's strided shard (``world``: the sums
    all-reduced) and its input gradient divided by the processes, as the step's gradient average
    sees it; rank 0 writes the loss and the gathered gradient (the test compares both with one process)."""
    import torch.distributed as dist

    from t2igan.core.distributed import World, all_gather_rows

    world = World(rank=dist.get_rank(), size=dist.get_world_size())
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(8, 1, 16, 32, generator=g), (torch.rand(8, 1, 16, 32, generator=g) > 0.7).float()
    mine = pred[world.rank::world.size].clone().requires_grad_(True)
    loss = dice_loss(target[world.rank::world.size], mine, 1e-8, world)
    loss.backward()
    grad = all_gather_rows(mine.grad / world.size, world)
    if world.main:
        torch.save({"pred": pred, "target": target, "loss": loss.detach(), "grad": grad}, out)


def _worker(listing: Path, dice: Path) -> None:
    import torch.distributed as dist

    from t2igan.config import load_config
    from t2igan.train.run import build_training

    dist.init_process_group("gloo")  # one group for all the runs (the trainer leaves a group it did not make)
    for o in json.loads(listing.read_text()):
        build_training(load_config(None, o, task="srnet"), resume=False).fit()
    _dice_shards(dice)
    dist.destroy_process_group()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]), Path(sys.argv[3]))
