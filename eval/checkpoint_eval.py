"""Evaluate models: one checkpoint, every checkpoint of a training run, or a paired comparison of two.

:func:`evaluate_model` is the unit (predict, re-predict for the blindness check, then :func:`score`: metrics,
blindness, held-out rewards); :func:`evaluate_run` walks a run folder's complete checkpoints, predicting only those
it has no stored predictions for (``eval/resume.py``), and joins each with what the training run logged at its step.
"""

from __future__ import annotations

import filecmp
import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from cogip.checkpoints import ZERO3_HINT, has_model_weights, is_weight_file, list_complete_checkpoints, newest_weights
from cogip.data import get_split
from cogip.files import InputNotFoundError
from cogip.models import limit_image_pixels, load_policy
from cogip.vision_cache import install_vision_caches
from eval import metrics as M
from eval.blindness import altered_predictions, blindness_result
from eval.eval_args import EvalArgs
from eval.held_out_reward import held_out_rewards, resolve_reward
from eval.predict import Prediction, predict
from eval.resume import blindness_key, load_predictions, prediction_basis, prediction_key, save_predictions
from eval.scoring import evaluate, filled_scores, train_means_of
from eval.training_log import (
    read_correlation_log,
    read_log_history,
    read_prompt_style,
    read_save_steps,
    training_at_step,
)

log = logging.getLogger(__name__)
_STEP = re.compile(r"checkpoint-(\d+)$")


def _first_per_trait(ds, k: int | None):
    if not k:
        return ds
    seen: dict[str, int] = {}
    keep = []
    for i, t in enumerate(ds["trait"]):
        if seen.get(t, 0) < k:
            seen[t] = seen.get(t, 0) + 1
            keep.append(i)
    return ds.select(keep)


def load_eval_data(args: EvalArgs) -> tuple[object, dict[str, float] | None, str]:
    """The split to evaluate, the per-trait train means (for the constant reference line) and a description."""
    from datasets import DatasetDict, load_from_disk

    # Items that are not asked already (synthetic ones, a dataset of image / trait / score) are asked as the model
    # was trained: prompt_style in its run's saved config.
    models = [args.run_dir] if args.run_dir else args.compare or [args.checkpoint]
    styles = {m: read_prompt_style(m) for m in models}
    style = args.prompt_style or next((s for s in styles.values() if s), None)
    if not args.prompt_style and len(set(styles.values()) - {None}) > 1:
        log.warning("the models were trained on different questions (%s): both are asked %s's; --prompt_style "
                    "chooses", ", ".join(f"{m}: {s}" for m, s in styles.items()), models[0])
    if args.data == "synthetic":
        from cogip.synthetic import make_benchmark

        style = style or "short"  # the synthetic benchmark's own
        sizes = {"n_train": 200, "n_validation": 0, "n_test": 0} | {f"n_{args.split}": args.synthetic_n}
        splits = make_benchmark(**sizes, seed=args.synthetic_seed, image_size=args.image_size, prompt_style=style)
        ds, train = splits[args.split], splits["train"] if args.split != "train" else None
        desc = f"synthetic benchmark (seed {args.synthetic_seed}), split {args.split}, {style} prompts"
    else:
        path, train = Path(args.data), None
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
            loaded = load_from_disk(str(path))
        elif path.is_dir() and not path.name.endswith(("test_msg_file", "cognition_scores")):
            from cogip.data import RELEASE_FILES, load_release, read_scores, release_splits

            # the split's files and images alone; the training file gives the train means (its images not needed)
            loaded = load_release(path, args.image_root, drop_invalid=args.drop_invalid, splits=[args.split])
            if args.split != "train" and "train" in release_splits(path):
                train = read_scores(path / RELEASE_FILES["train"])
        else:
            from cogip.data import load_upstream

            loaded = load_upstream(path, args.image_root, drop_invalid=args.drop_invalid)
        if isinstance(loaded, DatasetDict):
            ds = get_split(loaded, args.split, str(path))
            train = loaded["train"] if "train" in loaded and args.split != "train" else train
        else:
            ds = loaded
        desc = f"{path}" + (f", split {args.split}" if isinstance(loaded, DatasetDict) else "")
        if "prompt" not in ds.column_names:  # image / trait / score columns, as the training stages' --dataset hf
            from cogip.data import load_hf

            style = style or "full"  # the training stages' default
            ds = load_hf(ds, prompt_style=style, drop_invalid=args.drop_invalid)
            desc += f", {style} prompts"
    if args.unparsable == "train_mean" and train is None:
        raise InputNotFoundError(f"--unparsable train_mean counts an unreadable answer as its trait's mean training "
                                 f"score, but {desc} has no training split to take it from")
    ds = _first_per_trait(ds, args.max_items_per_trait)
    return ds, (train_means_of(train) if train is not None else None), desc


