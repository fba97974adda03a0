"""Shared fixtures: a tiny random model with the real SmolLM2 vocabulary, the demo data, one Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from moatforge.models import load_tokenizer, smollm2_tokenizer_dir

    return load_tokenizer(smollm2_tokenizer_dir())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from moatforge.models import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden_size=32, layers=2)


@pytest.fixture(scope="session")
def sample_paths(tmp_path_factory) -> dict[str, Path]:
    from moatforge.sample_data import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("sample"), seed=0, n_train=48, n_eval=12)
