"""Gradient accumulation (``train.accumulate: K``): DF-GAN's update over K micro-batches of the
batch equals the full batch's update; the micro-batches really are B/K rows; bad values and the
families without the switch are refused in one line before anything is written.

Exactness is checked in float64 (the modules, the frozen encoders, the EMA and the images in double
after the build): in float32 a micro-batch sum differs from the batch sum by rounding (gradients:
~1e-6 relative, 1e-4 for the worst, near-zero tensor, measured), and Adam's first steps, about
``lr * sign(g)`` with DF-GAN's beta1 = 0, turn a near-zero element's rounding into a step of the
other sign (3e-4 after 3 steps, measured). In float64 the runs agree to ~1e-12 (measured), while a
wrong share weight, noise draw, pairing or DAMSM gradient moves the weights by O(lr) = 1e-4.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from t2igan import T2IError
from t2igan.config import ConfigError, load_config
from t2igan.data.dataset import Batch
from t2igan.families.base import check_switches, micro_batches, micro_slices, no_sync
from t2igan.families.dfgan import DFGANStep
from t2igan.train.run import build_training

from conftest import dfgan_config, first_step, tiny_overrides

LOSSES = {"default": {}, "wgan-gp": {"gan.loss": "wgan-gp"}, "damsm": {"loss.damsm_lambda": 1.0}}


def in_double(tr):
    """Trainer ``tr`` computing in float64: its modules, frozen parts and EMA converted in place (the
    optimisers keep the same Parameters), its batches' images converted; the step's draws are in the
    default dtype, which the caller sets."""
    for m in [*tr.task.modules.values(), *tr.task.frozen, *([tr.ema] if tr.ema is not None else [])]:
        m.double()
    to_batch = tr.to_batch
    tr.to_batch = lambda raw, step: (lambda b: dataclasses.replace(b, images=[x.double() for x in b.images]))(
        to_batch(raw, step))
    return tr


def train_double(cfg) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], dict[str, torch.Tensor]]:
    """3 steps of ``cfg`` in float64 through the trainer: (checkpointed weights and EMA, each step's logs,
    the initial weights)."""
    tr = in_double(build_training(cfg, resume=False))
    init = {f"{n}/{k}": v.detach().clone() for n, m in tr.task.modules.items() for k, v in m.state_dict().items()}
    logs, step = [], tr.task.train_step

    def recorded(batch, s):
        out = step(batch, s)
        logs.append({k: float(v) for k, v in out.items()})
        return out

    tr.task.train_step = recorded
    threads = torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    try:
        tr.fit()
    finally:
        torch.set_default_dtype(torch.float32)
        torch.set_num_threads(threads)
    run = tr.run / "checkpoint"
    w = load_file(str(run / "modules.safetensors"))
    w.update({f"ema/{k}": v for k, v in load_file(str(run / "ema.safetensors")).items()})
    return w, logs, init


# ----------------------------------------------------------------------------- the helpers
def test_micro_slices_and_micro_batches_cut_every_field():
    assert micro_slices(8, 2) == [slice(0, 4), slice(4, 8)]
    assert micro_slices(8, 1) == [slice(0, 8)]
    with pytest.raises(ValueError, match="8 rows does not split into 3"):
        micro_slices(8, 3)
    r = torch.arange(6)
    b = Batch(images=[torch.randn(6, 3, 4, 4), torch.randn(6, 3, 8, 8)], tokens=torch.arange(12).view(6, 2),
              lengths=r + 1, wrong_tokens=-torch.arange(12).view(6, 2), wrong_lengths=r + 2, index=r * 10,
              caption_index=None, wrong_index=r, wrong_caption_index=r % 2)
    parts = micro_batches(b, 3)
    assert len(parts) == 3 and all(p.caption_index is None for p in parts)
    for f in dataclasses.fields(Batch):
        whole = getattr(b, f.name)
        if torch.is_tensor(whole):
            assert torch.equal(torch.cat([getattr(p, f.name) for p in parts]), whole), f.name
    for scale in range(2):
        assert torch.equal(torch.cat([p.images[scale] for p in parts]), b.images[scale])
        assert parts[1].images[scale].size(0) == 2


def test_no_sync_all_reduces_once_per_update():
    """Under DDP the micro-batches but the last accumulate locally: one all-reduce per update (a
    1-process gloo group here; its comm hook counts the reductions), also through a compile wrapper."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(torch.nn.Linear(3, 2))
        calls = []

        def hook(state, bucket):
            calls.append(1)
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, hook)
        x = torch.randn(6, 3)
        for j, s in enumerate(micro_slices(6, 3)):
            with no_sync(ddp, when=j < 2):
                ddp(x[s]).sum().backward()
        assert len(calls) == 1
        ref = torch.nn.Linear(3, 2)
        ref.load_state_dict(ddp.module.state_dict())
        ref(x).sum().backward()
        torch.testing.assert_close(ddp.module.weight.grad, ref.weight.grad)  # the sum of the micro-batches
        compiled = torch.compile(ddp)  # lazy: nothing is traced here
        with no_sync(compiled, torch.nn.Linear(1, 1)):
            assert not ddp.require_backward_grad_sync
        assert ddp.require_backward_grad_sync
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- DF-GAN: the same update
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_dfgan_accumulated_steps_equal_the_full_batch(loss, tiny_data, tiny_damsm, tmp_path):
    """Batch 8, 3 steps: accumulate 2 and 4 end with accumulate 1's G, D, C and EMA weights, and log
    its values (losses, penalties, D outputs, gradient norms: full-batch values; the adversarial terms
    are computed in float32 under every precision, so the logs agree to float32 rounding)."""
    extra = {**LOSSES[loss], "train.max_steps": 3}
    ref, ref_logs, init = train_double(dfgan_config(tiny_data, tiny_damsm, tmp_path / "k1", **extra))
    assert max((ref[k] - init[k]).abs().max() for k in init) > 1e-4  # it trained: the tolerance is small against that
    assert {"grad_norm_D", "grad_norm_G", "d_out_real", "d_loss", "g_loss"} <= ref_logs[0].keys()
    assert ("g_damsm" in ref_logs[0]) == (loss == "damsm") and ("d_penalty" in ref_logs[0]) == (loss == "wgan-gp")
    for k in (2, 4):
        got, logs, _ = train_double(dfgan_config(tiny_data, tiny_damsm, tmp_path / f"k{k}", **extra,
                                              **{"train.accumulate": k}))
        assert got.keys() == ref.keys()
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-9, msg=lambda m: f"{name}, K={k}: {m}")
        assert [d.keys() for d in logs] == [d.keys() for d in ref_logs]
        for s, (a, b) in enumerate(zip(logs, ref_logs)):
            for key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (k, s, key)  # the losses are float32