def _device(args: EvalArgs) -> str:
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _reward_fns(args: EvalArgs) -> dict:
    return dict(resolve_reward(spec) for spec in (args.reward_funcs or []))


def _predict(model, processor, dataset, args: EvalArgs, label: str = "") -> list[Prediction]:
    return predict(model, processor, dataset, decoding=args.decoding, batch_size=args.batch_size,
                   max_new_tokens=args.max_new_tokens, num_samples=args.num_samples, temperature=args.temperature,
                   seed=args.seed, progress=f"predict {label}".strip())


def _blindness_items(args: EvalArgs, dataset) -> int:
    return len(dataset) if args.blindness_items is None else min(args.blindness_items, len(dataset))


def _altered(model, processor, dataset, args: EvalArgs) -> dict[str, list[Prediction]]:
    # Same decoding as the scores: a model that hedges between bands has one greedy answer for every image (so
    # greedy re-scoring called it blind) while the expected scores it is judged by follow the image.
    return altered_predictions(model, processor, dataset.select(range(_blindness_items(args, dataset))),
                               decoding=args.decoding, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens, num_samples=args.num_samples,
                               temperature=args.temperature, seed=args.seed)


def score(preds: list[Prediction], dataset, args: EvalArgs, train_means: dict[str, float] | None = None,
          reward_fns: dict | None = None, altered: dict[str, list[Prediction]] | None = None) -> dict:
    """Every figure of one model from its predictions (and, for the blindness check, its ``altered`` ones)."""
    result = {"metrics": evaluate(preds, dataset, unparsable=args.unparsable, train_means=train_means,
                                  n_boot=args.n_boot, seed=args.seed)}
    if altered is not None:
        n = len(altered["shuffled"])
        result["blindness"] = blindness_result(preds[:n], altered, args.unparsable, args.blindness_tolerance,
                                               train_means)
    if reward_fns:
        result["held_out_rewards"] = held_out_rewards(preds, reward_fns, dataset)
    return result


def evaluate_model(model, processor, dataset, args: EvalArgs, train_means: dict[str, float] | None = None,
                   reward_fns: dict | None = None, label: str = "",
                   blindness: bool | None = None) -> tuple[dict, list[Prediction]]:
    """Predictions and every figure for one model on ``dataset`` (``blindness`` overrides ``args.blindness``)."""
    preds = _predict(model, processor, dataset, args, label)
    blind = args.blindness if blindness is None else blindness
    altered = _altered(model, processor, dataset, args) if blind else None
    return score(preds, dataset, args, train_means, reward_fns, altered), preds


class ModelLoadError(RuntimeError):
    """A model folder that does not load (half-written, a file missing): the evaluation ends with its name."""


def _load(path: str, args: EvalArgs):
    try:
        model, processor = load_policy(path, dtype=args.dtype)
    except (OSError, ValueError, SafetensorError) as e:  # a half-written folder, a missing file: name the model
        where = "" if Path(path).exists() else " (no such folder here, so it was looked up as a hub id)"
        raise ModelLoadError(f"cannot load a model from {path}{where}: {type(e).__name__}: {e}") from e
    limit_image_pixels(processor, args.image_max_pixels)
    model.requires_grad_(False)  # evaluation never trains: a frozen tower may reuse each image's tokens
    install_vision_caches(model, args.vision_cache_gb)
    return model.to(_device(args)), processor


