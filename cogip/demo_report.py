"""``report.md`` and ``report.html`` of ``cogalign demo``.

The content is built once, as a list of blocks (headings, paragraphs, tables, figures), and rendered twice: to
Markdown, with figures linked by their path relative to the demo folder, and to a single self-contained HTML page,
with every figure embedded as a base64 PNG data URI, the style inline and no scripts or links to anything outside
the file, so it opens offline and can be mailed around on its own.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cogip.demo_summary import EVAL_MODELS, final_checkpoint, read_eval
from cogip.traits import in_registry_order
from eval.report import ignores_image
from sft_warmstart.model_card import GRPO_CONFIG_FILE


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # may hold `code` and **bold**


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    path: Path  # a PNG inside the demo folder
    caption: str


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(v, ci) -> str:
    lo, hi = (ci or [None, None])[:2]
    return _f(v) + (f" [{_f(lo)}, {_f(hi)}]" if lo is not None and hi is not None else "")


def _pass(ok: bool) -> str:
    return "**PASS**" if ok else "**not met**"


# ---------------------------------------------------------------------------------------------------------------
# Content


def _headline(s: dict) -> list:
    diff, (lo, hi) = s["srcc_grpo_minus_sft"], s["srcc_grpo_minus_sft_ci"]
    passed = s["passed"]
    return [
        Heading("Result"),
        Table(["criterion", "value", "needed", "outcome"], [
            ["mean GRPO SRCC over traits", _f(s["srcc_grpo"]["mean"]),
             f">= {_f(s['target'])} (0.8 x mean ceiling {_f(s['ceiling_mean'])})",
             _pass(passed["grpo_mean_srcc_reaches_target"])],
            ["GRPO - SFT mean SRCC [95% CI]", f"{_f(diff)} [{_f(lo)}, {_f(hi)}]", "CI lower end > 0",
             _pass(passed["grpo_beats_sft_ci_above_zero"])],
            ["mean MAE / range: SFT -> GRPO [95% CI of the change]",
             f"{_f(s['mae_per_range_sft'])} -> {_f(s['mae_per_range_grpo'])} "
             f"[{_f(s['mae_per_range_grpo_minus_sft_ci'][0])}, {_f(s['mae_per_range_grpo_minus_sft_ci'][1])}]",
             "(reported, not a criterion)", ""],
        ]),
        Para(f"Test split: {s['test_split']['n_items']} synthetic items "
             f"({', '.join(f'{t} {n}' for t, n in s['test_split']['per_trait'].items())}), drawn from their own "
             f"seed and checked disjoint from every training and validation item the stages drew "
             f"({s['test_split']['overlap_with_training_items']} shared). The interval is a paired bootstrap over "
             f"the same test items ({s['n_boot']} resamples, items resampled within each trait). An undefined SRCC "
             "(a model that gives every item the same score) counts as 0 in the means."),
    ] + ([Para(_why_grpo_adds_little(s['test_split']['n_items'], hi - lo))] if lo <= 0 <= hi else [])


def _why_grpo_adds_little(n_items: int, width: float) -> str:
    """Shown when GRPO - SFT is within its interval of 0."""
    return ("Why GRPO may add little here: its reward scores each answer against the same human scores that the SFT "
            "stage's soft labels already fit, so on what SFT has learned it continues the same fit, and it adds what "
            "its own items carry that SFT's did not. With the tiny configs (SFT on 2,000 items, GRPO on 12,800 "
            "others) that was +0.013 to +0.019 in mean SRCC on 1,200 test items over three benchmark seeds, but "
            "+0.004 (validation) from an SFT model that already read Aesthetics well (vision pretrained on one "
            "thread), and +0.003 to +0.005 from an SFT stage with 3,000 or 4,000 items: what GRPO adds is what SFT "
            f"left to learn. This run's {n_items} test items give an interval {width:.3f} wide. Measurements and "
            "every setting tried: `BENCHMARKS.md`, \"GRPO against its SFT start\".")


def _per_trait(s: dict) -> list:
    traits = list(s["ceiling_srcc"])
    blocks = [Heading("Test metrics per trait"),
              Para("SRCC of each final model against the simulated raters' mean score, next to the reliability "
                   "ceiling: the SRCC a model that saw each image's noise-free score would reach against these "
                   "noisy labels (`cogip.synthetic.reliability` on the test split)."),
              Table(["trait", "ceiling", "base", "SFT", "GRPO", "GRPO / ceiling"],
                    [[t, _f(s["ceiling_srcc"][t]), _f(s["srcc_base"][t]), _f(s["srcc_sft"][t]),
                      _f(s["srcc_grpo"][t]),
                      _f(s["srcc_grpo"][t] / s["ceiling_srcc"][t], 2) if s["srcc_grpo"][t] is not None else "–"]
                     for t in traits]
                    + [["**mean**", _f(s["ceiling_mean"]), _f(s["srcc_base"]["mean"]), _f(s["srcc_sft"]["mean"]),
                        _f(s["srcc_grpo"]["mean"]), _f(s["srcc_grpo"]["mean"] / s["ceiling_mean"], 2)]])]
    for m, label in EVAL_MODELS.items():
        fm = s["final_models"][m]
        step = f", step {fm['step']}" if fm.get("step") is not None else ""
        rows = []
        for t in traits:
            r = s["metrics"][m][t]
            rows.append([t, str(r["n"]), _ci(r["srcc"], r["srcc_ci"]), _f(r["plcc"]), _f(r["mae"]),
                         _f(r["parse_rate"], 2), _f(s["ceiling_srcc"][t]),
                         "collapsed" if r["collapsed"] else ""])
        blocks += [Heading(f"{label}: `{fm['name']}`{step}", 3),
                   Table(["trait", "n", "SRCC [95% CI]", "PLCC", "MAE", "parse rate", "ceiling", "flags"], rows)]
    return blocks


def _checkpoints(s: dict) -> list:
    traits = list(s["ceiling_srcc"])
    rows = [[EVAL_MODELS[r["run"]], f"`{r['name']}`" + (" (final)" if r["final"] else ""),
             "–" if r["step"] is None else str(r["step"]), _f(r["srcc"]["mean"]),
             *(_f(r["srcc"][t]) for t in traits), _f(r["parse_rate"], 2)] for r in s["checkpoints"]]
    return [Heading("Every checkpoint on the test split"),
            Para("Each complete checkpoint of each run (a run's final save is listed once: when it holds the same "
                 "weights as its last checkpoint it is that checkpoint)."),
            Table(["run", "checkpoint", "step", "mean SRCC", *traits, "parse rate"], rows)]


def _held_out_items(out: Path) -> str:
    """How many validation items the GRPO run scored while training, as its saved config says (or nothing)."""
    import yaml

    try:
        n = int(yaml.safe_load((out / "grpo" / GRPO_CONFIG_FILE).read_text())["synthetic_eval_size"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return ""
    return f" on {n} validation items (about {n // 4} per trait: far noisier than the test split's figures)"


def _curves(out: Path) -> list:
    blocks = [Heading("Training curves")]
    if (out / "training_curves.png").exists():
        blocks.append(Figure(out / "training_curves.png",
                             "SFT loss per logged step; GRPO training reward; held-out (validation split) SRCC per "
                             f"trait that the GRPO callback measured while training{_held_out_items(out)} "
                             "(correlation_log.jsonl), with each trait's reliability ceiling dotted."))
    for run in ("sft", "grpo"):
        path = out / "eval" / run / "curves.png"
        if path.exists():
            blocks.append(Figure(path, f"{EVAL_MODELS[run]} checkpoints on the test split (eval/curves.py): SRCC "
                                       "per trait against step, reward against step, reward against SRCC."))
    return blocks if len(blocks) > 1 else []


def _blindness(out: Path) -> list:
    rows = []
    for m, label in EVAL_MODELS.items():
        blind = final_checkpoint(read_eval(out / "eval" / m)).get("blindness")
        if not blind:
            continue
        for t, r in blind["shuffled"].items():
            b = blind["blank"][t]
            rows.append([label, t, _f(b["mean_abs_shift_of_range"]), _f(r["mean_abs_shift_of_range"]),
                         _f(r["changed_rate"], 2), _f(r["srcc_with_people"]),
                         {True: "**ignores the image**", False: "looks", None: "no readable answers"}[
                             ignores_image(blind, t)]])
    if not rows:
        return []
    return [Heading("Blindness check"),
            Para("Each final model re-scores the test items with a blank grey image and with another item's image "
                 "(`eval/blindness.py`). Shift: mean absolute change of the score as a share of the trait's range. "
                 "A model that reads the trait from the prompt and ignores the picture barely moves."),
            Table(["model", "trait", "blank: shift", "shuffled: shift", "shuffled: changed", "shuffled: SRCC",
                   "verdict"], rows)]


def _generation(out: Path) -> list:
    from generation.judging import summary_rows

    gen = out / "generation"
    if not gen.is_dir():
        return []
    blocks = [Heading("Generation: the GRPO policy as Qwen-Image's text encoder")]
    record = gen / "generation.json"
    if record.exists():
        doc = json.loads(record.read_text())
        ck = doc.get("checkpoints", {})
        blends = [a for a in doc.get("alphas", []) if 0 < a < 1]
        blends_text = f", blends at α = {', '.join(f'{a:g}' for a in blends)}" if blends else ""
        judged = f", judge `{_rel(ck.get('judge'), out)}`" if (gen / "judgement.json").exists() else " (not judged)"
        blocks.append(Para(f"The same prompts and seeds with the base text encoder (α = 0) and the aligned one "
                           f"(α = 1){blends_text}: {len(doc.get('images', []))} images. Aligned encoder "
                           f"`{_rel(ck.get('aligned_encoder'), out)}` (the GRPO policy), base encoder "
                           f"`{_rel(ck.get('base_encoder'), out)}`{judged}."))
        for note in doc.get("notes", []):
            blocks.append(Para(f"Note: {note}."))
    judgement = gen / "judgement.json"
    if judgement.exists():
        header, rows = summary_rows(json.loads(judgement.read_text()))
        blocks += [Heading("Judge table", 3), Table(header, rows),
                   Para("Intervals resample prompts, each with all its seeds (a prompt's seeds are judged alike): "
                        "with one prompt per trait there is none.")]
    if (gen / "alpha_curve.png").exists():
        blocks.append(Figure(gen / "alpha_curve.png", "Mean judged score against α, per trait (95% intervals, where "
                                                      "there are two prompts or more)."))
    grids = sorted((gen / "grids").glob("*.png")) if (gen / "grids").is_dir() else []  # <trait>__<prompt>.png
    order = in_registry_order(g.stem.split("__")[0] for g in grids)
    grids.sort(key=lambda g: order.index(g.stem.split("__")[0]))  # stable: by prompt within a trait
    if grids:
        blocks.append(Heading("Image grids", 3))
        blocks += [Figure(g, g.stem.replace("__", ": ")) for g in grids]
    return blocks


def _rel(path, out: Path) -> str:
    if not path:
        return "?"
    if isinstance(path, dict):
        path = path.get("path") or path.get("name_or_path") or next(iter(path.values()), "?")
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except (ValueError, OSError, TypeError):
        return str(path)


def _run_details(s: dict) -> list:
    rows = [[name, r["status"] + (", in a second process beside the stages after it" if r.get("background") else ""),
             _f(r.get("seconds"), 1)] for name, r in s["stages"].items()]
    v = s["versions"]
    return [Heading("Run"),
            Table(["stage", "this run", "seconds (when it ran)"], rows),
            Para(f"This invocation took {s['minutes']:.1f} min. Versions: "
                 + ", ".join(f"{k} {val}" for k, val in v.items()) + "."),
            Para("Configs: " + ", ".join(f"{k} `{p}`" for k, p in s["settings"]["configs"].items())
                 + ". Outputs: `data/`, `sft/`, `grpo/`, `eval/`, `generation/`, `summary.json`."),
            Para("Run `cogalign demo` again to resume or skip finished stages; `cogalign demo --fresh` starts "
                 "over.")]


def report_blocks(out: str | Path, summary: dict) -> list:
    out = Path(out)
    return ([Heading("cogalign demo: the whole pipeline on the synthetic benchmark", 1),
             Para("Synthetic benchmark → SFT warm-start (soft-label loss) → GRPO from the SFT output → evaluation "
                  "of every checkpoint on the test split → generation with the GRPO policy as the text encoder. "
                  "Tiny models built in code, on CPU; nothing is downloaded.")]
            + _headline(summary) + _per_trait(summary) + _checkpoints(summary) + _curves(out) + _blindness(out)
            + _generation(out) + _run_details(summary))


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def to_markdown(blocks: list, out: str | Path) -> str:
    out = Path(out)
    lines = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Table):
            lines += ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows]
            lines.append("")
        elif isinstance(b, Figure):
            lines += [f"![{b.path.stem}]({b.path.relative_to(out).as_posix()})", "", f"*{b.caption}*", ""]
    return "\n".join(lines)


_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>")]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .88em; }
th, td { border: 1px solid #d6d6d6; padding: .3em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f2; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .88em; }
strong.pass { color: #0a7d28; } strong.fail { color: #b3261e; }
"""


def _inline_html(text: str) -> str:
    s = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        s = pattern.sub(repl, s)
    return (s.replace("<strong>PASS</strong>", '<strong class="pass">PASS</strong>')
            .replace("<strong>not met</strong>", '<strong class="fail">not met</strong>'))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(blocks: list, title: str = "cogalign demo report") -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>"]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            parts.append(f'<figure><img src="{_data_uri(b.path)}" alt="{html.escape(b.caption)}">'
                         f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_reports(out: str | Path, summary: dict) -> tuple[Path, Path]:
    """Draw the training curves and write ``report.md`` and ``report.html`` into ``out``."""
    from eval.curves import plot_training_curves
    from eval.training_log import read_correlation_log, read_log_history

    out = Path(out)
    plot_training_curves(read_log_history(out / "sft"), read_log_history(out / "grpo"),
                         read_correlation_log(out / "grpo"), out / "training_curves.png",
                         ceiling=summary["ceiling_srcc"])
    blocks = report_blocks(out, summary)
    paths = (out / "report.md", out / "report.html")
    for path, text in zip(paths, (to_markdown(blocks, out), to_html(blocks))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
