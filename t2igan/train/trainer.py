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
    RUN/.lock                       while a process trains it: that process's PID and host

Run-folder safety (:func:`open_run_folder`, :func:`check_run_folder`, :meth:`Trainer.fit`): one
process at a time writes a run folder (``RUN/.lock``, rank 0 only); a swap of ``checkpoint/``,
``pipeline/`` or a snapshot interrupted between its two renames is undone before anything
reads the folder (``X.old`` back to ``X``; a ``X.tmp`` is never trusted); a folder holding any
earlier output is refused without ``--resume`` or ``--overwrite``; ``--overwrite`` trains into
``RUN/.overwrite/`` and replaces the old outputs only once the new run is complete.

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
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from t2igan import T2IError
from t2igan.core import fs
from t2igan.core import weights as ckpt
from t2igan.core.config import save_config
from t2igan.core.device import pick_device
from t2igan.data.dataset import Batch, EpochBatchSampler, TextImageDataset, augment, multiscale
from t2igan.families.base import TrainStep, check_switches
from t2igan.train import fast
from t2igan.train.monitor import StabilityMonitor


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


# ----------------------------------------------------------------------------- run folder
STAGE = ".overwrite"  # an --overwrite run's new outputs, moved into RUN once complete
REPLACED = ".replaced"  # the old outputs while they are being replaced
COMPLETE = ".complete.json"  # in STAGE: the new run is complete (the names to move in)
SWAPPED = ("checkpoint", "pipeline")  # written by directory swaps (snapshots/step_* too)
RUN_NAMES = {"config.yaml", "checkpoint", "pipeline", "train_summary.json", "samples", "logs", "snapshots",
             "eval_history.jsonl", STAGE, REPLACED, *(f"{n}.{x}" for n in SWAPPED for x in ("old", "tmp"))}


def note(msg: str) -> None:
    print(msg if msg.startswith("note:") else f"note: {msg}", file=sys.stderr, flush=True)


def previous_outputs(run: Path) -> list[str]:
    """Names in the run folder other than its lock (an earlier run's outputs, or anything else)."""
    if not run.exists():
        return []
    if not run.is_dir():
        raise T2IError(f"train.out_dir={run} is a file, not a folder")
    return sorted(e.name for e in run.iterdir() if e.name != fs.LOCK)


def finish_overwrite(run: Path) -> bool:
    """Complete the replacement of a run folder's outputs by a finished --overwrite run (also
    after a crash part-way): with ``RUN/.overwrite/.complete.json`` listing the new names, an
    entry of RUN is old when the manifest lacks its name or ``.overwrite`` still holds it; old
    entries go to ``RUN/.replaced`` (deleted at the end), new ones move in. Idempotent."""
    stage, replaced = run / STAGE, run / REPLACED
    marker = stage / COMPLETE
    if not marker.is_file():
        return False
    names = set(ckpt.read_json(marker).get("entries", []))
    replaced.mkdir(exist_ok=True)
    for e in sorted(run.iterdir()):
        if e.name in (fs.LOCK, STAGE, REPLACED):
            continue
        if e.name not in names or os.path.lexists(stage / e.name):
            dest = replaced / e.name
            if os.path.lexists(dest):
                shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
            os.replace(e, dest)
    for n in sorted(names):
        if os.path.lexists(stage / n):
            os.replace(stage / n, run / n)
    shutil.rmtree(replaced)
    shutil.rmtree(stage)
    return True


def _snapshot_dirs(run: Path) -> list[Path]:
    snaps = run / "snapshots"
    if not snaps.is_dir():
        return []
    return [p.with_name(p.name[:-4]) for p in snaps.iterdir() if p.name.endswith(".old")]


def run_needs_recovery(run: Path) -> bool:
    return ((run / STAGE / COMPLETE).is_file() or any(fs.needs_recovery(run / n) for n in SWAPPED)
            or any(fs.needs_recovery(d) for d in _snapshot_dirs(run)))


