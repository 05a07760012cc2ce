"""Training speed of the classic family at its SynthFlowers preset: parameters and images/s.

    OMP_NUM_THREADS=1 python benchmarks/families_speed.py --damsm runs/damsm_synth64 --steps 50

For each preset config in configs/ (GAN-INT-CLS, StackGAN stage I and II, StackGAN++ and its
HDGAN option, AttnGAN, STREAM, MirrorGAN) the run is built exactly as ``t2igan train`` builds
it (same TrainStep, batch size, widths), on a small SynthFlowers copy written to a temporary
folder (images are decoded once before timing), then ``--warmup`` steps are run untimed and
``--steps`` steps are timed: images/s = steps * batch_size / seconds. StackGAN stage II uses
the stage-I network just measured (exported), MirrorGAN the STREAM just measured. One torch
thread (``torch.set_num_threads(1)``). Results: ``benchmarks/results/families_speed.json``.
Quality is not measured here (that needs the 60-minute runs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from machine import describe  # benchmarks/machine.py (run as a script from the repo root)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from t2igan.train.run import build_training  # noqa: E402
from t2igan.config import load_config  # noqa: E402

PRESETS = [  # (name, config, extra overrides)
    ("gan_int_cls", "gan_int_cls_synth64.yaml", []),
    ("stackgan_stage1", "stackgan_stage1_synth64.yaml", []),
    ("stackgan_stage2", "stackgan_synth64.yaml", []),
    ("stackganpp", "stackganpp_synth64.yaml", []),
    ("stackganpp_hdgan", "stackganpp_synth64.yaml", ["model.hdgan=true"]),
    ("attngan", "attngan_synth64.yaml", []),
    ("stream", "stream_synth64.yaml", []),
    ("mirrorgan", "mirrorgan_synth64.yaml", []),
]


def count(module) -> tuple[int, int]:
    ps = list(module.parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


def measure(name, cfg_path, extra, data, damsm, work: Path, steps: int, warmup: int, links: dict) -> dict:
    ov = [f"data.root={data}", f"text_encoder={damsm}", f"train.out_dir={work / name}", "train.progress=false",
          "train.threads=1", *extra]
    if name == "stackgan_stage2":
        ov.append(f"model.stage1={links['stackgan_stage1']}")
    if name == "mirrorgan":
        ov.append(f"stream={links['stream']}")
    cfg = load_config(ROOT / "configs" / cfg_path, ov)
    tr = build_training(cfg, resume=False)
    task = tr.task
    torch.manual_seed(0)
    if hasattr(task, "to_device"):
        task.to_device(tr.device)
    it = tr.batches()
    batches = [tr.to_batch(next(it), i) for i in range(warmup + steps)]  # data off the timed path
    t0 = c0 = 0.0
    load0 = os.getloadavg()[0]
    for i, b in enumerate(batches):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        for m in task.modules.values():
            m.train()
        logs = task.train_step(b, i)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0  # CPU time of this process: robust to other jobs sharing the cores
    finite = all(bool(torch.isfinite(v).all()) for v in logs.values())
    tr.export()
    links[name] = str(tr.out / "pipeline")
    params = {k: dict(zip(("total", "trainable"), count(m))) for k, m in task.modules.items()}
    gen = params.get("netG", {})
    return {
        "config": f"configs/{cfg_path}", "overrides": extra, "batch_size": cfg.train.batch_size,
        "image_size": cfg.data.image_size, "scales": cfg.data.num_scales,
        "params": params, "generator_params": gen.get("total"), "generator_trainable_params": gen.get("trainable"),
        "discriminator_params": sum(v["total"] for k, v in params.items() if k.startswith("netD")) or None,
        "timed_steps": steps, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
        "images_per_s": round(steps * cfg.train.batch_size / seconds, 2),
        "images_per_cpu_s": round(steps * cfg.train.batch_size / cpu_seconds, 2),
        "cpu_share": round(cpu_seconds / seconds, 2),
        "loadavg_1min_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "seconds_per_step": round(seconds / steps, 3), "last_losses_finite": finite,
    }


def write(out: Path, a, machine: dict, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "classic-family parameter counts and training throughput at the SynthFlowers presets (CPU)",
           "method": f"train_step on pre-built batches, {a.warmup} warm-up steps excluded, {a.steps} timed; "
                     "images_per_s = steps * batch / wall seconds; images_per_cpu_s = steps * batch / CPU seconds "
                     "of the process (robust to other jobs on the machine); torch.set_num_threads(1)",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "damsm": a.damsm, "machine": machine,
           "results": results}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)


class _Captions(list):
    """A one-image stand-in dataset: networks are built from the config, no data is read."""

    @property
    def captions(self):
        return list(self)


def count_only(name, cfg_path, extra, damsm, work: Path, links: dict) -> dict:
    """Parameter counts of a preset without data or training (networks built as the run builds them)."""
    from t2igan.families import registry

    ov = [f"text_encoder={damsm}", f"train.out_dir={work / name}", *extra]
    if name == "stackgan_stage2":
        ov.append(f"model.stage1={links['stackgan_stage1']}")
    if name == "mirrorgan":
        ov.append(f"stream={links['stream']}")
    cfg = load_config(ROOT / "configs" / cfg_path, ov)
    torch.manual_seed(0)
    task, _ = registry.get(cfg.task).build(cfg, _Captions([["a flower"]]), False)
    task.export(work / name / "pipeline", None)  # untrained: only what stage II / MirrorGAN build on
    links[name] = str(work / name / "pipeline")
    params = {k: dict(zip(("total", "trainable"), count(m))) for k, m in task.modules.items()}
    gen = params.get("netG", {})
    return {"config": f"configs/{cfg_path}", "overrides": extra, "batch_size": cfg.train.batch_size,
            "image_size": cfg.data.image_size, "scales": cfg.data.num_scales, "params": params,
            "generator_params": gen.get("total"), "generator_trainable_params": gen.get("trainable"),
            "discriminator_params": sum(v["total"] for k, v in params.items() if k.startswith("netD")) or None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--damsm", default="runs/damsm_synth64", help="trained DAMSM run (text + image encoder)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--images", type=int, default=400, help="SynthFlowers images written for the benchmark")
    ap.add_argument("--only", default="", help="comma-separated preset names (default: all); the others are kept "
                    "from an existing --out file")
    ap.add_argument("--params-only", action="store_true", help="parameter counts only (no data, no timing)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "families_speed.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    from t2igan.data.synth import write_synthflowers

    only = {s for s in a.only.split(",") if s}
    machine = describe()
    results, links = {}, {}
    prev = Path(a.out)
    if (only or a.params_only) and prev.is_file():  # a partial re-run updates the named presets and keeps the others
        results = json.loads(prev.read_text(encoding="utf-8")).get("results", {})
    with tempfile.TemporaryDirectory(prefix="t2igan_families_") as tmp:
        work = Path(tmp)
        data = work / "sf64"
        if not a.params_only:
            write_synthflowers(data, n=a.images, size=64, seed=0, workers=1, progress=False)
        for name, cfg, extra in PRESETS:
            if only and name not in only and not (name in ("stackgan_stage1", "stream") and
                                                  {"stackgan_stage2", "mirrorgan"} & only):
                continue
            if a.params_only:
                r = count_only(name, cfg, extra, a.damsm, work, links)
                results[name] = {**results.get(name, {}), **r}
                print(f"{name}: G {r['generator_params']} params, D {r['discriminator_params']}", flush=True)
            else:
                print(f"{name}: {a.warmup} + {a.steps} steps ...", flush=True)
                r = measure(name, cfg, extra, data, a.damsm, work, a.steps, a.warmup, links)
                results[name] = r
                print(f"  {r['images_per_s']} images/s wall, {r['images_per_cpu_s']} images/CPU-s (share "
                      f"{r['cpu_share']}), G {r['generator_params']} params, D {r['discriminator_params']}", flush=True)
            write(Path(a.out), a, machine, results)  # after every preset, so a cut-short run keeps its results
    out = Path(a.out)
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
