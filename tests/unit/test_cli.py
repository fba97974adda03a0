"""Bad input through the real console entry point: one clear line on stderr, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moatforge", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_config_file(tmp_path):
    _assert_one_line_error(run_cli("train", "--config", str(tmp_path / "nope.yaml")), "does not exist")


def test_bad_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {lr: 1e-3\n")
    _assert_one_line_error(run_cli("train", "--config", str(cfg)), "invalid YAML", str(cfg))


def test_unknown_key_and_wrong_type():
    _assert_one_line_error(run_cli("train", "train.zero=2"), "unknown key 'train.zero'", "zero_stage")
    _assert_one_line_error(run_cli("train", "cluster.num_workers=two"), "cluster.num_workers")


def test_missing_data_and_model(tmp_path):
    _assert_one_line_error(run_cli("train"), "data.train is not set")
    _assert_one_line_error(run_cli("train", f"data.train={tmp_path / 'none.jsonl'}"), "does not exist")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    _assert_one_line_error(
        run_cli("train", f"data.train={data}", f"model.name_or_path={tmp_path / 'no-model'}"),
        "does not exist",
        "smollm2-135m-instruct",
    )


def test_model_dir_without_config(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    (tmp_path / "empty-model").mkdir()
    _assert_one_line_error(
        run_cli("train", f"data.train={data}", f"model.name_or_path={tmp_path / 'empty-model'}"), "no config.json"
    )


def test_wrong_data_extension(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a,b\n")
    _assert_one_line_error(run_cli("train", f"data.train={data}"), "neither JSONL")


def test_sample_data_cli(tmp_path):
    proc = run_cli("sample-data", "--out", str(tmp_path), "--train-rows", "20", "--eval-rows", "10")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 20


def test_sample_data_cli_varied_titles_writes_the_varied_rows(tmp_path):
    from moatforge.sample_data import generate

    args = ("sample-data", "--seed", "5", "--train-rows", "30", "--eval-rows", "4")
    assert run_cli(*args, "--out", str(tmp_path / "v"), "--varied-titles").returncode == 0
    assert run_cli(*args, "--out", str(tmp_path / "f")).returncode == 0
    assert generate(seed=5, n_train=30, n_eval=4, varied_titles=True) != generate(seed=5, n_train=30, n_eval=4)
    for flag, folder in ((True, "v"), (False, "f")):
        lines = (tmp_path / folder / "train.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == generate(seed=5, n_train=30, n_eval=4, varied_titles=flag)[0]


def test_sample_data_cli_open_titles_draws_titles_from_the_vocabulary(tmp_path, tokenizer):
    from moatforge.sample_data import generate, tokenizer_words

    args = ("sample-data", "--seed", "5", "--train-rows", "30", "--eval-rows", "4", "--out", str(tmp_path))
    proc = run_cli(*args, "--open-titles")
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    expected = generate(seed=5, n_train=30, n_eval=4, title_words=tokenizer_words(tokenizer))[0]
    assert [json.loads(line) for line in lines] == expected
    assert expected != generate(seed=5, n_train=30, n_eval=4)[0]


def test_augment_rejects_missing_data_and_bad_settings(tmp_path):
    out = str(tmp_path / "out.jsonl")
    missing = run_cli(
        "augment", "--teacher", "smollm2-135m-instruct", "--data", str(tmp_path / "none.jsonl"), "--out", out
    )
    _assert_one_line_error(missing, "data to reword", "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    _assert_one_line_error(
        run_cli("augment", "--teacher", "smollm2-135m-instruct", "--data", str(bad), "--out", out),
        "line 1",
        "assistant turn",
    )
    zero = run_cli("augment", "--teacher", "smollm2-135m-instruct", "--data", str(bad), "--out", out, "--variants", "0")
    _assert_one_line_error(zero, "--variants")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("verb", ["train", "quickstart", "eval", "sample-data", "distill", "curate", "augment"])
def test_help(verb):
    assert run_cli(verb, "--help").returncode == 0


def _reference_text(message: dict) -> str:
    calls = [
        f'<tool_call>{{"name": "{c["function"]["name"]}", "arguments": {c["function"]["arguments"]}}}</tool_call>'
        for c in message.get("tool_calls") or []
    ]
    return "\n".join(calls) or message.get("content") or ""


def test_eval_scores_given_predictions_without_a_model(tmp_path, sample_paths):
    rows = [json.loads(line) for line in sample_paths["eval"].read_text().splitlines()]
    refs = [r["messages"][-1] for r in rows]
    preds = [_reference_text(m) for m in refs]
    preds[0] = "<tool_call>{not json</tool_call>"  # unparseable
    preds[1] = refs[1] if refs[1].get("tool_calls") else preds[1]  # an OpenAI message object is accepted too
    lines = [json.dumps(p) for p in preds]
    (tmp_path / "preds.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval.json"
    proc = run_cli(
        "eval", "--data", str(sample_paths["eval"]), "--predictions", str(tmp_path / "preds.jsonl"), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["n"] == len(rows)
    assert result["correct"] == len(rows) - 1
    assert result["unparseable_rate"] == pytest.approx(1 / len(rows))
    for key in ("tool_call_accuracy", "unparseable_rate", "loss", "latency_s_mean", "tokens_per_s", "n"):
        assert key in result

    (tmp_path / "short.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    _assert_one_line_error(
        run_cli("eval", "--data", str(sample_paths["eval"]), "--predictions", str(tmp_path / "short.jsonl")),
        "outputs for",
        "one per row",
    )
    _assert_one_line_error(run_cli("eval", "--data", str(sample_paths["eval"])), "--model", "--predictions")


def test_distill_without_teacher_is_one_line(tmp_path, sample_paths):
    _assert_one_line_error(
        run_cli("distill", f"data.train={sample_paths['train']}", f"run.storage_path={tmp_path}"), "distill.teacher"
    )
    _assert_one_line_error(run_cli("distill", "distill.student=prune:x"), "prune:N")


def test_serve_stops_on_sigterm_and_on_sigint_even_when_started_in_the_background():
    """A container stop (SIGTERM) or a SIGINT to a backgrounded server must take the Ctrl-C path (delete the app,
    shut Serve down) rather than kill the process where it stands."""
    import os
    import signal

    from moatforge.serve.run import _stop_on_signals

    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a non-interactive shell gives a background job
    try:
        _stop_on_signals()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signum)  # Python runs the handler before the next statement
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])
