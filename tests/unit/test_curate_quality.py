import pandas as pd
import pytest

from moatforge.curate.quality import QualityArgs, quality, quality_check

GOOD = (
    "The support team reviewed the billing incident that affected several customers last week. The root cause was "
    "a configuration change that doubled the retry interval for failed payments, and it was rolled back within two "
    "hours.\n\n"
    "Customers who were charged twice have been refunded, and each of them received a short apology together with "
    "a summary of what happened. The finance group confirmed that the refunds have cleared.\n\n"
    "To prevent a repeat, the deployment checklist now includes a review of payment settings by a second engineer. "
    "We also added an alert that fires when the retry rate changes by more than twenty percent within an hour.\n\n"
    "Please contact the platform team with any questions about the new process. A full timeline of the incident is "
    "available in the shared drive for anyone who wants to read it."
)
_ORDINAL_WORDS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
)
ORDINALS = _ORDINAL_WORDS.split()
LINES = [
    "The billing service was moved to the new cluster on Monday.",
    "Payment retries now back off exponentially after each failure.",
    "Refund requests are routed to the finance queue automatically.",
    "The support dashboard shows the refund status for each customer.",
    "Alerts fire when the error rate doubles within ten minutes.",
    "The on-call engineer reviews every alert before the shift ends.",
    "Invoices are generated at midnight and sent the next morning.",
    "Customers can download receipts from the account settings page.",
    "The audit log keeps every change to payment settings for a year.",
    "Access to the production database requires a second approval.",
]
PARAGRAPHS = GOOD.split("\n\n")
LONG_LINE = (
    "This long paragraph explains in detail how the migration of the billing service was planned, tested and "
    "finally executed over two weekends, and why the team chose to keep the old cluster running as a fallback."
)

# name -> (text, args that make the rule fire, expected reason, overrides that turn just that rule off)
CASES = {
    "short": (
        "The server was restarted at noon today. The backup job finished without any errors.\n"
        "The disk usage is now at forty percent. The team will check the logs again tomorrow.\n"
        "The new alert rules are live now. The ticket can be closed.",
        {},
        "gopher_short_doc",
        {"min_doc_words": None},
    ),
    "long": (GOOD, {"max_doc_words": 100}, "gopher_long_doc", {"max_doc_words": None}),
    "short_words": (GOOD, {"min_avg_word_length": 6}, "gopher_below_avg_threshold", {"min_avg_word_length": None}),
    "long_words": (GOOD, {"max_avg_word_length": 4}, "gopher_above_avg_threshold", {"max_avg_word_length": None}),
    "hashes": (
        GOOD + "\n\n" + " ".join(f"#{w}" for w in ORDINALS) + " are the tags we used.",
        {},
        "gopher_too_many_hashes",
        {"max_symbol_word_ratio": None},
    ),
    "ellipsis": (
        GOOD + "\n\n" + " ".join(f"{w}..." for w in ORDINALS[:17]) + " and that was the last attempt.",
        {},
        "gopher_too_many_ellipsis",
        {"max_symbol_word_ratio": None},
    ),
    "bullets": (
        "\n".join(f"- {line}" for line in LINES),
        {},
        "gopher_too_many_bullets",
        {"max_bullet_lines_ratio": None},
    ),
    "end_ellipsis": (
        GOOD + "\n\nWe are still waiting for the vendor to confirm the root cause...\n"
        "The second region has not been checked yet and we will look...\n"
        "More details about the affected invoices will follow soon...",
        {},
        "gopher_too_many_end_ellipsis",
        {"max_ellipsis_lines_ratio": None},
    ),
    "numbers": (
        GOOD + "\n\nThe hourly error counts were " + " ".join(str(10 + 7 * i) for i in range(40)) + " in that window.",
        {},
        "gopher_below_alpha_threshold",
        {"min_alpha_words_ratio": None},
    ),
    "stop_words": (
        "Server logs show normal behavior since Monday. Disk usage remains below forty percent on every node.\n"
        "Memory consumption looks stable across all regions. Nightly backups finished without errors or warnings.\n"
        "Latency dropped after last week's cache rollout. Customers reported faster page loads in Europe.\n"
        "Engineers will review capacity planning next quarter. Budget requests go through finance this month.\n"
        "Security patches were applied on Tuesday evening. No incidents were opened during this period.",
        {},
        "gopher_few_stop_words",
        {"min_stop_words": None},
    ),
    "dup_paragraphs": (
        "\n\n".join([*PARAGRAPHS, PARAGRAPHS[0], PARAGRAPHS[0]]),
        {"fineweb": False},
        "gopher_dup_para_frac",
        {"gopher_repetition": False},
    ),
    "dup_lines": (
        "\n".join(LINES[:7] + LINES[:4]),
        {"fineweb": False},
        "gopher_dup_line_frac",
        {"gopher_repetition": False},
    ),
    "dup_line_chars": (
        "\n".join([*LINES[:7], LONG_LINE, LONG_LINE]),
        {"fineweb": False},
        "gopher_dup_line_char_frac",
        {"dup_line_char_frac": None, "dup_n_gram_char_frac": {}},  # a repeated line also repeats its n-grams
    ),
    "top_2_gram": (
        " ".join(f"big data {w}" for w in ORDINALS[:15]) + ".",
        {"gopher_quality": False, "c4": False},
        "gopher_top_2_gram",
        {"top_n_gram_char_frac": {}, "dup_n_gram_char_frac": {}},
    ),
    "dup_5_grams": (
        " ".join(f"please restart the billing service {w}." for w in ORDINALS[:15]),
        {"top_n_gram_char_frac": {}, "gopher_quality": False, "c4": False, "fineweb": False},
        "gopher_duplicated_5_n_grams",
        {"dup_n_gram_char_frac": {}},
    ),
    "lorem": (
        GOOD + "\n\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
        {},
        "c4_lorem_ipsum",
        {"c4_filter_lorem_ipsum": False},
    ),
    "curly": (
        GOOD + "\n\nSet the retry config to {retries: 3} before the next deploy.",
        {},
        "c4_curly_bracket",
        {"c4_filter_curly_bracket": False},
    ),
    "few_sentences": (
        "The support team reviewed the billing incident that affected several customers last week and found that a "
        "configuration change had doubled the retry interval for failed payments across every region we operate in. "
        "Customers who were charged twice have been refunded and each of them received a short apology together with "
        "a summary of what happened and what the team will change in the deployment checklist.",
        {},
        "c4_too_few_sentences",
        {"c4_min_num_sentences": None},
    ),
    "line_punct": (
        "\n".join(line.rstrip(".") for line in LINES) + "\nThis is the only line that ends with a full stop.",
        {"c4": False},
        "fineweb_line_punct_ratio",
        {"fineweb_line_punct_thr": None},
    ),
    "short_lines": (
        "Backups finished on time.\nDisk usage stays stable.\nLatency improved a little.\nThe alerts were tuned.\n"
        "Refunds cleared this morning.\nInvoices went out today.\nThe dashboard is faster.\nTickets are all closed.\n"
        "The team met at noon.\nNobody reported errors.\nBudgets were approved.\nAccess reviews are done.\n"
        "The vendor replied today.\nLogs rotate every night.",
        {},
        "fineweb_short_line_ratio",
        {"fineweb_short_line_thr": None},
    ),
    "dup_line_once": (
        GOOD + "\n\nThanks for reading this update.\n\nThanks for reading this update.",
        {},
        "fineweb_char_dup_ratio",
        {"fineweb_char_duplicates_ratio": None},
    ),
    "list_like": (
        "\n\n".join(
            [
                "Payment retries back off exponentially.",
                "Refunds reach the finance queue.",
                "The dashboard shows refund status.",
                "Alerts fire when errors double.",
                "Invoices are generated at midnight.",
                "Customers download receipts online.",
                "The audit log keeps changes.",
                "Database access requires approval.",
                "Backups run every single night.",
                "Deployments pause during holidays.",
                "Engineers rotate the on-call duty.",
                "Vendors receive monthly usage reports.",
            ]
        ),
        {},
        "fineweb_list_ratio",
        {"fineweb_new_line_ratio": None},
    ),
}


