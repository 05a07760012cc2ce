"""What a CLIP knows of each SynthFlowers attribute: zero-shot classification of real test images.

    python benchmarks/clip_probe.py runs/clip_synth64 --out benchmarks/results/clip_probe.json

For every attribute, each real test image is given the value whose prompt ("a flower with red
petals", "a flower with a yellow center", "a flower with five petals", "a flower with round
petals", "a small flower") has the highest cosine to the image in the CLIP's joint space. This is a
diagnostic of the image-text model the CLIP-based GANs are guided by (the attribute labels score it
here; they never train anything): a GAN whose CLIP cannot tell petal counts apart gets no signal
to draw them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe  # noqa: E402

PROMPTS = {"petal_colour": "a flower with {} petals", "centre_colour": "a flower with a {} center",
           "petal_count": "a flower with {} petals", "petal_shape": "a flower with {} petals", "size": "a {} flower",
           "background": "a flower on {}"}
NUMBERS = {"3": "three", "4": "four", "5": "five", "6": "six", "7": "seven", "8": "eight"}
BACKGROUNDS = {"sky": "a blue sky", "grass": "grass", "soil": "brown soil", "leaves": "leaves", "wall": "a wall"}


def probe(clip_spec: str, data_root: Path, n: int) -> dict:
    from t2igan.data.folder import load_folder
    from t2igan.text.clip import load_clip

    clip = load_clip(clip_spec)
    ds = load_folder(data_root, "test")
    attrs = {}
    for line in (data_root / "attributes.jsonl").read_text().splitlines():
        rec = json.loads(line)
        attrs[rec["id"]] = rec["attributes"]
    ids, paths = ds.ids[:n], ds.image_paths[:n]
    ims = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    ims = ims.float() / 127.5 - 1
    with torch.no_grad():
        feats = torch.cat([clip.encode_image(ims[i:i + 100]) for i in range(0, len(ims), 100)])
    out = {}
    for a, t in PROMPTS.items():
        vals = sorted({attrs[i][a] for i in ids})
        words = [NUMBERS.get(v, v) if a == "petal_count" else BACKGROUNDS.get(v, v) if a == "background" else v
                 for v in vals]
        text = clip.encode_text([t.format(w) for w in words])
        pred = (feats @ text.T).argmax(1)
        gt = torch.tensor([vals.index(attrs[i][a]) for i in ids])
        counts = torch.bincount(gt, minlength=len(vals)).float()
        out[a] = {"zero_shot_accuracy": round(float((pred == gt).float().mean()), 4), "values": len(vals),
                  "majority_class": round(float(counts.max() / counts.sum()), 4),
                  "prompt": t}
    return {"clip": clip_spec, "n_images": len(ids), "attributes": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", help="CLIP specs: run folders of task clip, Hugging Face folders, ARCH:FILE")
    ap.add_argument("--data-root", default="data/synthflowers64")
    ap.add_argument("--n", type=int, default=889, help="test images")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "clip_probe.json"))
    a = ap.parse_args()
    rows = []
    for c in a.clips:
        r = probe(c, Path(a.data_root), a.n)
        summary = Path(c) / "train_summary.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            r["train"] = {"steps": s.get("step"), "minutes": round(s.get("wall_seconds", 0) / 60, 2)}
        rows.append(r)
        print(c, {k: v["zero_shot_accuracy"] for k, v in r["attributes"].items()}, flush=True)
    doc = {"benchmark": "zero-shot attribute classification of real SynthFlowers test images by a CLIP",
           "command": "python benchmarks/clip_probe.py " + " ".join(sys.argv[1:]), "machine": describe(), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
