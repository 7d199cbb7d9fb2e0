"""Training callbacks of the GRPO stage: held-out correlation while training, and guards against degenerate
set-ups.

``CorrelationCallback`` scores a fixed held-out split with the eval predictor (greedy, or the decoding asked for)
every ``eval_steps`` and logs per-trait SRCC, PLCC, MAE and parse rate next to the training reward (to the Trainer's
logs, so tensorboard/wandb get them, and to ``correlation_log.jsonl`` in the output dir); it remembers the best step
by mean SRCC in ``best_checkpoint.json`` and warns when the reward rises while SRCC falls (reward hacking).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import Trainer, TrainerCallback

from cogip.files import write_json_atomic

logger = logging.getLogger(__name__)

CORRELATION_LOG = "correlation_log.jsonl"
BEST_CHECKPOINT = "best_checkpoint.json"


class CorrelationCallback(TrainerCallback):
    """At the start, every ``eval_steps`` (at the first training log at or after it) and at the end, score
    ``dataset`` (the split named ``split``) with the live policy and log the correlations with the mean training
    reward since the last one."""

    def __init__(self, dataset, processor, eval_steps: int, batch_size: int = 16, max_new_tokens: int = 24,
                 decoding: str = "greedy", reward_rise: float = 0.02, srcc_fall: float = 0.02,
                 split: str = "validation"):
        self.dataset, self.processor, self.decoding, self.split = dataset, processor, decoding, split
        self.eval_steps, self.batch_size, self.max_new_tokens = eval_steps, batch_size, max_new_tokens
        self.reward_rise, self.srcc_fall = reward_rise, srcc_fall
        self.trainer = None  # set by train_grpo after the trainer exists (needed to log and to gather ZeRO-3 weights)
        self.rewards_since_eval: list[float] = []
        self.last: tuple[float, float] | None = None  # (mean reward, mean SRCC) at the previous evaluation
        self.best: dict | None = None
        self.last_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        logging_steps = int(args.logging_steps) if args.logging_steps and args.logging_steps >= 1 else 0
        if self.eval_steps and logging_steps and self.eval_steps % logging_steps:
            logger.warning("held-out scoring runs at training logs: every %d steps it waits for the next log of "
                           "every %d; make eval_steps a multiple of logging_steps to score at eval_steps",
                           self.eval_steps, logging_steps)
        if state.global_step == 0:  # the starting point of the curves (a resumed run already has it)
            self.evaluate(args, state)
        elif self.trainer.accelerator.is_main_process:
            self._take_up(args, state.global_step)
            self._protect_best(args, state)
        self.last_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Evaluating here, right after the step's training log, puts the reward of the same steps beside the
        # correlation, and runs before the Trainer saves this step's checkpoint.
        if not logs or "reward" not in logs:
            return
        self.rewards_since_eval.append(float(logs["reward"]))
        if self.eval_steps and state.global_step - self.last_step >= self.eval_steps:
            self.evaluate(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        if state.global_step != self.last_step:
            self.evaluate(args, state)

    def evaluate(self, args, state) -> dict:
        from trl.models import unwrap_model_for_generation

        from eval.predict import predict
        from eval.scoring import evaluate, flat_metrics

        trainer = self.trainer
        self.last_step = state.global_step
        # Every process scores the same items: under ZeRO-3 all ranks must take part in each forward pass.
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            preds = predict(model, self.processor, self.dataset, decoding=self.decoding, batch_size=self.batch_size,
                            max_new_tokens=self.max_new_tokens, progress=False)
        result = evaluate(preds, self.dataset, n_boot=0)
        metrics = flat_metrics(result)
        reward = sum(self.rewards_since_eval) / len(self.rewards_since_eval) if self.rewards_since_eval else None
        self.rewards_since_eval = []
        # transformers' own log: trl's would add the step's training metrics again (this runs inside its log, before
        # it clears them), logging every reward twice at each held-out step.
        Trainer.log(trainer, {f"heldout/{k}": v for k, v in metrics.items()})
        if trainer.accelerator.is_main_process:
            self._record(args, state, metrics, reward)
        return metrics

    def _record(self, args, state, metrics: dict, reward: float | None) -> None:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        row = {"step": state.global_step, "split": self.split, "train_reward": reward, **metrics}
        with open(out / CORRELATION_LOG, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._note(args, state.global_step, metrics.get("mean_srcc"), reward)
        self._protect_best(args, state)

    def _protect_best(self, args, state) -> None:
        """The Trainer's save_total_limit rotation keeps ``state.best_model_checkpoint``: the checkpoint that
        best_checkpoint.json names stays. Not with save_total_limit 1, where the Trainer would delete the last
        checkpoint at the end instead (a finished run launched again would resume from the best one)."""
        if self.best and self.best["checkpoint"] and args.save_total_limit != 1:
            state.best_model_checkpoint = self.best["checkpoint"]

    def _take_up(self, args, step: int) -> None:
        """A run resumed at ``step``: the best score and the last one so far are those its log holds up to there
        (the scores logged past it came from training the resume threw away)."""
        from eval.training_log import read_correlation_log

        for row in read_correlation_log(args.output_dir, self.split):
            if row["step"] <= step:
                self._note(args, row["step"], row.get("mean_srcc"), row.get("train_reward"), warn=False)

    def _note(self, args, step: int, srcc: float | None, reward: float | None, warn: bool = True) -> None:
        """Keep ``best_checkpoint.json`` and the reward-hacking guard up to date with the scores of ``step``."""
        if srcc is not None and (self.best is None or srcc > self.best["mean_srcc"]):
            ckpt = Path(args.output_dir) / f"checkpoint-{step}"
            saved = step > 0 and step % max(args.save_steps or 1, 1) == 0  # no checkpoint-0
            self.best = {"step": step, "mean_srcc": srcc, "checkpoint": str(ckpt) if saved else None}
            write_json_atomic(Path(args.output_dir) / BEST_CHECKPOINT, self.best)
        if warn and reward is not None and srcc is not None and self.last is not None:
            prev_reward, prev_srcc = self.last
            if reward - prev_reward > self.reward_rise and prev_srcc - srcc > self.srcc_fall:
                logger.warning(
                    "step %d: training reward rose %.3f -> %.3f while held-out mean SRCC fell %.3f -> %.3f; the "
                    "policy may be exploiting the reward rather than agreeing more with people", step,
                    prev_reward, reward, prev_srcc, srcc)
        if reward is not None and srcc is not None:
            self.last = (reward, srcc)


def degenerate_group_warning(num_generations: int, scale_rewards: str | bool,
                             reward_names: tuple[str, ...] | list[str] = ()) -> str | None:
    """Why a GRPO set-up turns a continuous reward into a coin flip, or None.

    With group scaling, each group's advantages are (r - mean) / std; for two generations that is +-0.71 whatever the
    two rewards were, so how much closer one answer was to the human score is thrown away. ``distance_crps`` needs a
    third answer per group: with two, its spread term cancels in the group baseline.
    """
    msgs = []
    group_scaled = scale_rewards in (True, "group", "true", "True")
    if num_generations == 2 and group_scaled:
        msgs.append("num_generations=2 with scale_rewards='group' makes every advantage +-0.71: a continuous reward "
                    "collapses to which of two answers was better. Use num_generations >= 4 (8 is typical) or "
                    "scale_rewards='batch'.")
    elif num_generations < 4:
        msgs.append(f"num_generations={num_generations} gives very noisy group baselines; 8 is typical.")
    if num_generations < 3 and "distance_crps" in reward_names:
        msgs.append("distance_crps needs num_generations >= 3: with 2 its spread term cancels in the group baseline, "
                    "and it pays for false certainty as distance_linear does.")
    return " ".join(msgs) or None


class GuardCallback(TrainerCallback):
    """Warns at the start about degenerate group set-ups and, while training, when most groups have rewards with zero
    spread (``frac_reward_zero_std``), so GRPO gets no signal from them."""

    def __init__(self, warn_frac: float = 0.5, warn_logs: int = 5, reward_names: tuple[str, ...] | list[str] = ()):
        self.warn_frac, self.warn_logs, self.reward_names = warn_frac, warn_logs, tuple(reward_names)
        self.high_in_a_row = 0
        self.warned = False

    def on_train_begin(self, args, state, control, **kwargs):
        msg = degenerate_group_warning(args.num_generations, args.scale_rewards, self.reward_names)
        if msg:
            logger.warning(msg)

    def on_log(self, args, state, control, logs=None, **kwargs):
        frac = (logs or {}).get("frac_reward_zero_std")
        if frac is None:
            return
        self.high_in_a_row = self.high_in_a_row + 1 if frac > self.warn_frac else 0
        if self.high_in_a_row >= self.warn_logs and not self.warned:
            self.warned = True
            logger.warning(
                "frac_reward_zero_std has stayed above %.2f for %d logs (now %.2f): most groups give GRPO no "
                "signal. Raise temperature or num_generations, or use a smoother reward (distance_gaussian with a "
                "wider sigma_frac).", self.warn_frac, self.high_in_a_row, frac)
