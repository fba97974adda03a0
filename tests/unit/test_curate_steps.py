import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from moatforge.curate.steps import (
    STEPS,
    ChatValidateArgs,
    DecontaminateArgs,
    LanguageArgs,
    NormalizeArgs,
    build_ngram_index,
    chat_check,
    chat_validate,
    decontaminate,
    guess_language,
    language,
    normalize,
    row_text,
)
from moatforge.curate.text_utils import normalize_text
from moatforge.sample_data import TOOLS as SAMPLE_TOOLS
from moatforge.sample_data import generate

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def _call(arguments, name="get_weather", call_id="c1"):
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _conversation(arguments=None, name="get_weather"):
    arguments = {"city": "Paris", "unit": "c"} if arguments is None else arguments
    return [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [_call(arguments, name)]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "It is 21 degrees in Paris."},
    ]


# ---------------------------------------------------------------- row_text and normalize


def test_row_text_for_text_chat_and_empty_rows():
    assert row_text({"text": "plain"}) == "plain"
    chat = row_text({"text": None, "messages": _conversation()})
    assert chat.split("\n") == [
        "You are a weather bot.",
        "Weather in Paris?",
        '{"city": "Paris", "unit": "c"}',
        '{"temp": 21}',
        "It is 21 degrees in Paris.",
    ]
    assert 'Paris", "unit' not in row_text({"messages": _conversation()}, include_tool_arguments=False)
    assert row_text({"messages": json.dumps(_conversation())}) == chat
    assert row_text({"text": float("nan"), "messages": None}) == ""


def test_normalize_text():
    raw = "\ufeffCafe\u0301  menu\t\tprices\u00a0are  up.\r\n  indented   line \x07\n\x00end  "
    assert normalize_text(raw) == "Café menu prices are up.\n  indented line\nend"
    assert normalize_text(raw, keep_indentation=False) == "Café menu prices are up.\n indented line\nend"
    assert normalize_text("a\tb") == "a\tb"


def test_normalize_step_rewrites_text_and_contents_and_rejects_empties():
    messages = [{"role": "user", "content": "  hi   there  "}, {"role": "assistant", "content": "Hello\u00a0!"}]
    blank_chat = [{"role": "user", "content": " \x00 "}, {"role": "assistant", "content": "\u200b"}]
    batch = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f"],
            "text": ["  Some   text ", " \t\x01 ", None, None, None, "already clean"],
            "messages": [None, None, messages, blank_chat, None, None],
            "meta": [1, 2, 3, 4, 5, 6],
        }
    )
    kept, rejected = normalize(batch, NormalizeArgs())
    assert list(kept["id"]) == ["a", "c", "f"]
    assert list(kept["meta"]) == [1, 3, 6]
    assert kept.loc[0, "text"] == "Some text"
    assert kept.loc[1, "messages"] == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "Hello !"},
    ]
    assert list(rejected["id"]) == ["b", "d", "e"]
    assert list(rejected["reason"]) == ["empty_after_normalize", "empty_after_normalize", "no_content"]
    assert rejected.loc[0, "text"] == " \t\x01 "  # the audit trail shows the original value


def test_normalize_leaves_tool_arguments_alone_and_keeps_json_string_messages_as_strings():
    arguments = '{"city":  "Paris"}'
    messages = [
        {"role": "user", "content": "x  y"},
        {"role": "assistant", "content": None, "tool_calls": [_call(arguments)]},
    ]
    batch = pd.DataFrame({"id": ["a"], "messages": [json.dumps(messages)]})
    kept, _ = normalize(batch, NormalizeArgs())
    out = json.loads(kept.loc[0, "messages"])
    assert out[0]["content"] == "x y"
    assert out[1]["tool_calls"][0]["function"]["arguments"] == arguments


def test_normalize_rejects_unparseable_messages():
    batch = pd.DataFrame({"id": ["a"], "messages": ["[not json"]})
    kept, rejected = normalize(batch, NormalizeArgs())
    assert kept.empty and list(rejected["reason"]) == ["bad_messages"]


# ---------------------------------------------------------------- decontaminate

EVAL = [
    "Which planet in our solar system has the largest number of known moons orbiting it today?",
    "Who wrote the novel Moby Dick?",
    "yes",
]