def test_the_micro_batches_are_b_over_k_rows(tiny_data, tiny_damsm, tmp_path):
    """Every forward of G, D, C and the DAMSM image encoder sees B/K rows (the activations held at
    once are a micro-batch's); with accumulate 1 they see the batch."""
    for k in (1, 4):
        tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / f"k{k}", **{
            "loss.damsm_lambda": 1.0, "train.accumulate": k}), resume=False)
        t, seen = tr.task, {}
        for name, m in (("G", t.netG), ("D", t.netD), ("C", t.netC), ("image_encoder", t.image_encoder)):
            m.register_forward_hook(lambda mod, args, out, name=name: seen.setdefault(name, []).append(args[0].size(0)))
        logs = first_step(tr)
        assert set(seen) == {"G", "D", "C", "image_encoder"} and "g_damsm" in logs
        assert all(n == 8 // k for sizes in seen.values() for n in sizes), seen
        assert len(seen["G"]) == (1 if k == 1 else 2 * k)  # K > 1: D's images (kept for the DAMSM cache), G's update


@pytest.mark.parametrize("precision, device", [
    ("bf16", "cpu"),
    pytest.param("fp16", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="fp16 with a GradScaler needs CUDA")),
])
def test_accumulation_under_autocast_and_loss_scaling(precision, device, tiny_data, tiny_damsm, tmp_path):
    """bf16 autocast (fp16: with the GradScaler scaling each micro-batch's backward, unscaling once
    per update) and channels_last: the first step's D terms, D's gradient norm and the DAMSM loss
    are the full batch's to half-precision rounding, and the weights stay finite."""
    logs = {}
    for k in (1, 2):
        tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / f"k{k}", **{
            "train.precision": precision, "train.device": device, "train.channels_last": True,
            "loss.damsm_lambda": 1.0, "train.accumulate": k}), resume=False)
        logs[k] = first_step(tr)
        assert all(torch.isfinite(p).all() for m in tr.task.modules.values() for p in m.parameters())
    assert logs[2].keys() == logs[1].keys()
    rel = 1e-3 if device == "cpu" else 1e-2  # measured on CPU: 6e-8 (d_loss), 2.5e-4 (grad_norm_D); CUDA may pick other kernels per batch size
    for key in ("d_loss", "d_real", "d_fake", "d_mis", "ma_gp", "d_out_real", "grad_norm_D", "g_damsm"):
        assert logs[2][key] == pytest.approx(logs[1][key], rel=rel, abs=1e-6), key


