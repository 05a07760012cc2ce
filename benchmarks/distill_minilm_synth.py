"""Distil frozen all-MiniLM-L6-v2 sentence embeddings into a DAMSM-architecture bi-LSTM on
SynthFlowers captions; report cosine(student, MiniLM) on the held-out test captions.

    t2igan data synth --out /tmp/sf1500 --n 1500 --size 64 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/distill_minilm_synth.py --data /tmp/sf1500 --out /tmp/runs/distill_bench
    # or collect a run trained with t2igan train configs/distill_minilm_synth64.yaml ...:
    python benchmarks/distill_minilm_synth.py --from-run --data /tmp/sf1500 --out /tmp/runs/distill_minilm

Writes benchmarks/results/distill_minilm_synth.json: the teacher cache time, the held-out
cosine over training time (snapshots), the mean-target baseline and the machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="SynthFlowers folder")
    ap.add_argument("--out", required=True, help="run folder (must not hold a checkpoint)")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--result", default=str(HERE / "results" / "distill_minilm_synth.json"))
    ap.add_argument("--from-run", action="store_true",
                    help="do not train: collect the finished run in --out (trained by `t2igan train "
                         "configs/distill_minilm_synth64.yaml data.root=DATA train.out_dir=OUT train.threads=1`)")
    ap.add_argument("--note", default="", help="recorded in the result (e.g. how the run was timed)")
    a = ap.parse_args()
    if a.from_run:
        collect(a)
        return

    import torch

    from machine import describe
    from t2igan.train.run import build_training
    from t2igan.config import load_config, to_dict
    from t2igan.data.birds import load_any
    from t2igan.text.spec import load_caption_encoder
    from t2igan.text.cache import EmbeddingCache, flatten_captions

    torch.set_num_threads(a.threads)
    machine = describe()
    overrides = [f"data.root={a.data}", f"train.out_dir={a.out}", f"train.max_minutes={a.minutes}",
                 f"train.threads={a.threads}", "train.progress=false", "train.snapshot_every=250"]
    cfg = load_config(HERE.parent / "configs" / "distill_minilm_synth64.yaml", overrides)
    # the teacher pass, timed on its own (a cache hit when the folder was used before)
    teacher = load_caption_encoder(cfg.teacher.source)
    cache = EmbeddingCache(Path(a.data) / ".cache" / "text_embeddings")
    t0 = time.perf_counter()
    n_caps = {}
    for split in ("train", cfg.eval_split):
        flat, _ = flatten_captions(load_any(a.data, split).captions)
        cache.sentences(teacher, flat)
        n_caps[split] = {"captions": len(flat), "distinct": len(set(flat))}
    teacher_s = time.perf_counter() - t0
    del teacher
    summary = build_training(cfg, resume=False).fit()
    run = Path(a.out)
    curve = []
    for snap in sorted((run / "snapshots").glob("step_*")):
        s, m = json.loads((snap / "snapshot.json").read_text()), json.loads((snap / "distill_metrics.json").read_text())
        curve.append({"step": s["step"], "train_minutes": s["train_minutes"], "cosine_mean": m["cosine_mean"],
                      "cosine_median": m["cosine_median"]})
    final = json.loads((run / "pipeline" / "distill_metrics.json").read_text())
    result = {
        "what": "distil frozen all-MiniLM-L6-v2 (384-d, mean pooling + L2 norm) into a DAMSM bi-LSTM text encoder",
        "command": f"OMP_NUM_THREADS={a.threads} nice -n 19 python benchmarks/distill_minilm_synth.py --data {a.data} "
                   f"--out {a.out} --minutes {a.minutes}",
        "data": {"root": a.data, **n_caps},
        "teacher_cache": {"seconds": round(teacher_s, 1), "cache_hits": cache.hits, "cache_misses": cache.misses,
                          "note": "distinct captions are encoded once; a cache hit costs only the weight hash"},
        "train": {k: summary[k] for k in ("step", "wall_seconds", "images_per_s", "batch_size", "threads", "stopped_by")},
        "held_out": final,
        "curve": curve,
        "config": to_dict(cfg),
        "machine": machine,
    }
    Path(a.result).parent.mkdir(parents=True, exist_ok=True)
    Path(a.result).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"held_out": final, "teacher_seconds": round(teacher_s, 1), "steps": summary["step"]}, indent=2))
    print(f"written {a.result}")


def train_curve(run: Path) -> list[dict]:
    """Training-batch cosine and loss every log step, from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "logs"))
    ea.Reload()
    tags = ea.Tags().get("scalars", [])
    if "train/cos" not in tags:
        return []
    loss = {e.step: e.value for e in ea.Scalars("train/loss")} if "train/loss" in tags else {}
    return [{"step": e.step, "train_batch_cos": round(e.value, 4), "loss": round(loss.get(e.step, float("nan")), 5)}
            for e in ea.Scalars("train/cos")]


def collect(a) -> None:
    import yaml

    from machine import describe

    run = Path(a.out)
    summary = json.loads((run / "train_summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    result = {
        "what": "distil frozen all-MiniLM-L6-v2 (384-d, mean pooling + L2 norm) into a DAMSM bi-LSTM text encoder",
        "command": (f"t2igan data synth --out {a.data} --n 1500 --size 64 --seed 0 && OMP_NUM_THREADS=1 nice -n 19 "
                    f"t2igan train configs/distill_minilm_synth64.yaml data.root={a.data} train.out_dir={a.out} "
                    "train.threads=1"),
        "note": a.note,
        "train": {k: summary[k] for k in ("step", "wall_seconds", "images_per_s", "batch_size", "threads", "stopped_by")},
        "held_out": json.loads((run / "pipeline" / "distill_metrics.json").read_text()),
        "train_curve": train_curve(run),
        "config": cfg,
        "machine": describe(),
    }
    Path(a.result).parent.mkdir(parents=True, exist_ok=True)
    Path(a.result).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["held_out"], indent=2))
    print(f"written {a.result}")


if __name__ == "__main__":
    main()
