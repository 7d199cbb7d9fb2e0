"""Judging generated images with a cognition model, and the seed-paired summary.

Every image is scored on its prompt's target trait by a policy (by default the aligned one) through
:func:`eval.predict.predict`, with the trait's registry prompt. The summary per trait:

- judged score per alpha: mean over all of that alpha's images, with a 95% percentile-bootstrap interval;
- win rate of each alpha > 0 against the base (alpha 0) on the same prompt and seed (ties count one half), with
  its interval, and the mean paired difference.

Answers without a score are never dropped silently: ``unparsable='midpoint'`` scores them as the middle of the
trait's range, ``'drop'`` leaves out the pairs they are in; the parse rate is reported either way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from cogip.data import items_to_dataset, make_prompt, prompt_text
from cogip.traits import get_trait
from eval.metrics import bootstrap_mean_ci
from eval.scoring import readable
from generation.seed_paired import GeneratedImage

UNPARSABLE = ("midpoint", "drop")


def judge_side(processor, override: int | None = None) -> int | None:
    """The square size the judge's image processor pins (min_pixels == max_pixels), else None (any size)."""
    if override:
        return override
    ip = getattr(processor, "image_processor", None)
    lo, hi = getattr(ip, "min_pixels", None), getattr(ip, "max_pixels", None)
    size = getattr(ip, "size", None)  # a dict, or transformers 5's SizeDict (attributes, and .get)
    if size is not None and hasattr(size, "get") and lo is None:
        lo, hi = size.get("shortest_edge"), size.get("longest_edge")
    if lo and hi and lo == hi:
        return int(round(math.sqrt(lo)))
    return None


def judge_images(model, processor, records: list[GeneratedImage], out_dir: str | Path, decoding: str = "expected",
                 prompt_style: str = "full", image_size: int | None = None, batch_size: int = 8,
                 progress: bool = True, questions: dict[str, str] | None = None) -> list[dict]:
    """Score every generated image on its trait, asked with ``questions[trait]`` where given (e.g.
    :func:`cogip.data.release_prompts`), else the trait's own wording in ``prompt_style``. Returns one dict per
    record: file, score (None if unparsable), text (the judge's raw answer),
    question (the instruction it was given)."""
    from eval.predict import predict

    side = judge_side(processor, image_size)
    items = []
    for r in records:
        img = Image.open(Path(out_dir) / r.file).convert("RGB")
        if side:
            img = img.resize((side, side), Image.Resampling.BICUBIC)
        items.append({"id": r.file, "image": img, "trait": r.trait, "score": math.nan, "score_std": None,
                      "answer": "", "prompt": make_prompt((questions or {}).get(r.trait)
                                                          or get_trait(r.trait).prompt_text(prompt_style))})
    asked = {item["id"]: prompt_text(item["prompt"]) for item in items}
    preds = predict(model, processor, items_to_dataset(items), decoding=decoding, batch_size=batch_size,
                    progress="judge" if progress else False)
    return [{"file": p.id, "score": p.score if readable(p) else None, "text": p.text, "question": asked[p.id]}
            for p in preds]