# ----------------------------------------------------------------------------- refused in one line
def _cli(tiny_data, tiny_damsm, out, *extra) -> int:
    from t2igan.cli import main

    return main(["train", "configs/dfgan_synth64.yaml", *tiny_overrides(tiny_data, out, **{
        "text_encoder": str(tiny_damsm), "model.ngf": 4, "model.ndf": 4, "model.nz": 8}), *extra])


@pytest.mark.parametrize("value, message", [
    (0, "config key 'train.accumulate': 0 is out of range (must be >= 1)"),
    (-2, "config key 'train.accumulate': -2 is out of range (must be >= 1)"),
    (3, "config key 'train.accumulate': 3 does not divide train.batch_size=8 (each step splits its batch into 3 equal "
        "micro-batches)"),
    ("two", "config key 'train.accumulate': expected int, got 'two'"),
])
def test_bad_values_are_one_line_before_anything_is_written(value, message, tiny_data, tiny_damsm, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(tiny_data, tiny_damsm, out, f"train.accumulate={value}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {message}"]
    assert not out.exists()
    with pytest.raises(ConfigError, match="train.accumulate"):
        load_config(None, [f"train.accumulate={value}", "train.batch_size=8"], task="dfgan")


def test_each_processs_share_must_split(tiny_data):
    """Under torchrun each process splits its share: 8 rows on 2 processes are 4 each, not 8 micro-batches."""
    tc = load_config(None, ["train.batch_size=8", "train.accumulate=8"], task="dfgan").train
    check_switches(tc, DFGANStep.switches, "dfgan")  # one process: 8 micro-batches of 1
    with pytest.raises(T2IError) as e:
        check_switches(tc, DFGANStep.switches, "dfgan", world_size=2)
    assert str(e.value) == ("train.accumulate=8: each of the 2 processes' 4 rows of train.batch_size=8 does not split "
                            "into 8 equal micro-batches")
    check_switches(load_config(None, ["train.batch_size=8", "train.accumulate=2"], task="dfgan").train,
                   DFGANStep.switches, "dfgan", world_size=2)


@pytest.mark.parametrize("task", ["stackganpp", "galip"])
def test_a_family_without_the_switch_refuses_it_in_one_line(task, tiny_data, tiny_damsm, tmp_path):
    from test_families import SMALL

    o = {**SMALL[task], "train.accumulate": 2, **({} if task == "galip" else {"text_encoder": str(tiny_damsm)})}
    if task == "galip":
        o["clip"] = str(tmp_path / "unused")  # refused before the CLIP is read
    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "run", **o), task=task)
    with pytest.raises(T2IError) as e:
        build_training(cfg, resume=False)
    msg = str(e.value)
    assert msg.startswith(f"train.accumulate=2: the {task} step does not support it (its train.* switches: ") and "\n" not in msg
    assert "accumulate" not in msg.split("(")[1]
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 2 processes
@pytest.mark.slow  # a torchrun start-up of its own
def test_two_processes_accumulating_equal_one_process(tiny_data, tiny_damsm, tmp_path):
    """2 gloo processes with accumulate 2 (2 micro-batches of 2 rows each) = 1 process, accumulate 1, on
    the global batch of 8; with the DAMSM term on, whose cached gradients cross the processes."""
    from test_distributed import assert_same, initial_weights, torchrun, train_here, weights

    common = {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "text_encoder": str(tiny_damsm), "train.max_steps": 3,
              "train.threads": 1, "loss.damsm_lambda": 1.0}
    two = {"dfgan": tiny_overrides(tiny_data, tmp_path / "two", **common, **{"train.accumulate": 2})}
    (tmp_path / "runs.json").write_text(json.dumps(two))
    torchrun(tmp_path, [], worker=tmp_path / "runs.json")
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["step"] == 3
    train_here("dfgan", tiny_overrides(tiny_data, tmp_path / "one", **common))
    init = initial_weights("dfgan", tiny_overrides(tiny_data, tmp_path / "init", **common))
    assert_same(weights(tmp_path / "one"), weights(tmp_path / "two"), init)
