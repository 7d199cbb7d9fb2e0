"""Writing results: metrics.json, metrics.csv, predictions_<model>.jsonl, report.md, and the rich console table."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path

from cogip.files import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

CSV_FIELDS = ("model", "step", "trait", "n", "n_unparsable", "parse_rate", "well_formed_rate", "srcc", "srcc_lo",
              "srcc_hi", "plcc", "plcc_logistic", "krcc", "mae", "mae_lo", "mae_hi", "rmse", "label_accuracy",
              "pred_std", "human_std", "std_ratio", "collapsed", "label_oracle_srcc", "train_mean_mae",
              "blank_shift", "shuffled_shift", "ignores_image", "train_reward", "train_loss", "train_log_srcc")


def _clean(x):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _csv_value(x):
    if isinstance(x, float):
        return f"{x:.6f}" if math.isfinite(x) else ""  # empty cell: undefined (e.g. SRCC of constant predictions)
    return "" if x is None else x


def _ci(r: dict, key: str) -> str:
    lo, hi = r.get(f"{key}_ci", [None, None])
    return f"{_fmt(r.get(key))} [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else _fmt(r.get(key))


def csv_rows(results: dict) -> list[dict]:
    rows = []
    for ck in results["checkpoints"]:
        tr = ck.get("training") or {}
        for trait, r in ck["metrics"]["traits"].items():
            blind = ck.get("blindness") or {}
            row = {"model": ck["name"], "step": ck["step"], "trait": trait, "n": r["n"],
                   "n_unparsable": r["n_unparsable"], "parse_rate": r["parse_rate"],
                   "well_formed_rate": r["well_formed_rate"], "srcc": r["srcc"],
                   "srcc_lo": (r.get("srcc_ci") or [None])[0], "srcc_hi": (r.get("srcc_ci") or [None, None])[1],
                   "plcc": r["plcc"], "plcc_logistic": r["plcc_logistic"], "krcc": r["krcc"], "mae": r["mae"],
                   "mae_lo": (r.get("mae_ci") or [None])[0], "mae_hi": (r.get("mae_ci") or [None, None])[1],
                   "rmse": r["rmse"], "label_accuracy": r["label_accuracy"], **{
                       k: r["spread"][k] for k in ("pred_std", "human_std", "std_ratio", "collapsed")},
                   "label_oracle_srcc": r["reference"]["label_oracle_srcc"],
                   "train_mean_mae": r["reference"]["train_mean_mae"],
                   "blank_shift": blind.get("blank", {}).get(trait, {}).get("mean_abs_shift_of_range"),
                   "shuffled_shift": blind.get("shuffled", {}).get(trait, {}).get("mean_abs_shift_of_range"),
                   "ignores_image": ignores_image(blind, trait),
                   "train_reward": tr.get("reward"), "train_loss": tr.get("loss"),
                   "train_log_srcc": (tr.get("correlation") or {}).get("srcc", {}).get(trait)}
            for name, hr in (ck.get("held_out_rewards") or {}).items():
                row[f"held_out_{name}"] = hr["per_trait"].get(trait)
            rows.append(row)
    return rows


def ignores_image(blind: dict | None, trait: str) -> bool | None:
    """A blindness check's verdict on one trait: True (ignores the image), False (looks), None (not judged: no check,
    or no readable answer to judge by)."""
    return (((blind or {}).get("shuffled") or {}).get(trait) or {}).get("ignores_image")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def write_outputs(results: dict, out_dir: str | Path, settings: dict) -> dict[str, Path]:
    """metrics.json, metrics.csv, report.md and one predictions_<model>.jsonl per model (raw text and parse)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, preds in results.get("predictions", {}).items():
        p = out / f"predictions_{_safe_name(name)}.jsonl"
        write_text_atomic(p, "".join(json.dumps(_clean(x.to_dict())) + "\n" for x in preds))
        paths[f"predictions_{name}"] = p
    for stale in set(out.glob("predictions_*.jsonl")) - set(paths.values()):  # an earlier evaluation's other models
        stale.unlink()
        log.info("removed %s: a model this evaluation does not cover", stale)
    doc = {"settings": settings, **{k: v for k, v in results.items() if k != "predictions"}}
    paths["json"] = out / "metrics.json"
    write_json_atomic(paths["json"], _clean(doc))
    rows = csv_rows(results)
    fields = list(CSV_FIELDS) + sorted({k for r in rows for k in r if k not in CSV_FIELDS})
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(v) for k, v in r.items()})
    paths["csv"] = out / "metrics.csv"
    write_text_atomic(paths["csv"], table.getvalue(), newline="")  # the csv module's own line ends
    paths["report"] = out / "report.md"
    write_text_atomic(paths["report"], markdown_report(results, settings))
    return paths


