"""Averaging a run's trainable weights over its steps (tail averaging, as stochastic weight averaging does), so that
the final model is the mean of the policies the run passed through rather than the last one.

Why: past a well-fitted SFT start, each GRPO update is the reward's small signal plus the sampling noise of a few
answers per prompt; at a constant learning rate the last policy carries the noise of its last steps, the mean of the
policies along the way much less of it (BENCHMARKS.md, "GRPO against its SFT start").

``WeightAverage`` keeps a float32 running mean of every trainable parameter, taken every ``every`` steps after step
``start``; at the end of training it writes the mean into the model, so the run's final save (its output folder) is the
averaged model, while each ``checkpoint-N`` keeps the weights of step N (for the curves and to resume from) and the
running mean so far (``weight_average.safetensors``; one file per process under ZeRO-3, whose processes each hold a
slice of every parameter). Frozen parameters never change, so they are left alone; with LoRA the two factors are
averaged each on its own. The mean costs one float32 copy of the trainable parameters (of each process's slice under
ZeRO-3) on their device.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

AVERAGE_FILE = "weight_average.safetensors"


class WeightAverageError(RuntimeError):
    """Weight averaging that cannot go as asked: a saved mean that does not fit this run (its settings, its
    trainable parameters, its layout of processes), a lost final save under ZeRO-3, a ZeRO-3 that saves no
    gathered weights."""


def _local(param: torch.nn.Parameter) -> torch.Tensor:
    """What this process holds of ``param``: its slice under DeepSpeed ZeRO-3, else the whole tensor."""
    return param.ds_tensor if hasattr(param, "ds_tensor") else param.data


def _sliced(model) -> bool:
    return any(hasattr(p, "ds_tensor") for p in model.parameters())


def average_file(checkpoint: str | Path, model, process_index: int) -> Path:
    """Where ``checkpoint`` keeps this process's running mean (one file, or one per process under ZeRO-3)."""
    name = AVERAGE_FILE if not _sliced(model) else AVERAGE_FILE.replace(".", f"-rank{process_index}.", 1)
    return Path(checkpoint) / name


def check_settings(start: int, every: int, max_steps: int = 0) -> None:
    """Refuse a mean that cannot be taken: a negative start, a step of less than one, or (with ``max_steps`` > 0)
    no step after ``start`` before the run ends."""
    if start < 0 or every < 1:
        raise ValueError(f"average_weights_start must be >= 0 and average_weights_every >= 1 (got {start} and "
                         f"{every})")
    if 0 < max_steps < start + every:
        raise ValueError(f"average_weights: no step after average_weights_start {start} (every {every}) comes "
                         f"before max_steps {max_steps}")


