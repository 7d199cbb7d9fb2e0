"""The running mean of cogip.weight_average on a small torch module (the GRPO tests run it inside real trainings)."""

import pytest
import torch

from cogip.weight_average import AVERAGE_FILE, WeightAverage, WeightAverageError


def _module(value: float) -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)
    m[1].bias.requires_grad_(False)  # frozen: never averaged, never written
    return m


def test_the_mean_of_the_steps_taken_and_only_of_the_trainable_parameters(tmp_path):
    avg = WeightAverage(start=2, every=3)
    assert [s for s in range(12) if avg.due(s)] == [5, 8, 11]
    assert not avg.apply(_module(0.0))  # no step taken: nothing written
    for value in (1.0, 2.0, 6.0):
        avg.add(_module(value))
    target = _module(0.0)
    with torch.no_grad():
        target[1].bias.fill_(-1.0)
    assert avg.apply(target)
    assert all(torch.allclose(p, torch.full_like(p, 3.0)) for n, p in target.named_parameters() if n != "1.bias")
    assert torch.equal(target[1].bias, torch.tensor([-1.0]))

    avg.save(tmp_path, target, process_index=0, is_main=True)
    assert (tmp_path / AVERAGE_FILE).is_file()
    again = WeightAverage(start=2, every=3)
    assert again.load(tmp_path, target, process_index=0) and again.count == 3
    assert all(torch.equal(again.mean[k], v) for k, v in avg.mean.items())
    assert not WeightAverage(2, 3).load(tmp_path / "none", target, 0)


def test_a_saved_mean_that_does_not_fit_is_refused(tmp_path):
    avg = WeightAverage(start=0, every=1)
    avg.add(_module(1.0))
    avg.save(tmp_path, _module(1.0), process_index=0, is_main=True)
    with pytest.raises(WeightAverageError, match="taken from step 0 every 1 steps, this run asks for step 0 every 2"):
        WeightAverage(start=0, every=2).load(tmp_path, _module(1.0), 0)
    wider = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    with pytest.raises(WeightAverageError, match="does not match this run's trainable parameters"):
        WeightAverage(start=0, every=1).load(tmp_path, wider, 0)
    with pytest.raises(ValueError, match="every >= 1"):
        WeightAverage(start=0, every=0)


def test_zero3_that_saves_no_gathered_weights_is_refused():
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    from cogip.weight_average import check_zero3_gathers

    check_zero3_gathers(True)  # no DeepSpeed: nothing to refuse
    gathers = {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}
    for zero, refused in (({"stage": 3}, True), (gathers, False), ({"stage": 2}, False)):
        config = HfDeepSpeedConfig({"zero_optimization": zero})  # what a run given --deepspeed sets up
        try:
            check_zero3_gathers(False)
            if refused:
                with pytest.raises(WeightAverageError, match="stage3_gather_16bit_weights_on_model_save: true"):
                    check_zero3_gathers(True)
            else:
                check_zero3_gathers(True)
        finally:
            del config
            unset_hf_deepspeed_config()
