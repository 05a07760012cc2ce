"""The README's main job on built-in defaults (``t2igan demo``): SynthFlowers -> a small CLIP trained
on its images and captions -> LAFITE on that CLIP -> a grid of samples for four captions. LAFITE is
the recipe that learnt fastest per CPU-minute here (docs/results.md, "CLIP-based GANs on SynthFlowers-64").

Every stage is an ordinary run (``t2igan train`` with the presets' settings and the shorter budget
below), so the demo's model is served, sampled and evaluated like any other
(``t2igan eval runs/demo/lafite``). A stage whose model already exists is reused; one killed before
its first export is trained again.
"""
from __future__ import annotations

from pathlib import Path

DEMO_FAMILY = "lafite"
DEMO_MODEL = Path("runs/demo") / DEMO_FAMILY  # what `t2igan serve` serves when no model is named

CAPTIONS = ["this flower has red petals and a yellow center", "a flower with thin blue petals",
            "the petals of this flower are white and the middle is black", "a large orange flower with five round petals"]


def stages(out: Path, data: Path, clip_minutes: float, minutes: float) -> list[tuple[str, Path, list[str]]]:
    """(task, run folder, overrides of its preset) of each training stage."""
    clip = out / "clip"
    return [
        # configs/clip_synth64.yaml with the demo's budget; both cores (train.threads 0: torch's default)
        ("clip", clip, ["--config", "configs/clip_synth64.yaml", f"train.max_minutes={clip_minutes}",
                        "train.max_steps=100000", "train.threads=0", "train.progress=true"]),
        # configs/lafite_synth64.yaml (LAFITE with captions) on that CLIP
        ("lafite", out / "lafite", ["--config", "configs/lafite_synth64.yaml", f"clip={clip}", f"train.max_minutes={minutes}",
                                  "train.threads=0", "train.sample_every=100", "train.ckpt_every=200",
                                  "train.snapshot_every=0"]),
    ]


def run_demo(out: str | Path = "runs/demo", n: int = 6000, clip_minutes: float = 2.0, minutes: float = 5.5,
             progress: bool = True) -> Path:
    """Train the demo's stages into ``out`` and write ``out/samples.png``; returns its path."""
    from torchvision.utils import save_image

    from t2igan.config import load_config
    from t2igan.data.synth import write_synthflowers
    from t2igan.pipeline import Pipeline
    from t2igan.train.run import build_training

    out = Path(out)
    data = out / "synthflowers64"
    if not (data / "dataset.json").is_file():
        print(f"[1/4] writing SynthFlowers ({n} images, 64x64) to {data}")
        write_synthflowers(data, n=n, size=64, seed=0, progress=progress)
    else:
        print(f"[1/4] using SynthFlowers at {data}")
    for k, (task, run, extra) in enumerate(stages(out, data, clip_minutes, minutes), 2):
        if (run / "pipeline" / "model_index.json").is_file():
            print(f"[{k}/4] {task}: using the trained run in {run}")
            continue
        print(f"[{k}/4] training {task} -> {run}")
        preset, overrides = extra[1], extra[2:]
        if not progress:
            overrides = [o for o in overrides if not o.startswith("train.progress")] + ["train.progress=false"]
        cfg = load_config(_preset(preset), [f"data.root={data}", f"train.out_dir={run}", *overrides], task=task)
        s = build_training(cfg, resume=False, overwrite=run.is_dir() and any(run.iterdir())).fit()
        print(f"      {s['step']} steps in {s['wall_seconds']:.0f} s ({s['images_per_s']:.1f} images/s)")
    model = out / DEMO_FAMILY
    pipe = Pipeline.from_pretrained(model)
    path = out / "samples.png"
    save_image(pipe.generate(CAPTIONS, seed=0, n=4), path, nrow=4)
    (out / "samples.txt").write_text("one row per caption:\n" + "\n".join(CAPTIONS) + "\n", encoding="utf-8")
    print(f"[4/4] samples for {len(CAPTIONS)} captions (one row each) written to {path}")
    print(f"      training grids: {model / 'samples'}; model: {model / 'pipeline'}")
    print(f"      try: t2igan sample {model} \"this flower has pink petals\" -n 4 -o pink.png")
    return path


def _preset(name: str) -> Path:
    """A preset config of the repository (the demo runs from a clone); its path whatever the working directory."""
    here = Path(__file__).resolve().parents[1] / name
    return here if here.is_file() else Path(name)