class WeightAverage(TrainerCallback):
    """Running mean of the trainable parameters over steps ``start + every``, ``start + 2 * every``, ...; written
    into the model when training ends (and by :meth:`apply`)."""

    def __init__(self, start: int = 0, every: int = 10):
        check_settings(start, every)
        self.start, self.every = start, every
        self.mean: dict[str, torch.Tensor] = {}
        self.count = 0
        self.resume_from: str | Path | None = None  # the checkpoint a resumed run starts from (train_and_save)
        self.saved_at: int | None = None

    def due(self, step: int) -> bool:
        return step > self.start and (step - self.start) % self.every == 0

    def add(self, model) -> None:
        """Take the model's trainable weights into the mean."""
        self.count += 1
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not param.requires_grad:
                    continue
                value = _local(param).detach().float()
                if name not in self.mean:
                    self.mean[name] = value.clone()
                else:
                    self.mean[name].add_(value - self.mean[name], alpha=1.0 / self.count)

    def apply(self, model) -> bool:
        """Write the mean into the model's trainable parameters; False (nothing changed) when no step was taken."""
        if not self.count:
            return False
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.mean:
                    _local(param).copy_(self.mean[name].to(_local(param).dtype))
        return True

    def save(self, checkpoint: str | Path, model, process_index: int, is_main: bool) -> None:
        from safetensors.torch import save_file

        if not self.count or not (is_main or _sliced(model)):
            return
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.mean.items()}
        Path(checkpoint).mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(average_file(checkpoint, model, process_index)),
                  metadata={"count": str(self.count), "start": str(self.start), "every": str(self.every)})

    def load(self, checkpoint: str | Path, model, process_index: int) -> bool:
        """Take up the running mean ``checkpoint`` saved; False when it has none."""
        from safetensors import safe_open

        path = average_file(checkpoint, model, process_index)
        if not path.is_file():
            if holds_average(checkpoint):
                raise WeightAverageError(
                    f"{checkpoint} holds a running mean of the weights saved by another layout of processes (one "
                    "file per process under ZeRO-3, one file otherwise): launch it as it was launched")
            return False
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            mean = {k: f.get_tensor(k) for k in f.keys()}
        if (int(meta.get("start", -1)), int(meta.get("every", -1))) != (self.start, self.every):
            raise WeightAverageError(
                f"{path}: its running mean was taken from step {meta.get('start')} every {meta.get('every')} steps, "
                f"this run asks for step {self.start} every {self.every}; resume with the run's own settings or "
                "start in a new output_dir")
        params = {n: _local(p) for n, p in model.named_parameters() if p.requires_grad}
        if mean.keys() != params.keys() or any(mean[n].shape != params[n].shape for n in params):
            raise WeightAverageError(f"{path}: its running mean does not match this run's trainable parameters "
                                     "(other parts trained, or another number of ZeRO-3 processes)")
        self.mean = {n: t.to(params[n].device) for n, t in mean.items()}
        self.count = int(meta["count"])
        return True

    @classmethod
    def saved_in(cls, checkpoint: str | Path) -> WeightAverage:
        """An empty mean with the settings of the one ``checkpoint`` holds."""
        from safetensors import safe_open

        with safe_open(str(next(_saved_means(checkpoint))), "pt") as f:
            meta = f.metadata() or {}
        return cls(int(meta["start"]), int(meta["every"]))

    # The Trainer's events.
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step < self.start + self.every:  # a fresh run, or one resumed before its mean took a step
            return
        checkpoint = self.resume_from or Path(args.output_dir) / f"checkpoint-{step}"
        if not self.load(checkpoint, model, args.process_index):
            logger.warning("%s holds no running mean of the weights (saved without average_weights): the mean "
                           "takes the steps after %d only", checkpoint, step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.due(state.global_step):
            self.add(model)
        self._save_if_due(args, state, control, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._save_if_due(args, state, control, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.saved_at != state.global_step:  # a save asked for elsewhere (the best checkpoint's)
            self._save(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.apply(model):
            if args.process_index == 0:
                logger.info("final weights: the mean of %d steps (every %d after step %d)", self.count, self.every,
                            self.start)
        elif args.process_index == 0:
            logger.warning("average_weights: no step after step %d was averaged; the final model is the last "
                           "step's", self.start)

    def _save_if_due(self, args, state, control, model) -> None:
        # The Trainer saves a checkpoint after this event when its flow callback (which runs first) asked for one:
        # the mean goes into the folder now, before the Trainer's trainer_state.json marks the checkpoint complete.
        if control.should_save:
            self._save(args, state, model)

    def _save(self, args, state, model) -> None:
        self.save(Path(args.output_dir) / f"checkpoint-{state.global_step}", model, args.process_index,
                  args.process_index == 0)
        self.saved_at = state.global_step


def averaging(trainer) -> WeightAverage | None:
    """The trainer's weight-averaging callback, if it has one."""
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, WeightAverage)), None)


def _saved_means(checkpoint: str | Path):
    """The running-mean files in ``checkpoint`` (one, or one per process under ZeRO-3)."""
    return Path(checkpoint).glob(AVERAGE_FILE.replace(".", "*.", 1))


def holds_average(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` was saved by a run that averages its weights."""
    return any(_saved_means(checkpoint))


def check_zero3_gathers(enabled: bool) -> None:
    """Refuse weight averaging under a ZeRO-3 that does not gather the 16-bit weights to save: its final save is
    then DeepSpeed's own checkpoint, whose weights ``zero_to_fp32.py`` rebuilds from the optimizer's fp32 masters,
    which hold the last step's weights, not the mean."""
    from transformers.integrations import is_deepspeed_zero3_enabled
    from transformers.integrations.deepspeed import deepspeed_config

    if not enabled or not is_deepspeed_zero3_enabled():
        return
    zero = (deepspeed_config() or {}).get("zero_optimization", {})
    if not (zero.get("stage3_gather_16bit_weights_on_model_save") or zero.get(
            "stage3_gather_fp16_weights_on_model_save")):
        raise WeightAverageError("average_weights under ZeRO-3 needs stage3_gather_16bit_weights_on_model_save: true "
                                 "in the DeepSpeed config (without it the final save holds the last step's weights)")


def finish_saved_run(trainer, checkpoint: str | Path) -> None:
    """For a run launched again after its end (``checkpoint`` reaches its last step, so nothing trains), with or
    without ``average_weights``: when the checkpoint holds a mean of the weights, that mean is the final model, which
    the output folder keeps (saved at the run's end, after the checkpoint) or gets again here (the run was killed in
    its final save; the model loaded is the run's start, whose frozen parameters are the run's own); without one, the
    checkpoint's own weights are the final model (copied by the caller). Under ZeRO-3 the mean is in slices that the
    loaded model, without its DeepSpeed engine, cannot gather: a lost final save is refused there, with what to do."""
    from cogip.checkpoints import TRAINER_STATE, newest_weights

    out, model, checkpoint = Path(trainer.args.output_dir), trainer.model, Path(checkpoint)
    if not holds_average(checkpoint):
        if averaging(trainer) is not None:
            logger.warning("%s holds no running mean of the weights: the final model is its own weights", checkpoint)
        return
    if newest_weights(out) >= (checkpoint / TRAINER_STATE).stat().st_mtime:
        return
    avg = WeightAverage.saved_in(checkpoint)
    if _sliced(model) or not avg.load(checkpoint, model, trainer.args.process_index):
        raise WeightAverageError(
            f"{checkpoint} ends the run, but the mean of its weights, the run's final model, was not saved to {out} "
            "after it (killed during the final save?), and under ZeRO-3 it can only be written while training: "
            f"rename {checkpoint.name} to incomplete-{checkpoint.name} (kept, never resumed from) and launch again, "
            "to train the last steps again from the checkpoint before it")
    avg.apply(model)
    if trainer.accelerator.is_main_process:
        model.save_pretrained(str(out))