def run_checkpoints(args: EvalArgs) -> list[tuple[str, str, int | None]]:
    """(name, path, step) of every model a --run_dir evaluation covers, oldest first."""
    run = Path(args.run_dir)
    complete = list_complete_checkpoints(run)
    found = [(p.name, str(p), int(_STEP.search(p.name).group(1))) for p in complete if has_model_weights(p)]
    skipped = sorted(p.name for p in run.glob("checkpoint-*") if p.is_dir() and p not in complete)
    if skipped:
        log.warning("skipping incomplete checkpoint(s) (no readable trainer_state.json): %s", ", ".join(skipped))
    unweighted = [p.name for p in complete if not has_model_weights(p)]
    if unweighted:
        log.warning("skipping checkpoint(s) with no model or adapter weights: %s (%s)", ", ".join(unweighted),
                    ZERO3_HINT)
    if args.include_final and has_model_weights(run):
        final_step = _final_step(run, found)
        if final_step is None and found and newest_weights(run) < newest_weights(found[-1][1]):
            log.warning("leaving out the model at the top of %s: it is older than %s and the same as no checkpoint "
                        "(a run resumed and stopped before its final save?)", run, found[-1][0])
        elif final_step is None or final_step not in {f[2] for f in found}:
            found.append(("final", str(run), final_step))
    return found


def _weight_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_weight_file(p))


def _final_step(run: Path, found: list[tuple[str, str, int | None]]) -> int | None:
    """The step of the model saved at the top of ``run``: the global step of its trainer_state.json, else that of
    the newest checkpoint holding byte-identical weights (the Trainer's last checkpoint and its final save_model
    write the same files, and the top folder gets no trainer_state.json; a run resumed and stopped early leaves an
    older one), else None."""
    try:
        return json.loads((run / "trainer_state.json").read_text()).get("global_step")
    except (OSError, ValueError, AttributeError):
        pass
    names = _weight_files(run)
    for _, path, step in reversed(found):
        if names and names == _weight_files(Path(path)) and all(
                filecmp.cmp(run / n, Path(path) / n, shallow=False) for n in names):
            return step
    return None


def evaluate_run(args: EvalArgs) -> dict:
    """Every complete checkpoint of ``args.run_dir``, each joined with the training log at its step."""
    dataset, train_means, desc = load_eval_data(args)
    history, corr = read_log_history(args.run_dir), read_correlation_log(args.run_dir)
    save_steps = read_save_steps(args.run_dir)
    reward_fns = _reward_fns(args)
    models = run_checkpoints(args)
    if not models:
        raise FileNotFoundError(f"{args.run_dir} holds no complete checkpoint with weights and no saved model")
    basis, out = prediction_basis(args, dataset, _device(args)), args.results_dir()
    n_blind = _blindness_items(args, dataset)
    results, previous, all_preds = [], None, {}
    for i, (name, path, step) in enumerate(tqdm(models, desc=f"checkpoints in {Path(args.run_dir).name}",
                                                unit="ckpt")):
        blind = args.blindness and (args.blindness_models == "all" or i == len(models) - 1)
        key = prediction_key(basis, path)
        preds, altered = None, None
        if args.resume:
            preds, altered = load_predictions(out, name, key, blindness_key(args, key, n_blind) if blind else None)
        if preds is not None and (altered is not None or not blind):
            log.info("%s: reusing its predictions from an earlier evaluation with the same settings", name)
        else:
            model, processor = _load(path, args)
            if preds is None:
                preds = _predict(model, processor, dataset, args, label=name)
            else:
                log.info("%s: its stored predictions, with the blindness check run now", name)
            altered = _altered(model, processor, dataset, args) if blind else None
            del model
            # keyed after loading: a LoRA base fetched from the hub by the load is in the local cache now
            key = prediction_key(basis, path)
            save_predictions(out, name, key, preds, blindness_key(args, key, n_blind) if blind else None, altered)
        res = score(preds, dataset, args, train_means, reward_fns, altered)
        res |= {"name": name, "path": path, "step": step,
                "training": training_at_step(history, corr, step, previous, save_steps)}
        results.append(res)
        all_preds[name] = preds
        previous = step if step is not None else previous
    return {"data": desc, "n_items": len(dataset), "checkpoints": results, "predictions": all_preds,
            "training_log": {"n_entries": len(history), "n_correlation_entries": len(corr), "correlation": corr,
                             "reward": [[e["step"], e["reward"]] for e in history if "reward" in e]}}