def test_build_ngram_index():
    index = build_ngram_index(EVAL, n=13)
    assert "who wrote the novel moby dick" in index  # short text kept whole
    assert "which planet in our solar system has the largest number of known moons" in index
    assert "yes" not in index  # too short to mean anything
    assert len(index) == 1 + (16 - 13 + 1)


def test_decontaminate_hits_and_misses():
    args = DecontaminateArgs(ngrams=build_ngram_index(EVAL))
    batch = pd.DataFrame(
        {
            "id": ["long_hit", "short_hit", "chat_hit", "miss", "near_miss"],
            "text": [
                "Quiz: which planet in our solar system has the LARGEST number of known moons orbiting it?",
                "Trivia night question: who wrote the novel 'Moby Dick'? Answer below.",
                None,
                "The planet Saturn has many moons, and yes, Herman Melville wrote about whales.",
                "Who wrote the novel Dracula?",
            ],
            "messages": [
                None,
                None,
                [
                    {"role": "user", "content": "Who wrote the novel Moby-Dick?"},
                    {"role": "assistant", "content": "Melville."},
                ],
                None,
                None,
            ],
        }
    )
    kept, rejected = decontaminate(batch, args)
    assert list(kept["id"]) == ["miss", "near_miss"]
    assert list(rejected["id"]) == ["long_hit", "short_hit", "chat_hit"]
    assert set(rejected["reason"]) == {"eval_overlap"}


def test_decontaminate_args_keep_the_index_out_of_serialised_config():
    args = DecontaminateArgs(n=13, ngrams={"a b c"})
    assert args.model_dump() == {"n": 13}
    assert "a b c" not in repr(args)
    assert DecontaminateArgs().gram_lengths() == ()
    assert decontaminate(pd.DataFrame({"id": ["a"], "text": ["anything"]}), DecontaminateArgs())[0].shape[0] == 1


# ---------------------------------------------------------------- chat_validate


