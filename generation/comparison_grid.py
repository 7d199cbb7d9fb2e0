"""Side-by-side grids: one per prompt, a row per seed, a column per alpha (base | ... | aligned), labelled."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from generation.seed_paired import GeneratedImage

_PAD = 8


def _dejavu() -> Path | None:
    # matplotlib ships DejaVu Sans; find the file without importing matplotlib (slow) to keep grids quick.
    spec = importlib.util.find_spec("matplotlib")
    for folder in spec.submodule_search_locations if spec and spec.submodule_search_locations else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.exists():
            return path
    return None


def _font(size: int) -> tuple[ImageFont.ImageFont, bool]:
    """A font of ``size`` px and whether it has the Greek alpha (Pillow's built-in font lacks Greek)."""
    path = _dejavu()
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size), True
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size), False  # scalable with FreeType (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default(), False


def column_label(alpha: float, greek: bool = True) -> str:
    a = "α" if greek else "alpha"
    if alpha == 0.0:
        return f"base ({a}=0)"
    if alpha == 1.0:
        return f"aligned ({a}=1)"
    return f"{a}={alpha:g}"


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def make_grid(records: list[GeneratedImage], out_dir: str | Path, cell: int = 256,
              scores: dict[str, float | None] | None = None) -> Image.Image:
    """The grid of one prompt's images; ``scores`` (image file -> judged score) adds a caption under each cell."""
    root = Path(out_dir)
    alphas = sorted({r.alpha for r in records})
    seeds = sorted({r.seed for r in records})
    by_key = {(r.seed, r.alpha): r for r in records}
    first = records[0]
    (font, greek), (small, _) = _font(max(12, cell // 14)), _font(max(10, cell // 18))
    line_h = font.size + 4 if hasattr(font, "size") else 16
    label_w = max(64, cell // 3)
    width = label_w + len(alphas) * (cell + _PAD) + _PAD
    chars = int((width - 2 * _PAD) / (0.55 * (line_h - 4)))  # a proportional font averages about 0.55 em a char
    title = textwrap.wrap(f"{first.trait}: {first.prompt}", width=max(24, chars))
    caption_h = (small.size + 6 if hasattr(small, "size") else 14) if scores else 0
    top = _PAD + len(title) * line_h + _PAD + line_h
    height = top + len(seeds) * (cell + caption_h + _PAD) + _PAD
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(title):
        draw.text((_PAD, _PAD + i * line_h), line, fill="black", font=font)
    for j, alpha in enumerate(alphas):
        x = label_w + j * (cell + _PAD)
        label = column_label(alpha, greek)
        draw.text((x + (cell - _text_width(draw, label, font)) // 2, top - line_h), label, fill="black", font=font)
    for i, seed in enumerate(seeds):
        y = top + i * (cell + caption_h + _PAD)
        draw.text((_PAD, y + cell // 2 - line_h // 2), f"seed {seed}", fill="black", font=font)
        for j, alpha in enumerate(alphas):
            x = label_w + j * (cell + _PAD)
            rec = by_key.get((seed, alpha))
            if rec is None:
                continue
            img = Image.open(root / rec.file).convert("RGB")
            # Nearest-neighbour keeps tiny (32 px) images sharp when blown up; large ones are only scaled down.
            resample = Image.Resampling.NEAREST if img.width < cell else Image.Resampling.LANCZOS
            grid.paste(img.resize((cell, cell), resample), (x, y))
            if scores is not None:
                s = scores.get(rec.file)
                text = "judged: unparsable" if s is None else f"judged {s:.2f}"
                draw.text((x + 2, y + cell + 2), text, fill="dimgray", font=small)
    return grid


def write_grids(records: list[GeneratedImage], out_dir: str | Path, cell: int = 256,
                scores: dict[str, float | None] | None = None) -> list[str]:
    """One PNG per (trait, prompt) under ``out_dir/grids``; returns their paths relative to ``out_dir``."""
    groups: dict[tuple[str, str], list[GeneratedImage]] = {}
    for r in records:
        groups.setdefault((r.trait, r.prompt_id), []).append(r)
    (Path(out_dir) / "grids").mkdir(parents=True, exist_ok=True)
    paths = []
    for (trait, pid), recs in groups.items():
        rel = f"grids/{trait}__{pid}.png"
        make_grid(recs, out_dir, cell, scores).save(Path(out_dir) / rel)
        paths.append(rel)
    return paths
