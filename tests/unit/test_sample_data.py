import json
import re

import jsonschema
import pytest

from moatforge.errors import MoatforgeError
from moatforge.sample_data import _TITLES, KINDS, TOOLS, generate, tokenizer_words, write_sample_data

ID_KEYS = {"order_id", "customer_id", "invoice_id", "payment_id", "ticket_id", "sku"}


@pytest.fixture(scope="module")
def splits():
    return generate(seed=0, n_train=400, n_eval=60)


def _tool_calls(row):
    for message in row["messages"]:
        if message["role"] == "assistant":
            yield from message.get("tool_calls") or []


def _id_values(rows):
    values = set()
    for row in rows:
        for call in _tool_calls(row):
            args = json.loads(call["function"]["arguments"])
            values |= {v for k, v in args.items() if k in ID_KEYS}
    return values


def _user_texts(rows):
    return {m["content"] for row in rows for m in row["messages"] if m["role"] == "user"}


def test_sizes_and_determinism(splits):
    train, eval_rows = splits
    assert (len(train), len(eval_rows)) == (400, 60)
    assert generate(seed=0, n_train=400, n_eval=60) == splits
    other = generate(seed=1, n_train=400, n_eval=60)
    assert other[0] != train and other[1] != eval_rows


def test_small_split_still_has_every_kind():
    train, eval_rows = generate(seed=3, n_train=10, n_eval=5)
    assert {r["kind"] for r in train} == set(KINDS) == {r["kind"] for r in eval_rows}


def test_at_least_eight_tools():
    assert len(TOOLS) >= 8
    assert len({t["function"]["name"] for t in TOOLS}) == len(TOOLS)
    for tool in TOOLS:
        jsonschema.Draft202012Validator.check_schema(tool["function"]["parameters"])
    types = {
        spec.get("type") if "enum" not in spec else "enum"
        for t in TOOLS
        for spec in t["function"]["parameters"]["properties"].values()
    }
    assert {"string", "integer", "number", "boolean", "enum"} <= types


def test_entity_values_disjoint(splits):
    train_ids, eval_ids = (_id_values(rows) for rows in splits)
    assert train_ids and eval_ids
    assert not train_ids & eval_ids


def test_user_texts_disjoint(splits):
    train, eval_rows = splits
    assert not _user_texts(train) & _user_texts(eval_rows)


def test_phrasings_disjoint(splits):
    # Masking ids and numbers leaves the template, so a shared phrasing would collide here.
    def skeletons(rows):
        return {re.sub(r"\d+", "N", re.sub(r"\b[A-Z]+-\d+\b", "ID", t)) for t in _user_texts(rows)}

    train, eval_rows = splits
    assert not skeletons(train) & skeletons(eval_rows)


def test_every_kind_in_both_splits(splits):
    for rows in splits:
        assert {r["kind"] for r in rows} == set(KINDS)


def test_rows_are_well_formed(splits):
    for row in splits[0] + splits[1]:
        assert set(row) == {"messages", "tools", "kind"}
        assert 2 <= len(row["tools"]) <= 4
        names = [t["function"]["name"] for t in row["tools"]]
        assert len(set(names)) == len(names)
        last = row["messages"][-1]
        assert last["role"] == "assistant"
        assert next(m["role"] for m in row["messages"] if m["role"] != "system") == "user"
        if row["kind"] == "no_tool":
            assert last["content"] and not last.get("tool_calls")
        else:
            assert last["content"] is None and last["tool_calls"]
        if row["kind"] == "parallel":
            assert len(last["tool_calls"]) == 2
        if row["kind"] == "two_step":
            roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
            assert roles == ["user", "assistant", "tool", "assistant"]
            tool_msg = row["messages"][-2]
            assert tool_msg["tool_call_id"] == row["messages"][-3]["tool_calls"][0]["id"]
            json.loads(tool_msg["content"])


def test_tool_calls_validate_against_row_tools(splits):
    for row in splits[0] + splits[1]:
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
        for call in _tool_calls(row):
            assert call["type"] == "function" and call["id"].startswith("call_")
            name = call["function"]["name"]
            assert name in schemas, (name, list(schemas))
            args = json.loads(call["function"]["arguments"])
            jsonschema.validate(args, {**schemas[name], "additionalProperties": False})


