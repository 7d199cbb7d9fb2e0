"""Shared fixtures: a tiny Qwen2.5-VL checkpoint on disk and small synthetic datasets (all built in code)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture(autouse=True)
def _trait_registry():
    """Traits a test registers (its own, or a --traits_file) are gone after it."""
    from cogip import traits

    saved = dict(traits._REGISTRY)
    yield
    traits._REGISTRY.clear()
    traits._REGISTRY.update(saved)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL saved like a real checkpoint (load it with cogip.models.load_policy)."""
    from cogip.models import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture(scope="session")
def synthetic_splits():
    """A small synthetic benchmark (DatasetDict train/validation/test) in the canonical schema."""
    from cogip.synthetic import make_benchmark

    return make_benchmark(n_train=64, n_validation=16, n_test=32, seed=0)
