"""The one training loop of the project.

A model family supplies a :class:`TrainStep` (its networks, optimisers and one optimisation
step); the trainer owns the device, data order, augmentation, EMA, checkpoints, resume,
progress bar, TensorBoard scalars, sample grids and the exported pipeline.

Run directory::

    RUN/config.yaml                 the full run config
    RUN/checkpoint/modules.safetensors, ema.safetensors, trainer_state.pt
    RUN/pipeline/                   exported Pipeline (EMA generator when EMA is on)
    RUN/samples/step_XXXXXXX.png    sample grids for the fixed captions (+ captions.txt)
    RUN/logs/                       TensorBoard event files
    RUN/train_summary.json          steps, wall time, images/s

The same ``t2igan train CONFIG`` runs on one process or, under ``torchrun --nproc_per_node N``,
on N (DistributedDataParallel; gloo on CPU, nccl on CUDA). ``train.batch_size`` is the
*global* batch: each process takes a strided share of it, the random draws (noise, crops,
flips) are those of the global batch, and rank 0 alone logs, samples, checkpoints and
exports, so a run's result does not depend on the number of processes (to float rounding)
and a checkpoint resumes on any number of them.
"""
from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import save_config
from t2igan.core.device import pick_device
from t2igan.data.dataset import Batch, EpochBatchSampler, TextImageDataset, augment, multiscale
from t2igan.families.base import TrainStep, check_switches
from t2igan.train import fast


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def ema_decay_at(step: int, decay: float, start: int) -> float:
    """EMA decay after ``step`` updates: 0 (copy) until ``start``, then warmed up as
    ``min(decay, (1 + k) / (10 + k))`` with k steps since ``start``, so that a short run's
    average is not dominated by the initial weights."""
    k = step - start
    if k <= 0:
        return 0.0
    return min(decay, (1 + k) / (10 + k))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    e, m = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(e, m, 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


class Trainer:
    def __init__(self, cfg, task: TrainStep, dataset: TextImageDataset, sample_captions: list[str],
                 resume: bool = False, device: torch.device | None = None):
        self.cfg, self.task, self.dataset = cfg, task, dataset
        self.tc = cfg.train
        self.out = Path(self.tc.out_dir)
        self.world = fast.world_from_env()
        self.device = device or pick_device(self.tc.device, self.world.local_rank)
        fast.check(self.tc, self.device)
        check_switches(self.tc, task.switches, cfg.task, self.world.size)
        if self.tc.batch_size % self.world.size:
            raise T2IError(f"train.batch_size={self.tc.batch_size} (the global batch) is not divisible by the {self.world.size} processes")
        self.sample_captions = sample_captions
        has_ckpt = (self.out / "checkpoint" / "trainer_state.pt").is_file()
        if has_ckpt and not resume:
            raise T2IError(f"{self.out} already holds a checkpoint; pass --resume to continue it or set train.out_dir to a new folder")
        if resume and not has_ckpt:
            raise T2IError(f"--resume: no checkpoint in {self.out / 'checkpoint'}")
        self.resume = resume
        self.ema: nn.Module | None = None
        if task.ema_of and self.tc.ema_decay > 0:
            self.ema = copy.deepcopy(task.modules[task.ema_of]).eval().requires_grad_(False)
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        final = self.out / "checkpoint"
        tmp = ckpt.fresh_tmp(final)
        flat = {f"{name}/{k}": v for name, m in self.task.modules.items() for k, v in ckpt.state_dict_cpu(m).items()}
        from safetensors.torch import save_file
        save_file(flat, str(tmp / "modules.safetensors"))
        if self.ema is not None:
            save_file(ckpt.state_dict_cpu(self.ema), str(tmp / "ema.safetensors"))
        state = {
            "step": self.step,
            "optimizers": {k: o.state_dict() for k, o in self.task.optimizers.items()},
            "rng_cpu": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        ckpt.save_trainer_state(tmp / "trainer_state.pt", state)
        ckpt.replace_dir(tmp, final)
        self.export()

    def export(self) -> None:
        final = self.out / "pipeline"
        tmp = ckpt.fresh_tmp(final)
        self.task.export(tmp, self.ema)
        ckpt.replace_dir(tmp, final)

    def snapshot(self) -> None:
        """Keep the exported pipeline of this step (for accuracy-vs-time curves)."""
        final = self.out / "snapshots" / f"step_{self.step:07d}"
        tmp = ckpt.fresh_tmp(final)
        self.task.export(tmp, self.ema)
        now = time.perf_counter() - self._t0
        ckpt.write_json(tmp / "snapshot.json", {"step": self.step, "minutes_this_run": round(now / 60, 2),
                                                "train_minutes": round((self._prior_seconds + now) / 60, 2)})
        ckpt.replace_dir(tmp, final)

    def load_checkpoint(self) -> None:
        d = self.out / "checkpoint"
        flat = ckpt.load_weights(d / "modules.safetensors")
        for name, m in self.task.modules.items():
            part = {k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + "/")}
            ckpt.load_state_strict(m, part, f"{d / 'modules.safetensors'} [{name}]")
        if self.ema is not None:
            ckpt.load_state_strict(self.ema, ckpt.load_weights(d / "ema.safetensors"), str(d / "ema.safetensors"))
        state = ckpt.load_trainer_state(d / "trainer_state.pt")
        for k, o in self.task.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.step = int(state["step"])

    # ------------------------------------------------------------------ samples
    def write_samples(self) -> Path | None:
        if not self.sample_captions:
            return None
        from torchvision.utils import save_image
        imgs = self.task.sample(self.sample_captions, self.tc.seed, 4, self.ema)
        if imgs is None:
            return None
        d = self.out / "samples"
        d.mkdir(parents=True, exist_ok=True)
        (d / "captions.txt").write_text("\n".join(self.sample_captions) + "\n", encoding="utf-8")
        path = d / f"step_{self.step:07d}.png"
        save_image(imgs.float().cpu(), path, nrow=4, normalize=True, value_range=(-1, 1))
        return path

    # ------------------------------------------------------------------ fast paths, processes
    def setup_fast_paths(self) -> None:
        """Join the process group; channels_last, SyncBatchNorm, DDP and torch.compile wrappers;
        the step's precision. The checkpointed modules stay the bare ones."""
        fast.init_distributed(self.world, self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.ema is not None:
            fast.prepare_module(self.ema, self.tc)
        fast.prepare_step(self.task, self.tc, self.device, self.world)

    def reduce_logs(self, logs: dict[str, torch.Tensor]) -> dict[str, float]:
        """Log values as floats, averaged over the processes."""
        if not logs:
            return {}
        v = torch.stack([t.detach().float().reshape(()) for t in logs.values()])
        if self.world.distributed:
            import torch.distributed as dist

            dist.all_reduce(v)
            v /= self.world.size
        return dict(zip(logs, v.tolist()))

    def agree(self, flag: bool) -> bool:
        """True when any process says so (e.g. a time limit): all stop at the same step."""
        if not self.world.distributed:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    # ------------------------------------------------------------------ loop
    def batches(self):
        sampler = EpochBatchSampler([len(c) for c in self.dataset.data.captions], self.tc.batch_size,
                                    self.tc.seed, start_step=self.step, rank=self.world.rank, num_replicas=self.world.size)
        w = self.cfg.data.workers
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=w, collate_fn=collate,
                            pin_memory=self.device.type == "cuda", persistent_workers=w > 0,
                            prefetch_factor=4 if w > 0 else None,
                            generator=torch.Generator().manual_seed(self.tc.seed))  # keeps the global RNG untouched
        return iter(loader)

    def to_batch(self, raw: dict, step: int) -> Batch:
        dev = self.device
        g = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + step)
        img = raw["image"].to(dev, non_blocking=True)
        x = augment(img, self.cfg.data.image_size, self.cfg.data.crop, self.cfg.data.flip, g,
                    shard=(self.world.rank, self.world.size))
        if self.tc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(
            images=multiscale(x, self.cfg.data.num_scales),
            tokens=raw["tokens"].to(dev, non_blocking=True), lengths=raw["length"].to(dev, non_blocking=True),
            wrong_tokens=raw["wrong_tokens"].to(dev, non_blocking=True),
            wrong_lengths=raw["wrong_length"].to(dev, non_blocking=True),
            index=raw["index"], caption_index=raw["caption_index"],
            wrong_index=raw["wrong_index"], wrong_caption_index=raw["wrong_caption_index"],
        )

    def fit(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        tc = self.tc
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        for m in self.task.modules.values():
            m.to(self.device)
        self.task.to_device(self.device)  # frozen parts that are not checkpointed
        if self.ema is not None:
            self.ema.to(self.device)
        if self.resume:
            self.load_checkpoint()
        self.setup_fast_paths()
        main = self.world.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        writer = SummaryWriter(str(self.out / "logs"), purge_step=self.step if self.resume else None) if main else None
        start_step, t0 = self.step, time.perf_counter()
        self._t0 = t0
        self._prior_seconds = 0.0  # training wall time of earlier invocations of this run
        if self.resume and (self.out / "train_summary.json").is_file():
            runs = ckpt.read_json(self.out / "train_summary.json").get("runs", [])
            self._prior_seconds = sum(float(r.get("wall_seconds", 0)) for r in runs)
        deadline = t0 + tc.max_minutes * 60 if tc.max_minutes > 0 else math.inf
        # with a time limit the step count is open-ended: the bar then counts steps and the
        # postfix shows the time left before max_minutes
        bar = tqdm(total=tc.max_steps if tc.max_minutes <= 0 else None, initial=self.step,
                   desc=f"train {self.cfg.task}", unit="it", disable=not (tc.progress and main), dynamic_ncols=True)
        it = self.batches()
        stopped = "max_steps"
        restore = None
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (and SIGINT, which background jobs ignore) stop at a step boundary and save
            restore = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while self.step < tc.max_steps:
                batch = self.to_batch(next(it), self.step)
                for m in self.task.modules.values():
                    m.train()
                logs = self.task.train_step(batch, self.step)
                self.step += 1
                if self.ema is not None:
                    ema_update(self.ema, self.task.modules[self.task.ema_of], ema_decay_at(self.step, tc.ema_decay, tc.ema_start))
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    vals = self.reduce_logs(logs)  # the only host sync of the step
                    elapsed = time.perf_counter() - t0
                    ips = (self.step - start_step) * tc.batch_size / max(elapsed, 1e-9)
                    if main:
                        for k, v in vals.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        writer.add_scalar("train/images_per_s", ips, self.step)
                    post = {k: f"{v:.3g}" for k, v in list(vals.items())[:4]} | {"img/s": f"{ips:.1f}"}
                    if deadline < math.inf:
                        post["left"] = f"{max(0.0, deadline - time.perf_counter()) / 60:.1f}min"
                    bar.set_postfix(post)
                if main and tc.sample_every and self.step % tc.sample_every == 0:
                    self.write_samples()
                if main and tc.ckpt_every and self.step % tc.ckpt_every == 0:
                    self.save_checkpoint()
                if main and tc.snapshot_every and self.step % tc.snapshot_every == 0:
                    self.snapshot()
                if main and tc.eval_every and self.step % tc.eval_every == 0:
                    from t2igan.eval.during_training import eval_hook

                    eval_hook(self)
                if deadline < math.inf and self.agree(time.perf_counter() > deadline):
                    stopped = "max_minutes"
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            bar.close()
            if restore is not None:
                signal.signal(signal.SIGTERM, restore)
        elapsed = time.perf_counter() - t0
        grid = None
        if main:
            self.save_checkpoint()
            grid = self.write_samples()
            writer.close()
        summary = {
            "task": self.cfg.task, "step": self.step, "steps_this_run": self.step - start_step,
            "stopped_by": stopped, "wall_seconds": round(elapsed, 2),
            "images_per_s": round((self.step - start_step) * tc.batch_size / max(elapsed, 1e-9), 2),
            "batch_size": tc.batch_size, "processes": self.world.size, "device": str(self.device),
            "threads": torch.get_num_threads(),
            "samples": str(grid) if grid else None, "pipeline": str(self.out / "pipeline"),
        }
        if self.world.distributed:
            import torch.distributed as dist

            dist.barrier()  # the others wait for rank 0's checkpoint before they return
            dist.destroy_process_group()
        if not main:
            return summary
        prev = self.out / "train_summary.json"
        history = []
        if self.resume and prev.is_file():
            try:
                history = json.loads(prev.read_text()).get("runs", [])
            except ValueError:
                history = []
        ckpt.write_json(prev, {**summary, "runs": history + [summary]})
        return summary