def test_valid_conversations_pass():
    args = ChatValidateArgs()
    assert chat_check(_conversation(), [WEATHER], args) is None
    parallel = [
        {"role": "user", "content": "Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [_call({"city": "Paris"}), _call({"city": "Rome"}, call_id="c2")],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "19"},
        {"role": "tool", "tool_call_id": "c1", "content": "21"},
        {"role": "assistant", "content": "21 and 19."},
    ]
    assert chat_check(parallel, [WEATHER], args) is None
    ends_with_call = _conversation()[:3]
    assert chat_check(ends_with_call, [WEATHER], args) is None
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert chat_check(plain, None, args) is None
    assert chat_check(json.dumps(_conversation()), json.dumps([WEATHER]), args) is None


def _swap(conv, i, **changes):
    conv = [dict(m) for m in conv]
    conv[i] = {**conv[i], **changes}
    return conv


@pytest.mark.parametrize(
    ("messages", "tools", "reason"),
    [
        ("not json", [WEATHER], "bad_messages"),
        ([], [WEATHER], "bad_messages"),
        (_conversation(), "not json", "bad_tools"),
        (_swap(_conversation(), 1, role="human"), [WEATHER], "bad_role"),
        ([{"role": "assistant", "content": "Hi"}], None, "bad_role_order"),
        (_conversation()[1:2] + _conversation()[:1] + _conversation()[2:], [WEATHER], "bad_role_order"),
        (_conversation()[:2] + _conversation()[3:], [WEATHER], "bad_role_order"),  # tool without a call
        ([*_conversation(), {"role": "assistant", "content": "Anything else?"}], [WEATHER], "bad_role_order"),
        (_conversation()[:2] + _conversation()[:2][1:] + _conversation()[2:], [WEATHER], "bad_role_order"),
        (_conversation()[:3] + [{"role": "user", "content": "hello?"}], [WEATHER], "bad_role_order"),
        (
            [*_conversation()[:4], _conversation()[3], _conversation()[4]],
            [WEATHER],
            "bad_role_order",
        ),  # 2 results, 1 call
        (_swap(_conversation(), 3, tool_call_id="c9"), [WEATHER], "bad_tool_call_id"),
        (_conversation()[:4], [WEATHER], "no_final_assistant"),
        (_swap(_conversation(), 4, content="  "), [WEATHER], "empty_message"),
        (_swap(_conversation(), 1, content=""), [WEATHER], "empty_message"),
        (_conversation('{"city": "Paris",}'), [WEATHER], "bad_tool_arguments_json"),
        (_conversation('["Paris"]'), [WEATHER], "bad_tool_arguments_json"),
        (_conversation(name="get_forecast"), [WEATHER], "unknown_tool"),
        (_conversation(), None, "unknown_tool"),
        (_conversation({"unit": "c"}), [WEATHER], "tool_args_schema"),  # missing required
        (_conversation({"city": 75001}), [WEATHER], "tool_args_schema"),  # wrong type
        (_conversation({"city": "Paris", "unit": "kelvin"}), [WEATHER], "tool_args_schema"),  # not in enum
        (_conversation({"city": "Paris", "days": 3}), [WEATHER], "tool_args_schema"),  # unknown argument
    ],
)
def test_invalid_conversations_are_rejected_with_reason(messages, tools, reason):
    assert chat_check(messages, tools, ChatValidateArgs()) == reason


def test_chat_validate_options():
    extra = _conversation({"city": "Paris", "days": 3})
    assert chat_check(extra, [WEATHER], ChatValidateArgs(allow_unknown_args=True)) is None
    closed = json.loads(json.dumps(WEATHER))
    closed["function"]["parameters"]["additionalProperties"] = True
    assert chat_check(extra, [closed], ChatValidateArgs()) is None  # the schema's own word wins
    assert chat_check(_conversation(), None, ChatValidateArgs(require_declared_tools=False)) is None
    broken = json.loads(json.dumps(WEATHER))
    broken["function"]["parameters"]["properties"]["city"]["type"] = "text"
    assert chat_check(_conversation(), [broken], ChatValidateArgs()) == "bad_tool_schema"


def test_chat_validate_step_passes_text_rows_and_accepts_arrow_shaped_batches():
    rows = [
        {"id": "ok", "text": None, "messages": _conversation(), "tools": [WEATHER]},
        {"id": "bad", "text": None, "messages": _conversation({"city": 1}), "tools": [WEATHER]},
        {
            "id": "other_tool",
            "text": None,
            "messages": [
                {"role": "user", "content": "Stock of SKU-1 in berlin?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [_call({"sku": "SKU-1", "warehouse": "berlin"}, "check_inventory")],
                },
            ],
            "tools": SAMPLE_TOOLS,
        },
        {"id": "doc", "text": "A plain document.", "messages": None, "tools": None},
    ]
    # Through Arrow, as Ray Data hands it over: numpy arrays, and structs padded with every key seen in the column.
    batch = pa.Table.from_pylist(rows).to_pandas()
    assert isinstance(batch.loc[0, "messages"], np.ndarray)
    assert batch.loc[0, "tools"][0]["function"]["parameters"]["properties"]["sku"] is None
    kept, rejected = chat_validate(batch, ChatValidateArgs())
    assert list(kept["id"]) == ["ok", "other_tool", "doc"]
    assert list(rejected["reason"]) == ["tool_args_schema"]


def test_sample_data_is_valid_chat():
    train, _ = generate(seed=0, n_train=60, n_eval=10)
    batch = pd.DataFrame([{"id": str(i), **row} for i, row in enumerate(train)])
    kept, rejected = chat_validate(batch, ChatValidateArgs())
    assert rejected.empty and len(kept) == 60


# ---------------------------------------------------------------- language

SAMPLES = {
    "en": "The team will review the results of the test and decide whether we should ship the new version this week.",
    "de": "Das Team wird die Ergebnisse des Tests prüfen und dann entscheiden, ob wir die neue Version in dieser "
    "Woche ausliefern sollen oder nicht.",
    "fr": "L'équipe va examiner les résultats du test et décider si nous devons livrer la nouvelle version cette "
    "semaine ou attendre encore un peu.",
    "es": "El equipo revisará los resultados de la prueba y decidirá si debemos lanzar la nueva versión esta semana o "
    "esperar un poco más.",
    "it": "Il team esaminerà i risultati del test e deciderà se dobbiamo rilasciare la nuova versione questa "
    "settimana o aspettare ancora un po'.",
    "nl": "Het team zal de resultaten van de test bekijken en beslissen of we de nieuwe versie deze week moeten "
    "uitbrengen of nog even wachten.",
    "pt": "A equipe vai analisar os resultados do teste e decidir se devemos lançar a nova versão esta semana ou "
    "esperar mais um pouco.",
}


@pytest.mark.parametrize("code", sorted(SAMPLES))
def test_guess_language(code):
    assert guess_language(SAMPLES[code])[0] == code


def test_language_step():
    code_dump = " ".join(f"x{i} = y{i} + {i}" for i in range(30))
    batch = pd.DataFrame(
        {
            "id": ["en", "de", "short", "code", "chat_fr"],
            "text": [SAMPLES["en"], SAMPLES["de"], "Kurz und gut.", code_dump, None],
            "messages": [
                None,
                None,
                None,
                None,
                [{"role": "user", "content": SAMPLES["fr"]}, {"role": "assistant", "content": SAMPLES["fr"]}],
            ],
        }
    )
    kept, rejected = language(batch, LanguageArgs())
    assert list(kept["id"]) == ["en", "short"]
    assert dict(zip(rejected["id"], rejected["reason"], strict=True)) == {
        "de": "language_de",
        "code": "language_unknown",
        "chat_fr": "language_fr",
    }
    kept, _ = language(batch, LanguageArgs(languages=["en", "de", "fr"], reject_unknown=False))
    assert len(kept) == 5
    with pytest.raises(ValidationError):
        LanguageArgs(languages=["xx"])


# ---------------------------------------------------------------- contract shared by every step

_GOOD_DOC = " ".join(
    [
        "The support team reviewed the billing incident that affected several customers last week.",
        "The root cause was a configuration change that doubled the retry interval for failed payments.",
        "It was rolled back within two hours, and customers who were charged twice have been refunded.",
        "To prevent a repeat, the deployment checklist now includes a review of payment settings.",
        "We also added an alert that fires when the retry rate changes by more than twenty percent.",
        "Please contact the platform team with any questions about the new process and its timeline.",
    ]
)


def _mixed_batch() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(6)],
            "text": [_GOOD_DOC, "too short", None, "  ", None, SAMPLES["de"]],
            "messages": [None, None, _conversation(), None, _conversation({"city": 3}), None],
            "tools": [None, None, [WEATHER], None, [WEATHER], None],
            "source": ["a", "b", "c", "d", "e", "f"],
            "score": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        },
        index=[10, 11, 12, 13, 14, 15],  # a non-default index must not leak into the outputs
    )


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_step_conserves_rows_and_passes_columns_through(name):
    fn, args_model = STEPS[name]
    args = args_model() if name != "decontaminate" else args_model(ngrams=build_ngram_index([SAMPLES["de"]]))
    batch = _mixed_batch()
    before = batch.copy(deep=True)
    kept, rejected = fn(batch, args)
    assert len(kept) + len(rejected) == len(batch)
    assert sorted([*kept["id"], *rejected["id"]]) == sorted(batch["id"])
    assert list(rejected.columns) == [*batch.columns, "step", "reason"]
    assert set(batch.columns) <= set(kept.columns)
    assert set(rejected["step"]) <= {name}
    assert all(isinstance(r, str) and r for r in rejected["reason"])
    assert list(kept.index) == list(range(len(kept)))
    for frame in (kept, rejected):
        merged = frame.merge(before[["id", "source", "score"]], on="id", suffixes=("", "_in"))
        assert (merged["source"] == merged["source_in"]).all() and (merged["score"] == merged["score_in"]).all()
    pd.testing.assert_frame_equal(batch, before)  # inputs are never modified in place


def test_steps_handle_an_empty_batch():
    empty = pd.DataFrame({"id": pd.Series([], dtype=str), "text": pd.Series([], dtype=str)})
    for name, (fn, args_model) in STEPS.items():
        kept, rejected = fn(empty, args_model())
        assert len(kept) == len(rejected) == 0, name
        assert list(rejected.columns)[-2:] == ["step", "reason"], name


def test_args_models_forbid_unknown_keys():
    for _fn, args_model in STEPS.values():
        with pytest.raises(ValidationError):
            args_model(not_a_setting=1)