def evaluate_single(args: EvalArgs) -> dict:
    dataset, train_means, desc = load_eval_data(args)
    model, processor = _load(args.checkpoint, args)
    res, preds = evaluate_model(model, processor, dataset, args, train_means, _reward_fns(args),
                                label=Path(args.checkpoint).name)
    res |= {"name": Path(args.checkpoint).name or args.checkpoint, "path": args.checkpoint, "step": None,
            "training": {}}
    return {"data": desc, "n_items": len(dataset), "checkpoints": [res], "predictions": {res["name"]: preds}}


def paired_comparison(preds_a: list[Prediction], preds_b: list[Prediction], unparsable: str = "midpoint",
                      n_boot: int = 2000, seed: int = 0,
                      metrics: tuple[str, ...] = ("srcc", "plcc", "krcc", "mae"),
                      train_means: dict[str, float] | None = None) -> dict:
    """Per trait and metric: A minus B on the same items with a paired bootstrap interval and p-value."""
    return {name: {m: M.paired_bootstrap(m, sa, sb, human, n_boot=n_boot, seed=seed) for m in metrics}
            for name, (sa, sb, human) in paired_scores(preds_a, preds_b, unparsable, train_means).items()}


def paired_scores(preds_a: list[Prediction], preds_b: list[Prediction], unparsable: str = "midpoint",
                  train_means: dict[str, float] | None = None) -> dict[str, tuple[list[float], ...]]:
    """Per trait: (scores of A, scores of B, human scores) on the same items, unparsable answers filled by the
    ``unparsable`` policy (``train_means`` for its ``train_mean``). Refuses two lists that do not hold the same
    items in the same order."""
    from cogip.traits import get_trait

    if len(preds_a) != len(preds_b) or any(a.id != b.id for a, b in zip(preds_a, preds_b)):
        raise ValueError("the two prediction lists do not cover the same items in the same order")
    out = {}
    for name in dict.fromkeys(p.trait for p in preds_a):
        trait = get_trait(name)
        pairs = [(a, b) for a, b in zip(preds_a, preds_b) if a.trait == name]
        out[name] = (filled_scores([a for a, _ in pairs], trait, unparsable, train_means),
                     filled_scores([b for _, b in pairs], trait, unparsable, train_means), [a.human for a, _ in pairs])
    return out


def mean_over_traits_comparison(preds_a: list[Prediction], preds_b: list[Prediction], metric: str = "srcc",
                                unparsable: str = "midpoint", n_boot: int = 2000, seed: int = 0,
                                per_range: bool = False, train_means: dict[str, float] | None = None) -> dict:
    """A minus B in the mean over traits of ``metric`` on the same items, with a paired bootstrap interval that
    resamples items within each trait (an undefined value, e.g. SRCC of constant answers, counts as 0).
    ``per_range`` divides every score by its trait's range first, so that errors (MAE) of traits on different
    scales can be averaged."""
    from cogip.traits import get_trait

    groups = paired_scores(preds_a, preds_b, unparsable, train_means)
    if per_range:
        groups = {name: tuple(np.asarray(x, float) / get_trait(name).span for x in g) for name, g in groups.items()}
    return M.paired_bootstrap_mean_over_groups(metric, groups, n_boot=n_boot, seed=seed)


def evaluate_compare(args: EvalArgs) -> dict:
    dataset, train_means, desc = load_eval_data(args)
    reward_fns = _reward_fns(args)
    results, preds = [], {}
    for i, path in enumerate(args.compare):
        model, processor = _load(path, args)
        name = f"{'AB'[i]}: {Path(path).name or path}"
        res, p = evaluate_model(model, processor, dataset, args, train_means, reward_fns, label=name)
        results.append(res | {"name": name, "path": path, "step": None, "training": {}})
        preds[name] = p
        del model
    a, b = (preds[r["name"]] for r in results)
    n_boot = max(args.n_boot, 200)
    mean = {"srcc": mean_over_traits_comparison(a, b, "srcc", args.unparsable, n_boot, args.seed,
                                                train_means=train_means),
            "mae_per_range": mean_over_traits_comparison(a, b, "mae", args.unparsable, n_boot, args.seed,
                                                         per_range=True, train_means=train_means)}
    return {"data": desc, "n_items": len(dataset), "checkpoints": results, "predictions": preds,
            "comparison": {"a": args.compare[0], "b": args.compare[1], "n_boot": n_boot, "mean_over_traits": mean,
                           "traits": paired_comparison(a, b, args.unparsable, n_boot, args.seed,
                                                       train_means=train_means)}}