def markdown_report(results: dict, settings: dict) -> str:
    cks = results["checkpoints"]
    lines = ["# cogalign evaluation", "",
             f"Data: {results['data']} ({results['n_items']} items). Decoding: `{settings.get('decoding')}`. "
             f"Models: {len(cks)}.", ""]
    policy = cks[0]["metrics"]["unparsable_policy_text"] if cks else ""
    lines += [f"**Unparsable answers** are kept and {policy} (`--unparsable {settings.get('unparsable')}`); scores "
              "outside a trait's range are clipped to it. `parse rate` counts answers with a readable number; the "
              "`parsed only` columns recompute SRCC and MAE without the unparsable items. Intervals are 95% "
              f"percentile bootstrap intervals over items ({settings.get('n_boot')} resamples).", "",
              "Reference lines: *label-oracle SRCC* is what a model that knew only each item's true label bin "
              "would reach; *train-mean MAE* is the error of always answering the training mean. *pred/human std* "
              "below 0.25 flags a collapsed model. PLCC (logistic) maps the scores through the 4-parameter "
              "logistic of quality assessment before correlating.", ""]
    for ck in cks:
        step = f" (step {ck['step']})" if ck.get("step") is not None else ""
        lines += [f"## {ck['name']}{step}", "", f"`{ck['path']}`", ""]
        lines += ["| trait | n | parse rate | SRCC [95% CI] | PLCC | PLCC (logistic) | KRCC | MAE [95% CI] | RMSE | "
                  "label acc. | SRCC parsed only | MAE parsed only | pred/human std | label-oracle SRCC | "
                  "train-mean MAE |",
                  "|" + "---|" * 15]
        for trait, r in ck["metrics"]["traits"].items():
            sub, ref, sp = r["parsed_only"], r["reference"], r["spread"]
            collapse = " **collapsed**" if sp["collapsed"] else ""
            lines.append(
                f"| {trait} | {r['n']} | {_fmt(r['parse_rate'])} ({r['n_unparsable']} unparsable) | {_ci(r, 'srcc')} "
                f"| {_fmt(r['plcc'])} | {_fmt(r['plcc_logistic'])} | {_fmt(r['krcc'])} | {_ci(r, 'mae')} | "
                f"{_fmt(r['rmse'])} | {_fmt(r['label_accuracy'])} | {_fmt(sub.get('srcc'))} | {_fmt(sub.get('mae'))} "
                f"| {_fmt(sp['std_ratio'])}{collapse} | {_fmt(ref['label_oracle_srcc'])} | "
                f"{_fmt(ref['train_mean_mae'])} |")
        ov = ck["metrics"]["overall"]
        lines += ["", f"Mean over traits: SRCC {_fmt(ov['mean_srcc'])}, PLCC {_fmt(ov['mean_plcc'])}, "
                      f"KRCC {_fmt(ov['mean_krcc'])}; parse rate {_fmt(ov['parse_rate'])} "
                      f"({ov['n_unparsable']} of {ov['n']} unparsable).", ""]
        if ov["collapsed_traits"]:
            lines += [f"**Collapse:** predictions barely vary for {', '.join(ov['collapsed_traits'])} (prediction "
                      "std under a quarter of the human std, or at most two distinct scores): a low MAE there does "
                      "not mean the model ranks images.", ""]
        lines += _blindness_lines(ck.get("blindness"))
        lines += _training_lines(ck)
    if "comparison" in results:
        lines += _comparison_lines(results["comparison"])
    lines += ["## Curves", "", "![curves](curves.png)", ""] if settings.get("curves") else []
    return "\n".join(lines) + "\n"


