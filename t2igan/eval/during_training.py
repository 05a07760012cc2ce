"""Evaluation during training (``train.eval_every``): the trainer calls :func:`eval_hook` every
N steps; it scores the current EMA generator on a small sample of the test split and appends
one line to ``RUN/eval_history.jsonl``:

    {"step": 1000, "train_minutes": 12.3, "n_samples": 200, "metrics": {"test generated: FID-SF": ..., ...}}

Metrics: R-precision with the run's DAMSM encoders (when its text encoder run has an image
encoder) and, when ``train.eval_evaluator`` names an attribute evaluator, attribute accuracy,
FID-SF/KID-SF and diversity. Inception FID is left to ``t2igan eval`` (too slow on a CPU to
run inside training).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch


def eval_hook(trainer) -> dict | None:
    from t2igan.eval.report import headline
    from t2igan.eval.run import evaluate_pipeline
    from t2igan.pipeline import Pipeline

    task, tc, cfg = trainer.task, trainer.tc, trainer.cfg
    if getattr(task, "ema_of", None) is None:  # no generator (e.g. DAMSM pretraining)
        return None
    t0 = time.perf_counter()
    damsm = evaluator = None
    from t2igan.text.spec import damsm_run_with_image_encoder

    te = damsm_run_with_image_encoder(getattr(cfg, "text_encoder", None))
    if te is not None:
        from t2igan.eval.rprecision import DAMSMScorer

        damsm = DAMSMScorer.from_pretrained(te, device=trainer.device)
    if tc.eval_evaluator:
        from t2igan.eval.evaluator import AttributeEvaluator

        evaluator = AttributeEvaluator.from_pretrained(tc.eval_evaluator, device=trainer.device)
    if damsm is None and evaluator is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="t2igan_eval_"))
    was = {n: m.training for n, m in task.modules.items()}
    try:
        task.export(tmp, trainer.ema)  # the EMA generator as a pipeline
        pipe = Pipeline.from_pretrained(tmp, device=trainer.device)
        with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
            res = evaluate_pipeline(pipe, cfg.data.root, evaluator, splits=("test",), n_samples=tc.eval_samples,
                                    batch_size=min(100, tc.eval_samples), seed=0, progress=False, damsm=damsm,
                                    diversity_captions=min(10, tc.eval_samples), diversity_k=4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for n, m in task.modules.items():
            m.train(was[n])
    minutes = (trainer._prior_seconds + time.perf_counter() - trainer._t0) / 60
    row = {"step": trainer.step, "train_minutes": round(minutes, 2), "n_samples": res["splits"]["test"]["n_samples"],
           "eval_seconds": round(time.perf_counter() - t0, 1),
           "metrics": {k: v for k, v in headline(res).items() if "generated" in k}}
    with open(trainer.out / "eval_history.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row
