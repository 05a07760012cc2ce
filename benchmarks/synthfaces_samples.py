"""The SynthFaces sample grid of docs/datasets.md: items 0-31 of `t2igan data synthfaces --size 64
--seed 0` (the images of data/synthfaces64), each shown 2x with nearest-neighbour upscaling (the
64 px pixels as they are) and its first caption under it.

    python benchmarks/synthfaces_samples.py            # writes docs/synthfaces_samples.png
"""
from __future__ import annotations

import argparse

from PIL import Image, ImageDraw, ImageFont

from t2igan.data.synthfaces import generate_item

COLS, ROWS, SIZE, ZOOM = 8, 4, 64, 2
LINES, LINE_H = 6, 12  # caption lines under each face and their height


def wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels in ``font``."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def grid(seed: int = 0) -> Image.Image:
    font = ImageFont.load_default(size=11)  # Pillow's built-in font: the same on every machine
    tile = SIZE * ZOOM
    cell_h = tile + LINES * LINE_H + 6
    out = Image.new("RGB", (COLS * (tile + 4) + 4, ROWS * cell_h + 4), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i in range(COLS * ROWS):
        image, _, captions, _ = generate_item(i, SIZE, seed)
        x, y = 4 + (i % COLS) * (tile + 4), 4 + (i // COLS) * cell_h
        out.paste(image.resize((tile, tile), Image.NEAREST), (x, y))
        lines = wrap(captions[0], font, tile)[:LINES]
        for k, line in enumerate(lines):
            draw.text((x, y + tile + 2 + k * LINE_H), line, fill=(30, 30, 30), font=font)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/synthfaces_samples.png")
    a = p.parse_args()
    grid(a.seed).save(a.out, optimize=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
