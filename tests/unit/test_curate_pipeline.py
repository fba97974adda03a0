"""The pipeline's pure parts: step specs and the row-step runner (no Ray)."""

import json

import pandas as pd
import pytest

from moatforge.curate.pipeline import parse_steps, run_row_steps
from moatforge.curate.steps import STEPS
from moatforge.errors import MoatforgeError


def test_parse_steps_defaults_and_params():
    steps = parse_steps([{"name": "quality", "c4": False}, {"name": "near_dedup", "bands": 20, "rows": 5}])
    assert steps[0][1].c4 is False and steps[1][1].bands == 20


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "dedupe"}, "unknown step 'dedupe'; valid steps: chat_validate, decontaminate, exact_dedup"),
        ({"name": "near_dedup", "band": 3}, "near_dedup"),
        ({"bands": 3}, "must be a mapping with a 'name'"),
        ({"name": "quality", "c4": "maybe"}, "quality"),
    ],
)
def test_parse_steps_errors(spec, message):
    with pytest.raises(MoatforgeError, match=message):
        parse_steps([spec])


def test_row_steps_conserve_and_keep_earlier_rejects():
    batch = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "source": ["f:1", "f:2", "f:3"],
            "text": ["  Hello\u00a0world  ", "   ", None],
            "messages": [None, None, None],
            "tools": [None, None, None],
            "meta": [None, None, None],
            "step": [None, None, "read"],
            "reason": [None, None, "invalid_json"],
        }
    )
    table = run_row_steps(batch, [("normalize", STEPS["normalize"][0], STEPS["normalize"][1]())])
    out = table.to_pandas().set_index("id")
    assert len(out) == 3
    assert out.loc["a", "text"] == "Hello world" and pd.isna(out.loc["a", "reason"])
    assert out.loc["b", "reason"] == "empty_after_normalize" and out.loc["b", "step"] == "normalize"
    assert out.loc["c", "reason"] == "invalid_json"
    assert "normalize" in json.loads(out["_timings"].dropna().iloc[0])