def recover_run(run: Path) -> list[str]:
    """Undo what a crash left half-done (under the lock): a finished --overwrite still being
    moved in, and swaps of checkpoint/, pipeline/, snapshots/step_* stopped between their two
    renames (``X.old`` goes back; ``X.tmp`` may be partial and is not used). Returns notes."""
    notes = []
    if not run.is_dir():
        return notes
    if finish_overwrite(run):
        notes.append(f"{run}: finished moving in the outputs of an interrupted --overwrite run")
    for d in [run / n for n in SWAPPED] + _snapshot_dirs(run):
        if msg := fs.recover_dir(d):
            notes.append(msg)
    return notes


def open_run_folder(run, world) -> fs.RunLock | None:
    """Before anything reads or writes the run folder. Rank 0 refuses a folder locked by a live
    process and, if a crash left something half-done, takes the lock and repairs it (the
    returned lock is then held; :meth:`Trainer.fit` takes it otherwise). The other ranks write
    nothing: they wait for rank 0's repair, then read the same folder."""
    run = Path(run)  # a file there is refused by check_run_folder, which always follows
    if not world.main:
        deadline = time.monotonic() + 300
        while run_needs_recovery(run):
            if time.monotonic() > deadline:
                raise T2IError(f"{run}: rank 0 did not repair the interrupted save in this run folder within 5 minutes")
            time.sleep(0.2)
        return None
    lock = fs.RunLock(run)
    if run_needs_recovery(run):
        lock.acquire()
        try:
            if lock.note:
                note(lock.note)
                lock.note = None
            for msg in recover_run(run):
                note(msg)
        except BaseException:
            lock.release()
            raise
    else:
        lock.check()
    return lock


def check_run_folder(run, resume: bool, overwrite: bool) -> None:
    """Fresh, --resume or --overwrite: refuse what would lose or mix up an earlier run (reads only)."""
    run = Path(run)
    if resume and overwrite:
        raise T2IError(f"--resume and --overwrite exclude each other: --resume continues the run in {run}, --overwrite replaces it")
    prev = previous_outputs(run)
    d = run / "checkpoint"
    has_ckpt = (d / "trainer_state.pt").is_file()
    if resume:
        if not has_ckpt:
            tmp = d.with_name("checkpoint.tmp")
            extra = f" ({tmp} is an unfinished save and is not used)" if tmp.exists() else ""
            raise T2IError(f"--resume: no checkpoint in {d}{extra}")
        return
    if not prev:
        return
    shown = ", ".join(prev[:4]) + (", ..." if len(prev) > 4 else "")
    if overwrite:
        if not RUN_NAMES.intersection(prev):
            raise T2IError(f"--overwrite: {run} does not look like a run folder (it holds {shown}) and is left alone; "
                           "set train.out_dir to a new or empty folder")
        return
    if has_ckpt:
        raise T2IError(f"{run} already holds a checkpoint; pass --resume to continue it, --overwrite to replace the run "
                       "(the old outputs stay until the new run is complete), or set train.out_dir to a new folder")
    raise T2IError(f"{run} already holds earlier outputs ({shown}) but no checkpoint to --resume; pass --overwrite to "
                   "replace them (they stay until the new run is complete) or set train.out_dir to a new folder")