def test_good_prose_passes_every_rule():
    assert quality_check(GOOD, QualityArgs()) == (None, GOOD)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_rule_drops_with_its_reason_and_can_be_switched_off(name):
    text, trigger, reason, off = CASES[name]
    assert quality_check(text, QualityArgs(**trigger))[0] == reason
    assert quality_check(text, QualityArgs(**{**trigger, **off}))[0] is None


@pytest.mark.parametrize(
    ("group", "name"),
    [("gopher_quality", "stop_words"), ("gopher_quality", "bullets"), ("c4", "curly"), ("fineweb", "short_lines")],
)
def test_group_switch_turns_a_family_off(group, name):
    text, trigger, _reason, _off = CASES[name]
    assert quality_check(text, QualityArgs(**{**trigger, group: False}))[0] is None


JS_POLICY = (
    GOOD + "\n\nPlease enable JavaScript in your browser to see this page.\n"
    "This website uses cookies to improve your experience.\nHome | About | Contact"
)


def test_c4_is_filter_only_by_default():
    reason, text = quality_check(JS_POLICY, QualityArgs())
    assert reason is None
    assert text == JS_POLICY


def test_c4_remove_lines_rewrites_kept_text():
    reason, text = quality_check(JS_POLICY, QualityArgs(c4_remove_lines=True))
    assert reason is None
    assert "JavaScript" not in text and "cookies" not in text and "Home |" not in text
    assert text == "\n".join(PARAGRAPHS)


def test_quality_step_judges_text_rows_only_and_keeps_other_columns():
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    batch = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "text": [GOOD, CASES["curly"][0], None, "tiny"],
            "messages": [None, None, chat, None],
            "source": ["wiki", "wiki", "chat", "tickets"],
        }
    )
    kept, rejected = quality(batch, QualityArgs())
    assert list(kept["id"]) == ["a", "c"]
    assert list(kept["source"]) == ["wiki", "chat"]
    assert kept.loc[1, "messages"] == chat
    assert list(rejected["id"]) == ["b", "d"]
    assert list(rejected["reason"]) == ["c4_curly_bracket", "gopher_short_doc"]
    assert set(rejected["step"]) == {"quality"}
    assert list(rejected["text"]) == [CASES["curly"][0], "tiny"]


def test_quality_step_returns_c4_rewritten_text():
    batch = pd.DataFrame({"id": ["a", "b"], "text": [JS_POLICY, "tiny"]})
    kept, rejected = quality(batch, QualityArgs(c4_remove_lines=True))
    assert list(kept["text"]) == ["\n".join(PARAGRAPHS)]
    assert list(rejected["text"]) == ["tiny"]
