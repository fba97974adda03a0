"""The eval's generation budget comes from the references, so a long right answer is never cut off and failed."""

from moatforge.data import IGNORE_INDEX, encode_example
from moatforge.evaluate import ANSWER_SLACK_TOKENS, answer_token_budget, evaluate_model
from moatforge.sample_data import generate


def _answer_tokens(tokenizer, row) -> int:
    # A row with one assistant turn learns exactly its reference answer, end-of-turn token included.
    return sum(label != IGNORE_INDEX for label in encode_example(tokenizer, row, 4096).labels)


def test_budget_covers_the_longest_reference_answer(tokenizer):
    _, rows = generate(seed=0, n_train=0, n_eval=40)
    parallel = [r for r in rows if r["kind"] == "parallel"]
    single = [r for r in rows if r["kind"] == "single"]
    longest = max(_answer_tokens(tokenizer, r) for r in parallel)
    assert longest > 64, "two parallel calls outgrow the 64-token cap the demo used to have"
    budget = answer_token_budget(tokenizer, parallel)
    assert longest <= budget <= longest + ANSWER_SLACK_TOKENS + 1  # +1: the newline after the end-of-turn token
    assert answer_token_budget(tokenizer, single) < budget


def test_eval_reports_its_budget_and_the_outputs_it_cut_off(tiny_model_dir, tokenizer):
    _, rows = generate(seed=0, n_train=0, n_eval=6)
    rows = rows[:3]
    capped = evaluate_model(tiny_model_dir, rows, max_new_tokens=4, batch_size=3, with_loss=False)
    # A random model practically never ends its turn within four tokens.
    assert capped["max_new_tokens"] == 4 and capped["truncated_rate"] == 1.0
    auto = evaluate_model(tiny_model_dir, rows, batch_size=3, with_loss=False)
    assert auto["max_new_tokens"] == answer_token_budget(tokenizer, rows)
    assert auto["generated_tokens"] <= 3 * auto["max_new_tokens"]
    # One sample per row, in row order, whose verdicts add up to the totals.
    samples = auto["samples"]
    assert len(samples) == 3 and sum(s["tokens"] for s in samples) == auto["generated_tokens"]
    assert sum(s["correct"] for s in samples) == auto["correct"]
    assert all((s["reason"] is None) == s["correct"] for s in samples)


def test_score_gives_a_verdict_per_row_in_row_order():
    from moatforge.evaluate import score

    _, rows = generate(seed=0, n_train=0, n_eval=6)
    call_rows = [r for r in rows if r["messages"][-1].get("tool_calls")][:2]
    right = {"role": "assistant", "content": None, "tool_calls": call_rows[1]["messages"][-1]["tool_calls"]}
    result = score(call_rows, ["I cannot help with that.", right])
    assert [s["correct"] for s in result["samples"]] == [False, True]
    assert result["samples"][0]["reason"] in result["failure_reasons"]