class Trainer:
    def __init__(self, cfg, task: TrainStep, dataset: TextImageDataset, sample_captions: list[str],
                 resume: bool = False, device: torch.device | None = None, overwrite: bool = False,
                 lock: fs.RunLock | None = None):
        self.cfg, self.task, self.dataset = cfg, task, dataset
        self.tc = cfg.train
        self.run = Path(self.tc.out_dir)  # the run folder
        self.out = self.run  # where this run writes: RUN, or RUN/.overwrite until an --overwrite run is complete
        self.world = fast.world_from_env()
        self.device = device or pick_device(self.tc.device, self.world.local_rank)
        fast.check(self.tc, self.device)
        check_switches(self.tc, task.switches, cfg.task, self.world.size)
        if self.tc.batch_size % self.world.size:
            raise T2IError(f"train.batch_size={self.tc.batch_size} (the global batch) is not divisible by the {self.world.size} processes")
        self.sample_captions = sample_captions
        self._lock = lock if lock is not None else open_run_folder(self.run, self.world)  # rank 0's; None elsewhere
        check_run_folder(self.run, resume, overwrite)
        self.resume, self.overwrite = resume, overwrite
        self.ema: nn.Module | None = None
        if task.ema_of and self.tc.ema_decay > 0:
            self.ema = copy.deepcopy(task.modules[task.ema_of]).eval().requires_grad_(False)
        self.step = 0
        self._own_group = False  # joined the process group itself (and leaves it at the end)

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
            "frozen": self._frozen_fingerprints(),
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
                                                "train_minutes": round((self._prior_seconds + now) / 60, 2),
                                                "cpu_minutes": round((self._prior_cpu + self.cpu_seconds()) / 60, 2)})
        ckpt.replace_dir(tmp, final)

    def cpu_seconds(self) -> float:
        """CPU time of this process (all its threads) since this invocation started training, less the
        time spent in evaluations during training (train.eval_every): the clock of train.max_cpu_minutes."""
        return time.process_time() - self._cpu0 - self._cpu_eval

    def _frozen_fingerprints(self) -> dict[str, str]:
        """The task's frozen, not checkpointed parts (StepBase.frozen_fingerprints; none for a step without it)."""
        fp = getattr(self.task, "frozen_fingerprints", None)
        return fp() if fp is not None else {}

    def load_checkpoint(self) -> None:
        d = self.out / "checkpoint"
        state = ckpt.load_trainer_state(d / "trainer_state.pt")
        now = self._frozen_fingerprints()
        for name, saved in (state.get("frozen") or {}).items():  # checkpoints written before this check have none
            if now.get(name) != saved:
                raise T2IError(f"--resume: the {name} of this config is not the one {d} was trained with "
                               f"(fingerprint {str(now.get(name))[:12]} vs {saved[:12]}); restore it or train a new run")
        flat = ckpt.load_weights(d / "modules.safetensors")
        for name, m in self.task.modules.items():
            part = {k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + "/")}
            ckpt.load_state_strict(m, part, f"{d / 'modules.safetensors'} [{name}]")
        if self.ema is not None:
            ckpt.load_state_strict(self.ema, ckpt.load_weights(d / "ema.safetensors"), str(d / "ema.safetensors"))
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
        self._own_group = fast.init_distributed(self.world, self.device)
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
        """Train to the end (max_steps, max_minutes, or SIGINT/SIGTERM at a step boundary) and save.

        Rank 0 holds ``RUN/.lock`` from before its first write to the end (released on errors
        and interrupts too), repairs and re-checks the folder under it, and for --overwrite
        writes into ``RUN/.overwrite/``, moved in only once the run has saved everything."""
        restore = None
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (and SIGINT, which background jobs ignore) stop at a step boundary and save;
            # outside the loop they end the run with the lock released
            restore = signal.signal(signal.SIGTERM, signal.default_int_handler)
        main = self.world.main
        try:
            if main:
                self._lock.acquire()
                if self._lock.note:
                    note(self._lock.note)
                    self._lock.note = None
                for msg in recover_run(self.run):  # under the lock: another process may have crashed since
                    note(msg)
                check_run_folder(self.run, self.resume, self.overwrite)  # again: another run may have written since
                if self.overwrite and previous_outputs(self.run):
                    self.out = self.run / STAGE
                    if self.out.exists():  # an --overwrite run that did not finish: never trusted
                        shutil.rmtree(self.out)
                    self.out.mkdir()
            summary = self._fit()
            if main and self.out != self.run:
                names = sorted(e.name for e in self.out.iterdir() if e.name != COMPLETE)
                ckpt.write_json(self.out / COMPLETE, {"entries": names})  # the new run is complete
                finish_overwrite(self.run)
                self.out = self.run
            return summary
        finally:
            if main and self._lock is not None:
                self._lock.release()
            if restore is not None:
                signal.signal(signal.SIGTERM, restore)

    def _fit(self) -> dict:
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
        self._cpu0, self._cpu_eval = time.process_time(), 0.0
        self._prior_seconds = self._prior_cpu = 0.0  # training wall / CPU time of earlier invocations of this run
        if self.resume and (self.out / "train_summary.json").is_file():
            runs = ckpt.read_json(self.out / "train_summary.json").get("runs", [])
            self._prior_seconds = sum(float(r.get("wall_seconds", 0)) for r in runs)
            self._prior_cpu = sum(float(r.get("cpu_seconds", 0)) for r in runs)
        deadline = t0 + tc.max_minutes * 60 if tc.max_minutes > 0 else math.inf
        cpu_budget = tc.max_cpu_minutes * 60 if tc.max_cpu_minutes > 0 else math.inf
        # with a time limit the step count is open-ended: the bar then counts steps and the
        # postfix shows the time left before max_minutes
        bar = tqdm(total=tc.max_steps if tc.max_minutes <= 0 and tc.max_cpu_minutes <= 0 else None, initial=self.step,
                   desc=f"train {self.cfg.task}", unit="it", disable=not (tc.progress and main), dynamic_ncols=True)
        it = self.batches()
        stopped = "max_steps"
        monitor = StabilityMonitor(getattr(self.cfg, "gan", None), getattr(self.task, "loss_kind", ""), self.task,
                                   self.sample_captions[0] if self.sample_captions else None, tc.seed, tc.log_every,
                                   self.device)
        self.monitor = monitor
        try:
            while self.step < tc.max_steps:
                batch = self.to_batch(next(it), self.step)
                for m in self.task.modules.values():
                    m.train()
                logs = self.task.train_step(batch, self.step)
                self.step += 1
                monitor.update(logs, self.step)
                if self.ema is not None:
                    ema_update(self.ema, self.task.modules[self.task.ema_of], ema_decay_at(self.step, tc.ema_decay, tc.ema_start))
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    vals = self.reduce_logs(logs)  # the only host sync of the step
                    mon = monitor.check(vals, self.step) if main else {}
                    elapsed = time.perf_counter() - t0
                    ips = (self.step - start_step) * tc.batch_size / max(elapsed, 1e-9)
                    if main:
                        for k, v in (vals | mon).items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        writer.add_scalar("train/images_per_s", ips, self.step)
                    post = {k: f"{v:.3g}" for k, v in list(vals.items())[:4]} | {"img/s": f"{ips:.1f}"}
                    post |= {k: f"{mon[k]:.3g}" for k in ("d_gap", "diversity") if k in mon}
                    if monitor.flags():
                        post["warn"] = monitor.flags()
                    if deadline < math.inf:
                        post["left"] = f"{max(0.0, deadline - time.perf_counter()) / 60:.1f}min"
                    if cpu_budget < math.inf:
                        post["cpu_left"] = f"{max(0.0, cpu_budget - self._prior_cpu - self.cpu_seconds()) / 60:.1f}min"
                    bar.set_postfix(post)
                if main and tc.sample_every and self.step % tc.sample_every == 0:
                    self.write_samples()
                if main and tc.ckpt_every and self.step % tc.ckpt_every == 0:
                    self.save_checkpoint()
                if main and tc.snapshot_every and self.step % tc.snapshot_every == 0:
                    self.snapshot()
                if main and tc.eval_every and self.step % tc.eval_every == 0:
                    from t2igan.eval.during_training import eval_hook

                    c0 = time.process_time()
                    eval_hook(self)
                    self._cpu_eval += time.process_time() - c0
                if deadline < math.inf and self.agree(time.perf_counter() > deadline):
                    stopped = "max_minutes"
                    break
                if cpu_budget < math.inf and self.agree(self._prior_cpu + self.cpu_seconds() > cpu_budget):
                    stopped = "max_cpu_minutes"
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            bar.close()
        elapsed, cpu = time.perf_counter() - t0, self.cpu_seconds()
        grid = None
        if main:
            self.save_checkpoint()
            grid = self.write_samples()
            writer.close()
        summary = {
            "task": self.cfg.task, "step": self.step, "steps_this_run": self.step - start_step,
            "stopped_by": stopped, "wall_seconds": round(elapsed, 2), "cpu_seconds": round(cpu, 2),
            "images_per_s": round((self.step - start_step) * tc.batch_size / max(elapsed, 1e-9), 2),
            "batch_size": tc.batch_size, "processes": self.world.size, "device": str(self.device),
            "threads": torch.get_num_threads(),
            "samples": str(self.run / grid.relative_to(self.out)) if grid else None, "pipeline": str(self.run / "pipeline"),
        }
        if main and monitor.on:
            summary["monitor"] = monitor.summary()
        if self.world.distributed:
            import torch.distributed as dist

            dist.barrier()  # the others wait for rank 0's checkpoint before they return
            if self._own_group:
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
