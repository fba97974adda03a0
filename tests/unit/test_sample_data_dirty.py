"""The demo's dirty export: generate()'s rows plus labelled dirt, deterministic, generate() itself unchanged."""

import json
from collections import Counter

from moatforge.sample_data import DIRT_KINDS, generate, generate_dirty, junk_expected_step, write_dirty_sample_data


def _content(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("export_row", "exported_at")}


def test_dirty_export_is_generate_plus_labelled_dirt(tmp_path):
    rows, eval_rows, truth = generate_dirty(seed=3, n_train=120, n_eval=20)
    clean, clean_eval = generate(seed=3, n_train=120, n_eval=20)
    assert eval_rows == clean_eval
    assert generate_dirty(seed=3, n_train=120, n_eval=20)[2] == truth
    labels = truth["labels"]
    assert len(rows) == len(labels) and set(labels) <= {"clean", "clean_pii", *DIRT_KINDS}
    counts = Counter(labels)
    assert counts["clean"] + counts["clean_pii"] == 120 and counts["clean_pii"] > 0
    assert all(counts[k] > 0 for k in DIRT_KINDS)
    kept_in_order = [_content(r) for r, label in zip(rows, labels, strict=True) if label == "clean"]
    assert all(row in clean for row in kept_in_order)
    for i, source in truth["copy_of"].items():
        assert labels[source] in ("clean", "clean_pii")
        if labels[i] == "exact_dup":
            assert _content(rows[i]) == _content(rows[source])
        else:
            assert rows[i]["messages"] != rows[source]["messages"] and rows[i]["tools"] == rows[source]["tools"]
    for row, label in zip(rows, labels, strict=True):
        if label == "junk":
            junk_expected_step(row)  # raises for anything that is not a planted junk row
        elif label == "leaked_eval":
            assert _content(row) in clean_eval
        elif label == "clean_pii":
            assert "@" in json.dumps(row) or "4111" in json.dumps(row) or "+44" in json.dumps(row)

    paths = write_dirty_sample_data(tmp_path, seed=3, n_train=120, n_eval=20)
    lines = paths["raw"].read_text().splitlines()
    assert len(lines) == len(rows) and json.loads(paths["truth"].read_text())["labels"] == labels
    assert len(paths["eval"].read_text().splitlines()) == 20
