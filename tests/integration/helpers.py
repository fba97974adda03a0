"""Small builders shared by the integration tests."""

from __future__ import annotations

import json
from pathlib import Path

from moatforge.config import load_config
from moatforge.sample_data import generate


def write_rows(path: Path, rows: list, extra_lines: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def tiny_config(tmp_path: Path, model_dir: Path, train: Path, name: str, *overrides: str):
    return load_config(
        None,
        [
            f"run.name={name}",
            f"run.storage_path={tmp_path / 'runs'}",
            f"model.name_or_path={model_dir}",
            f"data.train={train}",
            "data.max_seq_len=1024",
            "data.shuffle=false",
            "cluster.num_workers=2",
            "train.micro_batch_size=2",
            "train.grad_accum=2",
            "train.lr=1e-3",
            "train.warmup_ratio=0.25",
            *overrides,
        ],
    )


def sample_rows(n: int, seed: int = 1) -> list[dict]:
    return generate(seed=seed, n_train=n, n_eval=5)[0][:n]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
