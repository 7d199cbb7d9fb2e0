"""Step time of our GRPO set-up (every reward, our trainer and callbacks) against plain trl with one trivial reward.

    OMP_NUM_THREADS=1 python bench/grpo_overhead.py [--steps 30] [--warmup 5] [--threads 1]

Both trainers train the same tiny Qwen2.5-VL (built once, loaded twice) on the same synthetic items with the same
GRPO settings (configs/tiny/grpo.yaml). "ours" is what rl/train_grpo.py builds: ``CogGRPOTrainer``, the seven
rewards from ``rewards.build_reward_funcs`` and ``GuardCallback`` (held-out correlation off). "plain" is trl's
``GRPOTrainer`` with ``lambda completions, **kw: [0.0] * len(completions)``.

The two run in two threads that take strict turns, one optimizer step each, so both see the same machine load; the
first ``--warmup`` steps of each are dropped and medians compared. Every completion is exactly
``max_completion_length`` tokens (``min_new_tokens``), so both sides generate the same amount. A random tiny model
writes unparsable text, which is cheap to parse; the line "rewards alone" times the seven rewards on well-formed
answers too. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "grpo.yaml"
ALL_REWARDS = ["distance_linear", "distance_gaussian", "distance_laplace", "distance_upstream", "format",
               "label_consistency", "rank_global"]


class Turns:
    """Two threads taking strict turns: only the one whose turn it is runs, so they never compete for the CPU."""

    def __init__(self, names: list[str]):
        self.names, self.turn, self.done = names, names[0], set()
        self.cond = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)

    def pass_on(self, name: str, finished: bool = False) -> None:
        with self.cond:
            if finished:
                self.done.add(name)
            waiting = [n for n in self.names if n != name and n not in self.done]
            self.turn = waiting[0] if waiting else name
            self.cond.notify_all()


class StepTimer(TrainerCallback):
    """Times each optimizer step (from getting the turn to the step's end, so the previous step's logging and the
    next batch count too), then hands the turn to the other trainer."""

    def __init__(self, name: str, turns: Turns):
        self.name, self.turns, self.times, self.start = name, turns, [], 0.0

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)
        self.turns.pass_on(self.name)
        self.turns.wait(self.name)
        self.start = time.perf_counter()


def zero_reward(completions, **kwargs) -> list[float]:
    return [0.0] * len(completions)


def build_trainers(model_dir: str, out: Path, steps: int, turns: Turns):
    from trl import GRPOConfig, GRPOTrainer

    from cogip.data import to_grpo_format
    from cogip.data_sources import load_canonical_splits
    from cogip.models import load_policy
    from rewards import build_reward_funcs
    from rl.callbacks import GuardCallback
    from rl.train_grpo import make_parser
    from rl.trainer import CogGRPOTrainer
    from sft_warmstart.trainable import prepare_model

    overrides = {"max_steps": steps, "save_strategy": "no", "report_to": "none", "logging_steps": 1}
    argv = ["--config", str(CONFIG), "--output_dir", str(out / "ours"), "--model_name_or_path", model_dir,
            "--synthetic_eval_size", "0", "--reward_funcs", *ALL_REWARDS, "--reward_weights", *["1"] * 7,
            # plain trl trains every weight; so does ours here (the tiny config freezes the vision tower)
            "--freeze_vision_tower", "false", "--freeze_merger", "false"]
    for k, v in overrides.items():
        argv += [f"--{k}", str(v)]
    script_args, ours_args, model_args = make_parser().parse_args_and_config(argv)
    # Fixed-length completions on both sides: a random model's EOS would otherwise end them at random points.
    ours_args.generation_kwargs = {"min_new_tokens": ours_args.max_completion_length}

    # plain gets every GRPOConfig field the YAML or the overrides set, with the same values.
    set_in_config = set(yaml.safe_load(CONFIG.read_text())) | set(overrides) | {"generation_kwargs"}
    grpo_fields = {f.name for f in fields(GRPOConfig) if f.init}
    shared = set_in_config & grpo_fields - {"reward_weights", "output_dir"}
    plain_args = GRPOConfig(output_dir=str(out / "plain"), **{k: getattr(ours_args, k) for k in shared})
    differ = {f for f in grpo_fields - {"output_dir", "logging_dir", "reward_weights"}
              if getattr(ours_args, f) != getattr(plain_args, f)}
    assert not differ, f"the two configs differ in {sorted(differ)}"

    train, _ = load_canonical_splits(script_args, with_eval=False)
    data = to_grpo_format(train)

    # ours: what rl/train_grpo.py main() builds, minus the held-out correlation
    model, processor = load_policy(model_dir, dtype=model_args.dtype)
    model = prepare_model(model, model_args, ours_args)
    ours_timer = StepTimer("ours", turns)
    ours = CogGRPOTrainer(
        model=model, args=ours_args, train_dataset=data, processing_class=processor,
        reward_funcs=build_reward_funcs(script_args.reward_funcs, **script_args.reward_options()),
        callbacks=[GuardCallback(ours_args.zero_std_warn_frac, ours_args.zero_std_warn_logs), ours_timer])

    model, processor = load_policy(model_dir, dtype=model_args.dtype)
    plain_timer = StepTimer("plain", turns)
    plain = GRPOTrainer(model=model, args=plain_args, train_dataset=data, processing_class=processor,
                        reward_funcs=zero_reward, callbacks=[plain_timer])
    return {"ours": (ours, ours_timer), "plain": (plain, plain_timer)}, ours_args, data


def time_rewards_alone(data, batch: int, num_generations: int, repeats: int = 50) -> float:
    """Seconds for the seven rewards on one generation batch (``batch`` completions) of well-formed answers, as a
    fitted policy writes them."""
    from cogip.answer import render_answer
    from rewards import build_reward_funcs

    rows = data.select(range(batch // num_generations)).remove_columns(["image", "prompt"])
    cols = {k: [v for v in rows[k] for _ in range(num_generations)] for k in rows.column_names}
    answers = [render_answer(t, y) for y, t in zip(cols["score"], cols["trait"])]
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    funcs = build_reward_funcs(ALL_REWARDS)
    logged = {}
    t0 = time.perf_counter()
    for _ in range(repeats):
        for fn in funcs:
            fn(completions, **cols, log_metric=logged.__setitem__)
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per trainer, warm-up included")
    p.add_argument("--warmup", type=int, default=5, help="first steps of each trainer left out of the medians")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from cogip.models import build_tiny_qwen2_5_vl

    turns = Turns(["ours", "plain"])
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_tiny_qwen2_5_vl(Path(tmp) / "tiny"))
        trainers, ours_args, data = build_trainers(model_dir, Path(tmp), args.steps, turns)

        def run(name: str) -> None:
            trainer, timer = trainers[name]
            torch.set_num_threads(args.threads)  # per thread: OpenMP settings do not carry over
            turns.wait(name)
            timer.start = time.perf_counter()
            try:
                trainer.train()
            except BaseException as e:  # noqa: BLE001 - reported below; the other thread must not wait forever
                errors.append((name, e))
            finally:
                turns.pass_on(name, finished=True)

        threads = [threading.Thread(target=run, args=(n,)) for n in trainers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"{errors[0][0]} failed") from errors[0][1]
        reward_s = time_rewards_alone(data, ours_args.generation_batch_size, ours_args.num_generations)

    times = {n: timer.times[args.warmup:] for n, (_, timer) in trainers.items()}
    med = {n: statistics.median(t) for n, t in times.items()}
    paired = statistics.median(o / q for o, q in zip(times["ours"], times["plain"]))
    print(f"\n{'step':>5} {'ours s':>8} {'plain s':>8} {'ratio':>6}")
    for i, (o, q) in enumerate(zip(times["ours"], times["plain"]), start=args.warmup + 1):
        print(f"{i:>5} {o:8.3f} {q:8.3f} {o / q:6.3f}")
    print(f"{'median':>5} {med['ours']:8.3f} {med['plain']:8.3f} {med['ours'] / med['plain']:6.3f}")
    print(f"rewards alone, well-formed answers: {1000 * reward_s:.1f} ms per step "
          f"({reward_s / med['ours']:.1%} of our step)")
    result = {
        "bench": "grpo_overhead", "ratio": round(med["ours"] / med["plain"], 3), "paired_ratio": round(paired, 3),
        "ours_step_s": round(med["ours"], 3), "plain_step_s": round(med["plain"], 3),
        "rewards_alone_wellformed_ms": round(1000 * reward_s, 2),
        "steps_timed": len(times["ours"]), "warmup": args.warmup, "rewards": ALL_REWARDS,
        "num_generations": ours_args.num_generations, "max_completion_length": ours_args.max_completion_length,
        "per_device_train_batch_size": ours_args.per_device_train_batch_size, "seed": ours_args.seed,
        "torch_threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