def _nan_to_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def summarize(records: list[GeneratedImage], judged: list[dict], unparsable: str = "midpoint",
              n_boot: int = 2000, seed: int = 0) -> dict:
    """Per-trait judged score per alpha and win rates against alpha 0 (see the module docstring)."""
    if unparsable not in UNPARSABLE:
        raise ValueError(f"unparsable must be one of {UNPARSABLE}, not {unparsable!r}")
    score_of = {j["file"]: j["score"] for j in judged}
    traits: dict[str, dict] = {}
    for trait_name in dict.fromkeys(r.trait for r in records):
        trait = get_trait(trait_name)
        mid = (trait.low + trait.high) / 2
        recs = [r for r in records if r.trait == trait_name]
        raw = {(r.prompt_id, r.seed, r.alpha): score_of.get(r.file) for r in recs}

        def filled(key, raw=raw, trait=trait, mid=mid):
            s = raw[key]
            return mid if s is None and unparsable == "midpoint" else (
                None if s is None else trait.clip(s))

        # Intervals resample prompts, each with all its seeds: a prompt's seeds are judged alike, not independently.
        alphas = sorted({k[2] for k in raw})
        per_alpha = {}
        for a in alphas:
            keys = [k for k in raw if k[2] == a]
            kept = [(k[0], v) for k, v in ((k, filled(k)) for k in keys) if v is not None]
            vals = np.array([v for _, v in kept], float)
            per_alpha[f"{a:g}"] = {
                "alpha": a, "n": len(keys), "parse_rate": sum(raw[k] is not None for k in keys) / len(keys),
                "mean": float(vals.mean()) if len(vals) else math.nan,
                "ci": list(bootstrap_mean_ci(vals, n_boot, seed=seed, groups=[p for p, _ in kept]))}
        wins = {}
        for a in alphas:
            if a == 0.0:
                continue
            pairs = [(p, filled((p, s, 0.0)), filled((p, s, a))) for (p, s, al) in raw
                     if al == a and (p, s, 0.0) in raw]
            pairs = [(p, b, x) for p, b, x in pairs if b is not None and x is not None]
            prompts = [p for p, _, _ in pairs]
            diff = np.array([x - b for _, b, x in pairs], float)
            win = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
            wins[f"{a:g}"] = {
                "alpha": a, "pairs": len(pairs), "win_rate": float(win.mean()) if len(win) else math.nan,
                "win_rate_ci": list(bootstrap_mean_ci(win, n_boot, seed=seed, groups=prompts)),
                "mean_diff": float(diff.mean()) if len(diff) else math.nan,
                "mean_diff_ci": list(bootstrap_mean_ci(diff, n_boot, seed=seed, groups=prompts))}
        traits[trait_name] = {"range": [trait.low, trait.high], "by_alpha": per_alpha, "vs_base": wins}
    return _nan_to_none({"unparsable_policy": unparsable, "n_boot": n_boot, "traits": traits})


def _fmt(x: float | None, ci: list | None = None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    s = f"{x:.{digits}f}"
    if ci and ci[0] is not None:
        s += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return s


def summary_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Table rows: one per trait and alpha; win columns are empty for the base row."""
    header = ["trait", "α", "images", "parsed", "judged score [95% CI]", "win rate vs base [95% CI]",
              "Δ score vs base [95% CI]"]
    rows = []
    names = {0.0: "0 base", 1.0: "1 aligned"}
    for name, t in summary["traits"].items():
        for key, a in t["by_alpha"].items():
            w = t["vs_base"].get(key)
            rows.append([name, names.get(a["alpha"], key),
                         str(a["n"]), f"{a['parse_rate']:.0%}", _fmt(a["mean"], a["ci"]),
                         _fmt(w["win_rate"], w["win_rate_ci"]) if w else "",
                         _fmt(w["mean_diff"], w["mean_diff_ci"]) if w else ""])
    return header, rows


def to_markdown(summary: dict, note: str = "") -> str:
    header, rows = summary_rows(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    foot = (f"\nSeed-paired: every alpha used the same prompts and seeds. Win rate: share of (prompt, seed) pairs "
            f"where the image at that alpha was judged higher than the base image (ties count 1/2). Intervals: "
            f"percentile bootstrap, {summary['n_boot']} resamples. Unparsable judge answers: "
            f"{summary['unparsable_policy']}.\n")
    return "\n".join(lines) + "\n" + foot + (f"\n{note}\n" if note else "")


def print_summary(summary: dict, title: str = "Judged generation") -> None:
    from rich.console import Console
    from rich.table import Table

    header, rows = summary_rows(summary)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # logs and CI: keep one row per line instead of wrapping intervals
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h in ("trait", "α") else "right", no_wrap=h == "trait")
    for r in rows:
        table.add_row(*r)
    console.print(table)


def plot_alpha_curve(summary: dict, path: str | Path) -> Path | None:
    """Mean judged score (with its interval) against alpha, one panel per trait; None with a single alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traits = summary["traits"]
    if not traits or all(len(t["by_alpha"]) < 2 for t in traits.values()):
        return None
    fig, axes = plt.subplots(1, len(traits), figsize=(3.6 * len(traits), 3.2), squeeze=False)
    for ax, (name, t) in zip(axes[0], traits.items()):
        pts = [(a["alpha"], a["mean"], a["ci"]) for a in t["by_alpha"].values() if a["mean"] is not None]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        lo = [p[2][0] if p[2][0] is not None else p[1] for p in pts]
        hi = [p[2][1] if p[2][1] is not None else p[1] for p in pts]
        ax.plot(xs, ys, marker="o")
        ax.fill_between(xs, lo, hi, alpha=0.2)
        ax.set(title=name, xlabel="α (0 base → 1 aligned)", ylabel="mean judged score", ylim=t["range"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