def test_two_step_uses_invoice_id_from_tool_result(splits):
    seen = 0
    for row in splits[0] + splits[1]:
        if row["kind"] != "two_step":
            continue
        result = json.loads(row["messages"][-2]["content"])
        args = json.loads(row["messages"][-1]["tool_calls"][0]["function"]["arguments"])
        if "invoice_id" in args:
            user_text = next(m["content"] for m in row["messages"] if m["role"] == "user")
            assert args["invoice_id"] == result["invoice_id"]
            assert args["payment_id"] in user_text
            seen += 1
    assert seen


def test_id_arguments_appear_in_conversation(splits):
    for row in splits[0] + splits[1]:
        visible = " ".join(m["content"] for m in row["messages"] if m["role"] in ("user", "tool") and m["content"])
        for call in _tool_calls(row):
            args = json.loads(call["function"]["arguments"])
            for key in ID_KEYS & args.keys():
                assert args[key] in visible


def test_write_sample_data_round_trip(tmp_path):
    paths = write_sample_data(tmp_path / "data", seed=7, n_train=20, n_eval=10)
    assert set(paths) == {"train", "eval"}
    train, eval_rows = generate(seed=7, n_train=20, n_eval=10)
    for key, rows in (("train", train), ("eval", eval_rows)):
        lines = paths[key].read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == rows
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["eval.jsonl", "train.jsonl"]


def _titles(rows):
    return [
        json.loads(call["function"]["arguments"])["title"]
        for row in rows
        for call in _tool_calls(row)
        if call["function"]["name"] == "create_ticket"
    ]


def test_varied_titles_are_many_and_never_share_a_phrase_with_eval_titles(splits):
    fixed_train, fixed_eval = splits
    varied_train, varied_eval = generate(seed=0, n_train=400, n_eval=60, varied_titles=True)
    assert len(set(_titles(fixed_train))) <= 12
    assert len(set(_titles(varied_train))) >= 3 * len(set(_titles(fixed_train)))
    # The held-out titles stay the fixed eval pool, and no train title holds the subject (first two words) or
    # the symptom (last two words) of any of them.
    eval_titles = set(_titles(fixed_eval)) | set(_titles(varied_eval))
    assert eval_titles and not eval_titles & set(_titles(fixed_train))
    eval_phrases = {" ".join(words).lower() for t in eval_titles for words in (t.split()[:2], t.split()[-2:])}
    for title in _titles(varied_train):
        assert title not in eval_titles
        assert not [p for p in eval_phrases if p in title.lower()], title


def test_varied_titles_is_off_by_default_so_a_seed_keeps_its_rows(splits):
    assert generate(seed=0, n_train=400, n_eval=60, varied_titles=False) == splits
    assert generate(seed=0, n_train=400, n_eval=60, varied_titles=True)[0] != splits[0]


def test_tokenizer_words_are_whole_lower_case_words_of_the_vocabulary(tokenizer):
    words = tokenizer_words(tokenizer)
    assert len(words) > 10_000
    assert {"invoice", "warehouse", "printer"} <= set(words)
    assert all(re.fullmatch(r"[a-z]{3,12}", w) for w in words)
    # each is one token after a space: the tokenizer encodes " word" back to a single id
    assert all(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1 for w in words[::500])


def test_open_titles_are_copied_words_and_keep_held_out_words_unseen():
    pool = ["returns", "portal", "courier", "gravel", "lantern", "orchid", "saddle", "timber", "velvet", "walnut"]
    train, eval_rows = generate(seed=0, n_train=400, n_eval=60, title_words=pool)
    titles = _titles(train)
    assert len(set(titles)) >= 0.9 * len(titles) > 20
    for title in titles:
        words = title.lower().split()
        assert 2 <= len(words) <= 5 and title[0].isupper()
        # words of held-out titles ("returns", "portal", "courier") are dropped from the pool
        assert set(words) <= set(pool) - {"returns", "portal", "courier"}, title
    # held-out titles still come from the held-out pool only
    assert set(_titles(eval_rows)) <= set(_TITLES["eval"])
    assert set(_titles(eval_rows)) & set(titles) == set()


def test_open_titles_without_a_usable_word_is_a_clear_error():
    with pytest.raises(MoatforgeError, match="title_words"):
        generate(seed=0, n_train=10, n_eval=2, title_words=["Returns", "portal"])
