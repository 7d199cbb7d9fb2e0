"""``summary.json`` of ``cogalign demo``: the figures the demo is judged by, read back from the stages' outputs.

Everything comes from files on disk (the benchmark's reliability, each evaluation's ``metrics.json`` and the final
models' predictions), so a resumed demo that skipped every stage writes the same summary.

The two criteria: the GRPO policy's mean SRCC over traits reaches ``TARGET_SHARE`` of the mean reliability ceiling
(the SRCC a model that saw the noise-free score would reach against the noisy labels), and GRPO beats its own SFT
warm-start: the lower end of the paired bootstrap 95% interval of (GRPO - SFT) mean SRCC is above zero. An SRCC
that is undefined (a model that gives every item the same score) counts as 0 in every mean.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from eval.checkpoint_eval import mean_over_traits_comparison
from eval.predict import Prediction
from eval.report import _safe_name

EVAL_MODELS = {"base": "base model", "sft": "SFT", "grpo": "GRPO"}
TARGET_SHARE = 0.8


def final_checkpoint(doc: dict) -> dict:
    """The model a run ended with: the evaluation lists it last (the run's top-level save, or its last checkpoint
    when the two hold the same weights)."""
    return doc["checkpoints"][-1]


def read_eval(eval_dir: str | Path) -> dict:
    return json.loads((Path(eval_dir) / "metrics.json").read_text())


def final_predictions(eval_dir: str | Path, doc: dict) -> list[Prediction]:
    path = Path(eval_dir) / f"predictions_{_safe_name(final_checkpoint(doc)['name'])}.jsonl"
    return [Prediction.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def srcc_per_trait(ck: dict, traits: list[str]) -> dict:
    """``{trait: SRCC or None, "mean": mean over traits}`` (undefined counts as 0 in the mean)."""
    per = {t: _num(ck["metrics"]["traits"].get(t, {}).get("srcc")) for t in traits}
    return per | {"mean": sum(v or 0.0 for v in per.values()) / len(traits)}


def trait_metrics(ck: dict, traits: list[str]) -> dict:
    """The per-trait figures the report shows for one model."""
    out = {}
    for t in traits:
        r = ck["metrics"]["traits"].get(t, {})
        out[t] = {"n": r.get("n"), "srcc": _num(r.get("srcc")), "srcc_ci": r.get("srcc_ci") or [None, None],
                  "plcc": _num(r.get("plcc")), "mae": _num(r.get("mae")), "parse_rate": _num(r.get("parse_rate")),
                  "collapsed": (r.get("spread") or {}).get("collapsed")}
    return out


def every_checkpoint(evals: dict[str, dict], traits: list[str]) -> list[dict]:
    """One row per evaluated model, in pipeline order."""
    rows = []
    for run, doc in evals.items():
        for ck in doc["checkpoints"]:
            ov = ck["metrics"]["overall"]
            rows.append({"run": run, "name": ck["name"], "step": ck.get("step"), "path": ck["path"],
                         "final": ck is final_checkpoint(doc), "parse_rate": _num(ov.get("parse_rate")),
                         "srcc": srcc_per_trait(ck, traits)})
    return rows


def build_summary(out: str | Path, *, n_boot: int, seed: int, stages: dict, minutes: float, versions: dict,
                  settings: dict) -> dict:
    out = Path(out)
    bench = json.loads((out / "data" / "benchmark.json").read_text())
    ceiling = {t: r["ceiling_srcc"] for t, r in bench["reliability"].items()}
    traits = list(ceiling)
    evals = {m: read_eval(out / "eval" / m) for m in EVAL_MODELS}
    finals = {m: final_checkpoint(doc) for m, doc in evals.items()}

    final_preds = (final_predictions(out / "eval" / "grpo", evals["grpo"]),
                   final_predictions(out / "eval" / "sft", evals["sft"]))
    unparsable = evals["grpo"]["settings"].get("unparsable", "midpoint")
    train_means = {t: r["reference"]["train_mean"] for t, r in finals["grpo"]["metrics"]["traits"].items()}
    cmp = mean_over_traits_comparison(*final_preds, unparsable=unparsable, n_boot=n_boot, seed=seed,
                                      train_means=train_means)
    cmp_mae = mean_over_traits_comparison(*final_preds, "mae", unparsable, n_boot, seed, per_range=True,
                                          train_means=train_means)
    ceiling_mean = sum(ceiling.values()) / len(ceiling)
    target = TARGET_SHARE * ceiling_mean
    srcc = {m: srcc_per_trait(ck, traits) for m, ck in finals.items()}
    lo = _num(cmp["ci"][0])
    return {
        "ceiling_srcc": ceiling,
        "ceiling_mean": ceiling_mean,
        "target": target,
        "srcc_base": srcc["base"],
        "srcc_sft": srcc["sft"],
        "srcc_grpo": srcc["grpo"],
        "srcc_grpo_minus_sft": srcc["grpo"]["mean"] - srcc["sft"]["mean"],
        "srcc_grpo_minus_sft_ci": [_num(v) for v in cmp["ci"]],
        "srcc_grpo_minus_sft_p": _num(cmp["p_value"]),
        # Errors as a share of each trait's range, averaged over traits (lower is better).
        "mae_per_range_sft": _num(cmp_mae["b"]),
        "mae_per_range_grpo": _num(cmp_mae["a"]),
        "mae_per_range_grpo_minus_sft_ci": [_num(v) for v in cmp_mae["ci"]],
        "passed": {
            "grpo_mean_srcc_reaches_target": srcc["grpo"]["mean"] >= target,
            "grpo_beats_sft_ci_above_zero": lo is not None and lo > 0,
        },
        "criteria": {
            "grpo_mean_srcc_reaches_target": f"mean GRPO SRCC >= {TARGET_SHARE} x mean ceiling SRCC",
            "grpo_beats_sft_ci_above_zero": "lower end of the paired bootstrap 95% interval of (GRPO - SFT) mean "
                                            "SRCC on the same test items (resampled within each trait) > 0",
            "undefined_srcc": "an undefined SRCC (constant answers) counts as 0 in every mean",
        },
        "metrics": {m: trait_metrics(ck, traits) for m, ck in finals.items()},
        "final_models": {m: {"name": ck["name"], "step": ck.get("step"), "path": ck["path"]}
                         for m, ck in finals.items()},
        "blindness_flagged": {m: (ck.get("blindness") or {}).get("flagged") for m, ck in finals.items()},
        "checkpoints": every_checkpoint(evals, traits),
        "test_split": {"n_items": bench["sizes"]["test"], "per_trait": {t: r["n"] for t, r in
                                                                        bench["reliability"].items()},
                       "seed": bench["seed"], "overlap_with_training_items": bench["overlap"]},
        "n_boot": n_boot,
        "minutes": minutes,
        "stages": stages,
        "versions": versions,
        "settings": settings,
    }