def _blindness_lines(blind: dict | None) -> list[str]:
    if not blind:
        return []
    lines = ["Blindness check (the same items predicted again, in the evaluation's decoding, with blank and with "
             "shuffled images; shift = mean |change| as a share of the trait's range):", "",
             "| trait | blank: shift | blank: changed | shuffled: shift | shuffled: changed "
             "| shuffled: SRCC with people |",
             "|---|---|---|---|---|---|"]
    for trait, r in blind["shuffled"].items():
        b = blind["blank"][trait]
        lines.append(f"| {trait} | {_fmt(b['mean_abs_shift_of_range'])} | {_fmt(b['changed_rate'])} | "
                     f"{_fmt(r['mean_abs_shift_of_range'])} | {_fmt(r['changed_rate'])} | "
                     f"{_fmt(r['srcc_with_people'])} |")
    lines.append("")
    if blind["flagged"]:
        lines += [f"**Warning: the model ignores the image** for {', '.join(blind['flagged'])}: shuffled images move "
                  f"its predictions by less than {blind['tolerance']:.0%} of the range.", ""]
    if blind.get("unreadable"):
        lines += [f"**No readable answers** for {', '.join(blind['unreadable'])}: whether the model looks at the "
                  "image cannot be told there.", ""]
    return lines


def _training_lines(ck: dict) -> list[str]:
    lines = []
    tr = ck.get("training") or {}
    if tr.get("log_steps"):
        parts = [f"reward {_fmt(tr['reward'])}"] if tr.get("reward") is not None else []
        parts += [f"{n} {_fmt(v)}" for n, v in tr.get("rewards", {}).items()]
        parts += [f"loss {_fmt(tr['loss'])}"] if tr.get("loss") is not None else []
        lines.append(f"Training log, steps {tr['log_steps'][0]}–{tr['log_steps'][1]} (means): {', '.join(parts)}.")
    if tr.get("correlation"):
        c = tr["correlation"]
        lines.append(f"Training correlation log at step {c['step']}: mean SRCC {_fmt(c['mean_srcc'])}.")
    for name, hr in (ck.get("held_out_rewards") or {}).items():
        lines.append(f"Held-out reward `{name}`: {_fmt(hr['mean'])}" + (
            f" ({hr['n_none']} not applicable)" if hr["n_none"] else "") + ".")
    return lines + [""] if lines else []


def _better(r: dict) -> str:
    """Which model the interval says is better: none ("n.s.") while it holds 0."""
    lo, hi = r["ci"]
    if r["a_better"] is None or lo is None or hi is None or lo <= 0 <= hi:
        return "n.s."
    return "A" if r["a_better"] else "B"


def _comparison_lines(cmp: dict) -> list[str]:
    n_boot = f" ({cmp['n_boot']} resamples)" if cmp.get("n_boot") else ""
    lines = ["## Paired comparison", "", f"A = `{cmp['a']}`, B = `{cmp['b']}`, same items; difference A − B with a "
             f"paired bootstrap 95% interval{n_boot} and two-sided p-value; *better* names a model only when the "
             "interval leaves out 0. In the mean over traits an undefined value (a trait whose answers are all "
             "alike) counts as 0.", "",
             "| trait | metric | A | B | A − B [95% CI] | p | better |", "|---|---|---|---|---|---|---|"]
    rows = [(trait, m, r) for trait, per in cmp["traits"].items() for m, r in per.items()]
    rows += [("**mean over traits**", m, r) for m, r in cmp.get("mean_over_traits", {}).items()]
    for trait, m, r in rows:
        lines.append(f"| {trait} | {m} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['diff'])} "
                     f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}] | {_fmt(r['p_value'])} | {_better(r)} |")
    return lines + [""]


def print_table(results: dict) -> None:
    """The per-trait results as a rich table on the console."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cogalign eval: {results['data']}")
    for col in ("model", "step", "trait", "n", "parse", "SRCC [95% CI]", "PLCC", "PLCC-log", "KRCC", "MAE",
                "label acc", "std ratio", "flags"):
        table.add_column(col, justify="left" if col in ("model", "trait", "flags") else "right")
    for ck in results["checkpoints"]:
        blind = ck.get("blindness") or {}
        for trait, r in ck["metrics"]["traits"].items():
            flags = [f for f, on in (("collapsed", r["spread"]["collapsed"]),
                                     ("ignores image", ignores_image(blind, trait)),
                                     ("no readable answer", trait in blind.get("unreadable", []))) if on]
            table.add_row(ck["name"], _fmt(ck.get("step")), trait, str(r["n"]), _fmt(r["parse_rate"], 2),
                          _ci(r, "srcc"), _fmt(r["plcc"]), _fmt(r["plcc_logistic"]), _fmt(r["krcc"]),
                          _fmt(r["mae"]), _fmt(r["label_accuracy"], 2), _fmt(r["spread"]["std_ratio"], 2),
                          ", ".join(flags))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # logs and pipes: do not squeeze the table into 80 columns
    console.print(table)
