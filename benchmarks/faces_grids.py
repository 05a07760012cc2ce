"""One figure of the final sample grids of several runs on the same fixed captions (docs/faces.md).

    python benchmarks/faces_grids.py runs/attngan_faces64_damsm runs/attngan_faces64_cliptext \
        runs/attngan_faces64_clipdamsm runs/attngan_faces64_clipboth --out docs/attngan_faces64_variants.png

Each run's last ``samples/step_*.png`` (the trainer's grid of its EMA generator at the end of
training: 4 samples per caption, seed ``train.seed``) is pasted as it is, under the run's name
and step; the captions (``samples/captions.txt``, which must be the same for every run) are
written on the left, one per row. Nothing is generated here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthfaces_samples import wrap  # noqa: E402  (benchmarks/synthfaces_samples.py)

CAPTION_W, HEAD_H, GAP, LINE_H = 260, 30, 12, 12


def last_grid(run: Path) -> tuple[Path, list[str]]:
    grids = sorted((run / "samples").glob("step_*.png"))
    if not grids:
        raise SystemExit(f"{run}: no samples/step_*.png (train with train.sample_captions or a test split)")
    caps = (run / "samples" / "captions.txt").read_text(encoding="utf-8").splitlines()
    return grids[-1], caps


def figure(runs: list[Path], zoom: int = 1) -> Image.Image:
    font = ImageFont.load_default(size=11)  # Pillow's built-in font: the same on every machine
    grids, captions = [], None
    for run in runs:
        path, caps = last_grid(run)
        if captions is not None and caps != captions:
            raise SystemExit(f"{run}: its sample captions differ from {runs[0]}'s; the grids would not be comparable")
        captions = caps
        im = Image.open(path).convert("RGB")
        grids.append((run.name, path.stem.split("_")[-1].lstrip("0") or "0", im.resize((im.width * zoom, im.height * zoom),
                                                                                       Image.NEAREST)))
    h = max(g.height for _, _, g in grids)
    row_h = h / len(captions)
    out = Image.new("RGB", (CAPTION_W + sum(g.width + GAP for _, _, g in grids), HEAD_H + h + 4), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for k, cap in enumerate(captions):
        lines = wrap(cap, font, CAPTION_W - 10)[: max(1, int(row_h // LINE_H))]
        y = HEAD_H + k * row_h + (row_h - len(lines) * LINE_H) / 2
        for j, line in enumerate(lines):
            draw.text((4, y + j * LINE_H), line, fill=(30, 30, 30), font=font)
    x = CAPTION_W
    for name, step, g in grids:
        draw.text((x, 2), name, fill=(0, 0, 0), font=font)
        draw.text((x, 15), f"step {step}", fill=(90, 90, 90), font=font)
        out.paste(g, (x, HEAD_H))
        x += g.width + GAP
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--zoom", type=int, default=1, help="nearest-neighbour upscaling of each grid")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    figure([Path(r) for r in a.runs], a.zoom).save(a.out, optimize=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
