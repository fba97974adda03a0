"""Deterministic synthetic tool-calling conversations for fine-tuning a small model.

The set is generated rather than downloaded so the project stays self-contained, and so every
argument of every reference call is derivable from the conversation: that makes the reference
unambiguous and lets eval be scored exactly with an AST-style checker. Train and eval draw ids,
names and phrasings from disjoint pools, so eval accuracy measures generalisation instead of
recall of strings the model saw during training.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import pathlib
import random
import re
import tempfile
import zlib
from collections.abc import Callable, Sequence

from moatforge.errors import MoatforgeError

__all__ = [
    "DIRT_KINDS",
    "KINDS",
    "TOOLS",
    "generate",
    "generate_dirty",
    "junk_expected_step",
    "tokenizer_words",
    "write_dirty_sample_data",
    "write_sample_data",
]


class _Rng(random.Random):
    """The generator's random stream; it carries ``varied_titles`` so the option reaches ``_title`` without a
    flag threaded through every row builder, and a default stream draws exactly what ``random.Random`` does."""

    varied_titles: bool = False
    title_words: tuple[str, ...] = ()


def _tool(name: str, description: str, properties: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties) if required is None else required,
            },
        },
    }


_STR = {"type": "string"}
_REFUND_REASONS = ["damaged", "late", "wrong_item", "not_received", "defective"]
_CURRENCIES = ["USD", "EUR", "GBP"]
_WAREHOUSES = ["berlin", "dallas", "singapore"]
_PRIORITIES = ["low", "medium", "high"]
_TICKET_STATUSES = ["open", "in_progress", "resolved", "closed"]
_METRICS = ["revenue", "refunds", "orders", "new_customers"]
_GROUP_BYS = ["day", "week", "month", "region"]

# Descriptions are deliberately terse: every row carries its tools in the prompt, and on a CPU the
# prompt length dominates training and eval time.
TOOLS: list[dict] = [
    _tool("get_order_status", "Shipping and payment status of an order.", {"order_id": _STR}),
    _tool(
        "cancel_order",
        "Cancel an unshipped order.",
        {"order_id": _STR, "notify_customer": {"type": "boolean"}},
    ),
    _tool(
        "issue_refund",
        "Refund part or all of an order.",
        {
            "order_id": _STR,
            "amount": {"type": "number"},
            "reason": {"type": "string", "enum": _REFUND_REASONS},
        },
    ),
    _tool(
        "create_invoice",
        "Create a customer invoice.",
        {
            "customer_id": _STR,
            "amount": {"type": "number"},
            "currency": {"type": "string", "enum": _CURRENCIES},
            "due_days": {"type": "integer"},
        },
    ),
    _tool(
        "reconcile_invoice",
        "Match an invoice to a payment.",
        {"invoice_id": _STR, "payment_id": _STR},
    ),
    _tool(
        "check_inventory",
        "Units in stock for a SKU at a warehouse.",
        {"sku": _STR, "warehouse": {"type": "string", "enum": _WAREHOUSES}},
    ),
    _tool(
        "create_ticket",
        "Open a ticket for a team.",
        {"title": _STR, "priority": {"type": "string", "enum": _PRIORITIES}, "team": _STR},
    ),
    _tool(
        "update_ticket_status",
        "Change a ticket's status.",
        {"ticket_id": _STR, "status": {"type": "string", "enum": _TICKET_STATUSES}},
    ),
    _tool(
        "run_report",
        "Aggregate a metric over dates (YYYY-MM-DD).",
        {
            "metric": {"type": "string", "enum": _METRICS},
            "group_by": {"type": "string", "enum": _GROUP_BYS},
            "start_date": _STR,
            "end_date": _STR,
        },
    ),
]
_TOOLS_BY_NAME = {t["function"]["name"]: t for t in TOOLS}

KINDS = ("single", "no_tool", "extract", "parallel", "two_step")
_KIND_WEIGHTS = {"single": 0.40, "no_tool": 0.15, "extract": 0.20, "parallel": 0.15, "two_step": 0.10}
# Train over-represents text answers: a model that sees few of them learns to call a tool whenever tools are
# offered (the demo's teacher did, at the eval mix above). The held-out set keeps the mix above.
_TRAIN_KIND_WEIGHTS = {"single": 0.30, "no_tool": 0.25, "extract": 0.20, "parallel": 0.15, "two_step": 0.10}

_SYSTEM_PROMPTS = [
    "You are OpsBot, an internal operations assistant. Call a tool when one fits; otherwise reply briefly.",
    "You help the operations team. Use the provided tools for actions and lookups.",
    "You are an internal assistant for orders, billing, inventory and tickets.",
]

# ---------------------------------------------------------------------------------------------
# Entities. Ids are partitioned between the splits by a hash of the id string itself, so the
# disjointness holds by construction whatever the seed, without any bookkeeping across splits.
# ---------------------------------------------------------------------------------------------

_EVAL_BUCKETS = 5
_SKU_LETTERS = "ABCDEFGHJKLMNPRSTUVWXZ"


def _split_of(value: str) -> str:
    return "eval" if zlib.crc32(value.encode()) % _EVAL_BUCKETS == 0 else "train"


def _draw_id(rng: _Rng, split: str, make: Callable[[], str], avoid: tuple[str, ...] = ()) -> str:
    while True:
        value = make()
        if _split_of(value) == split and value not in avoid:
            return value


def _order_id(rng: _Rng, split: str, avoid: tuple[str, ...] = ()) -> str:
    return _draw_id(rng, split, lambda: f"ORD-{rng.randint(10000, 99999)}", avoid)


def _customer_id(rng: _Rng, split: str) -> str:
    return _draw_id(rng, split, lambda: f"CUST-{rng.randint(1000, 9999)}")


def _invoice_id(rng: _Rng, split: str) -> str:
    return _draw_id(rng, split, lambda: f"INV-{rng.randint(100000, 999999)}")


def _payment_id(rng: _Rng, split: str) -> str:
    return _draw_id(rng, split, lambda: f"PAY-{rng.randint(100000, 999999)}")


def _ticket_id(rng: _Rng, split: str, avoid: tuple[str, ...] = ()) -> str:
    return _draw_id(rng, split, lambda: f"TCK-{rng.randint(1000, 9999)}", avoid)


def _sku(rng: _Rng, split: str, avoid: tuple[str, ...] = ()) -> str:
    def make() -> str:
        return f"{rng.choice(_SKU_LETTERS)}{rng.choice(_SKU_LETTERS)}-{rng.randint(1000, 9999)}"

    return _draw_id(rng, split, make, avoid)


_PEOPLE = {
    "train": [
        "Maria Gomez", "Tom Becker", "Aisha Khan", "Lukas Novak", "Priya Raman", "Jonas Weber",
        "Chloe Martin", "Daniel Osei", "Hannah Li", "Marco Rossi", "Sofia Petrova", "Ben Carter",
    ],
    "eval": ["Elena Duarte", "Kenji Sato", "Fatima Bello", "Oliver Grant", "Nina Holm"],
}  # fmt: skip
_COMPANIES = {
    "train": [
        "Brightwater Ltd", "Kestrel Foods", "Northwind Traders", "Pinecrest Media", "Alder & Co",
        "Bluefin Logistics", "Copperleaf Studio", "Harbor Dental", "Quillon Systems", "Redfern Bakery",
    ],
    "eval": ["Solstice Labs", "Tamarind Hotels", "Vantage Optics", "Wrenfield Farms"],
}  # fmt: skip
_TITLES = {
    "train": [
        "Checkout page returns 500", "Label printer offline in packing area", "Duplicate charges on card payments",
        "Password reset emails delayed", "Warehouse scanner app crashes on login", "VAT missing on EU invoices",
        "Slow search on admin dashboard", "Shipping rates wrong for Canada", "Stock counts out of sync after import",
        "Refund button greyed out for agents", "SSO login loop for new hires", "Nightly export job failed",
    ],
    "eval": [
        "Order confirmation emails not sending", "Discount codes applied twice", "Courier API timeouts",
        "Invoice PDF shows wrong logo", "Returns portal blank on mobile", "Payroll report missing contractors",
    ],
}  # fmt: skip
_EVAL_TITLE_WORDS = frozenset(word.lower() for title in _TITLES["eval"] for word in title.split())
# Train titles built from a subject and a symptom: a few hundred distinct titles instead of twelve. A small
# student fine-tuned on twelve titles learns them by heart and writes one of them for an unseen ticket; one
# that sees hundreds learns to copy the title from the request. Neither list shares a subject or a symptom
# with the eval titles above, so the held-out titles stay unseen.
_TITLE_SUBJECTS = [
    "Checkout page", "Label printer", "Password reset emails", "Warehouse scanner app", "Admin dashboard",
    "Shipping rate table", "Stock import", "Refund button", "SSO login", "Nightly export job", "Search index",
    "Customer portal", "Barcode reader", "Tax calculation", "Gift card balance", "Loyalty points sync",
    "Packing slip template", "Supplier feed", "Chat widget", "Mobile app cart", "Price rules engine",
    "Delivery slot picker", "Webhook relay", "Audit log viewer", "Backup job", "Address autocomplete",
    "Subscription renewals", "Fraud score service", "Product image upload", "CSV export",
]  # fmt: skip
_TITLE_SYMPTOMS = [
    "returns 500", "offline", "crashes on login", "shows stale data", "times out after a minute", "is very slow",
    "out of sync", "greyed out for agents", "stuck in a loop", "failed overnight", "shows wrong currency",
    "drops the last row", "double counts items", "rejects valid input", "freezes on save", "loses its settings",
    "logs users out", "sends blank emails", "shows a broken layout", "ignores the filter",
]  # fmt: skip
_TEAMS = ["payments", "logistics", "platform", "billing", "support", "security", "warehouse"]

# ---------------------------------------------------------------------------------------------
# Natural phrasings of enum and typed values. Shared by both splits: eval should test unseen
# sentences and entities, not mappings the model never had a chance to learn.
# ---------------------------------------------------------------------------------------------

_REASON_TEXT = {
    "damaged": ["arrived damaged", "was broken on arrival", "arrived with a cracked casing"],
    "late": ["arrived late", "showed up two weeks late", "missed the promised delivery date"],
    "wrong_item": ["was the wrong item", "turned out to be a different product than ordered"],
    "not_received": ["never arrived", "was never delivered", "got lost in transit"],
    "defective": ["is defective", "stopped working after a day", "won't power on"],
}
_WAREHOUSE_TEXT = {
    "berlin": ["Berlin", "the Berlin warehouse", "our EU warehouse"],
    "dallas": ["Dallas", "the Dallas DC", "our Texas warehouse"],
    "singapore": ["Singapore", "the Singapore hub", "our APAC warehouse"],
}
_PRIORITY_TEXT = {
    "high": ["urgent", "high-priority", "critical"],
    "medium": ["medium-priority", "normal-priority"],
    "low": ["low-priority", "non-urgent"],
}
_STATUS_TEXT = {
    "open": ["open", "reopened"],
    "in_progress": ["in progress", "in-progress"],
    "resolved": ["resolved", "fixed"],
    "closed": ["closed", "done and closed"],
}
_METRIC_TEXT = {
    "revenue": ["revenue", "gross sales"],
    "refunds": ["refunds", "refund totals"],
    "orders": ["order volume", "the number of orders"],
    "new_customers": ["new customer signups", "new customers"],
}
_GROUP_TEXT = {
    "day": ["per day", "by day"],
    "week": ["per week", "by week"],
    "month": ["per month", "by month"],
    "region": ["per region", "broken down by region"],
}
_NOTIFY_TEXT = {
    True: ["and let the customer know", "and email the customer about it", "and notify the customer"],
    False: ["but don't notify the customer", "without emailing the customer", "silently, no customer email"],
}
_NOTIFY_SENTENCE = {
    True: ["Please send the customer a confirmation.", "Make sure the customer gets notified."],
    False: ["No need to notify the customer, I already spoke to them.", "Don't send the customer any email."],
}
_CURRENCY_TEXT = {
    "USD": ["${a}", "{a} USD", "{a} dollars"],
    "EUR": ["€{a}", "{a} EUR", "{a} euros"],
    "GBP": ["£{a}", "{a} GBP", "{a} pounds"],
}
_DUE_TEXT = ["due in {d} days", "net {d}", "payable within {d} days", "on {d}-day terms"]
_DUE_DAYS = [7, 10, 14, 15, 21, 30, 45, 60, 90]


def _amount(rng: _Rng, low: float, high: float) -> int | float:
    if rng.random() < 0.35:
        return rng.randint(int(low), int(high))
    return round(rng.uniform(low, high), 2)


def _amount_text(rng: _Rng, amount: float) -> str:
    if isinstance(amount, int):
        return f"{amount:,}" if amount >= 1000 and rng.random() < 0.5 else str(amount)
    return f"{amount:,.2f}" if amount >= 1000 and rng.random() < 0.5 else f"{amount:.2f}"


def _money_text(rng: _Rng, amount: float, currency: str) -> str:
    return rng.choice(_CURRENCY_TEXT[currency]).format(a=_amount_text(rng, amount))


def _date_range(rng: _Rng) -> tuple[str, str, str, str]:
    start = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 640))
    end = start + dt.timedelta(days=rng.choice([6, 13, 27, 29, 30, 59, 89, 90]))
    style = rng.randrange(3)

    def fmt(d: dt.date) -> str:
        if style == 0:
            return d.isoformat()
        if style == 1:
            return f"{d:%B} {d.day}, {d.year}"
        return f"{d.day} {d:%B} {d.year}"

    return start.isoformat(), end.isoformat(), fmt(start), fmt(end)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Phrasing templates, one pool per split. Eval pools never appear in train.
# ---------------------------------------------------------------------------------------------

_T: dict[str, dict[str, list[str]]] = {
    "get_order_status": {
        "train": [
            "What's the status of order {order_id}?",
            "Can you check where {order_id} is?",
            "Customer {name} is asking about order {order_id}. Has it shipped?",
            "Look up order {order_id} for me please.",
            "status of {order_id}",
        ],
        "eval": [
            "Any update on {order_id}? {name} wants to know when it arrives.",
            "Please pull up the current state of order {order_id}.",
        ],
    },
    "cancel_order": {
        "train": [
            "Cancel order {order_id} {notify}.",
            "{name} changed their mind, please cancel {order_id} {notify}.",
            "We need to kill order {order_id} {notify}.",
        ],
        "eval": ["Go ahead and cancel {order_id} {notify}; it was a duplicate."],
    },
    "issue_refund": {
        "train": [
            "Refund {amount} on order {order_id}, the item {reason}.",
            "Please issue a {amount} refund for {order_id} because it {reason}.",
            "Order {order_id} {reason}. Give the customer {amount} back.",
        ],
        "eval": [
            "{name} says their order {reason}; refund {amount} against {order_id}.",
            "Can you send back {amount} on {order_id}? It {reason}.",
        ],
    },
    "create_invoice": {
        "train": [
            "Invoice {company} ({customer_id}) for {money}, {due}.",
            "Create an invoice for customer {customer_id}: {money}, {due}.",
            "Bill {customer_id} {money}, {due}, please.",
        ],
        "eval": [
            "{company} owes us {money} for the retainer. Raise an invoice on {customer_id}, {due}.",
            "New invoice needed: customer {customer_id}, {money}, {due}.",
        ],
    },
    "reconcile_invoice": {
        "train": [
            "Reconcile invoice {invoice_id} with payment {payment_id}.",
            "Payment {payment_id} just came in for {invoice_id}, please match them.",
            "Mark {invoice_id} as paid by {payment_id}.",
        ],
        "eval": ["The bank shows {payment_id}; it settles {invoice_id}. Can you reconcile?"],
    },
    "check_inventory": {
        "train": [
            "How many {sku} do we have in {wh}?",
            "Check stock of {sku} in {wh}.",
            "Is {sku} available in {wh}?",
        ],
        "eval": [
            "A customer wants 40 units of {sku}. What's on hand in {wh}?",
            "Inventory check please: {sku}, {wh}.",
        ],
    },
    "create_ticket": {
        "train": [
            'Open a {prio} ticket for the {team} team: "{title}".',
            'Create ticket "{title}", {prio}, assign to {team}.',
            'File a {prio} ticket titled "{title}" with {team}.',
        ],
        "eval": [
            'Please log "{title}" as a {prio} issue for the {team} team.',
            'Raise a {prio} ticket with {team}, title "{title}".',
        ],
    },
    "update_ticket_status": {
        "train": [
            "Set ticket {ticket_id} to {status}.",
            "Mark {ticket_id} as {status}.",
            "{ticket_id} should be {status} now, please update it.",
        ],
        "eval": [
            "Update the status of {ticket_id}: {status}.",
            "Can you flag {ticket_id} as {status}? {name} asked me to.",
        ],
    },
    "run_report": {
        "train": [
            "Run a report of {metric} {group} from {start} to {end}.",
            "I need {metric} {group} between {start} and {end}.",
            "Pull {metric} {group} for {start} through {end}.",
        ],
        "eval": [
            "For the board deck: {metric} {group}, covering {start} to {end}.",
            "Show me {metric} {group} over the period {start} until {end}.",
        ],
    },
    "parallel_orders": {
        "train": [
            "What's the status of {o1} and {o2}?",
            "Check orders {o1} and {o2} for me.",
            "Can you look up both {o1} and {o2}?",
        ],
        "eval": ["Two customers are waiting on {o1} and {o2}. Where are those orders?"],
    },
    "parallel_warehouses": {
        "train": [
            "How many {sku} do we have in {wh1} and in {wh2}?",
            "Check {sku} stock in both {wh1} and {wh2}.",
        ],
        "eval": ["Compare {sku} stock between {wh1} and {wh2}."],
    },
    "parallel_skus": {
        "train": ["Check {sku1} and {sku2} in {wh}.", "Stock levels for {sku1} and {sku2} in {wh}?"],
        "eval": ["What's on hand in {wh} for {sku1} and {sku2}?"],
    },
    "parallel_tickets": {
        "train": ["Mark {t1} and {t2} as {status}.", "Set both {t1} and {t2} to {status}."],
        "eval": ["{t1} and {t2} are both {status} now, update them please."],
    },
    "two_step_invoice": {
        "train": [
            (
                "Invoice {customer_id} for {money}, {due}. They already paid with {payment_id}, "
                "so reconcile the invoice against that payment."
            ),
            "Create an invoice for {company} ({customer_id}): {money}, {due}. Then match it to {payment_id}.",
            "Bill {customer_id} {money}, {due}, and reconcile it with payment {payment_id}.",
        ],
        "eval": [
            (
                "{company} prepaid {money} via {payment_id}. Raise the invoice on {customer_id} ({due}) "
                "and reconcile it with that payment."
            ),
        ],
    },
    "two_step_refund": {
        "train": [
            "Fully refund order {order_id}, it {reason}.",
            "Order {order_id} {reason}. Refund the whole order total.",
        ],
        "eval": ["{name}'s order {order_id} {reason}; give them a full refund."],
    },
    "extract_intro": {
        "train": [
            "Handle this email:",
            "Please action the following message.",
            "Here's one from the queue, take care of it:",
            "Forwarded from the shared inbox:",
        ],
        "eval": ["Can you process this one for me?", "Deal with the message below."],
    },
    "extract_filler": {
        "train": [
            "We've been customers for about three years.",
            "I tried calling support but the line was busy.",
            "Our finance team asked me to follow up on this.",
            "Sorry for the long message.",
            "This came up in this morning's stand-up.",
            "Several people in the office noticed it.",
            "Let me know if you need anything else from me.",
        ],
        "eval": [
            "I hope this reaches the right person.",
            "We're in the middle of quarter-end, so timing matters.",
            "My manager is copied on this thread.",
            "I've attached screenshots to the original message.",
        ],
    },
}

_NO_TOOL: dict[str, list[tuple[str, str]]] = {
    "train": [
        ("Hi there!", "Hello! I can check orders, refunds, invoices, inventory, tickets and reports. What do you need?"),
        ("Thanks, that's all for today.", "You're welcome. Have a good day!"),
        ("Can you book me a flight to Lisbon?", "I can't book travel; I only handle orders, billing, inventory, tickets and reports."),
        ("What's the weather like in Dallas?", "I don't have weather data. I can help with orders, invoices, stock or tickets."),
        ("I need to refund a customer.", "Sure. What's the order id, the amount, and the reason for the refund?"),
        ("Can you check an order for me?", "Of course. Which order id should I look up?"),
        ("Please create an invoice.", "Happy to. Which customer id, amount, currency and payment terms?"),
        ("How long do refunds take to reach the customer?", "Refunds usually reach the customer within 5 to 10 business days."),
        ("Who do I ask about a payroll problem?", "Payroll questions go to HR; I can open a ticket for a team if you give me the details."),
        ("What does net 30 mean?", "Net 30 means the invoice is due 30 days after it is issued."),
        ("Can you write me a poem about spreadsheets?", "I'm set up for operations tasks only, like orders, invoices and tickets."),
        ("Good morning!", "Good morning! How can I help with operations today?"),
        ("Which warehouses do we have?", "We ship from Berlin, Dallas and Singapore. I can check stock in any of them."),
        ("Is it okay to refund more than the order total?", "No, a refund can't exceed what the customer paid for the order."),
    ],
    "eval": [
        ("Hey, how's it going?", "All good, thanks! Tell me what you need: orders, billing, stock, tickets or reports."),
        ("Can you order pizza for the team?", "I can't place food orders; I only handle internal operations tools."),
        ("I want to open a ticket.", "Sure. What should the title be, how urgent is it, and which team should own it?"),
        ("What currencies can we invoice in?", "We invoice in USD, EUR and GBP."),
        ("Cheers, that's everything.", "Glad to help. Bye!"),
    ],
}  # fmt: skip
_NO_TOOL_OPENERS = ["", "", "", "Quick one: ", "Hi, ", "Hey, "]

# A request that names a tool's job but leaves out a required argument: the assistant asks for it instead of
# guessing. Each row carries its own ids, so curation's dedup keeps these (the fixed no-tool exchanges above
# mostly collapse into one row per template), and the tool the user means is in the row's tool list, so the
# model has to notice what is missing rather than that no tool fits.
_MISSING: dict[str, dict[str, list[tuple[str, str]]]] = {
    "issue_refund": {
        "train": [
            ("Refund order {order_id}, the item {reason}.", "How much should I refund on order {order_id}?"),
            ("{name} wants their money back for {order_id}.",
             "I can refund {order_id}. What amount, and why is the customer returning it?"),
        ],
        "eval": [("Can you sort out a refund on {order_id}? It {reason}.",
                  "Sure. What amount should the refund on {order_id} be?")],
    },
    "create_invoice": {
        "train": [
            ("Invoice {company} ({customer_id}) {due}.",
             "What amount and currency should the invoice for {customer_id} be?"),
            ("Bill customer {customer_id} for last month.",
             "How much should I bill {customer_id}, in which currency, and when is it due?"),
        ],
        "eval": [("Raise an invoice to {customer_id}, please.",
                  "Happy to. What's the amount and currency, and the payment terms?")],
    },
    "reconcile_invoice": {
        "train": [
            ("Reconcile invoice {invoice_id}.", "Which payment should I match invoice {invoice_id} against?"),
            ("{company} says they paid {invoice_id}; match it up.",
             "Which payment id did {company} use? I'll reconcile {invoice_id} against it."),
        ],
        "eval": [("Please close out {invoice_id} against the customer's payment.",
                  "Which payment id is it? I need it to reconcile {invoice_id}.")],
    },
    "update_ticket_status": {
        "train": [
            ("Update ticket {ticket_id}.", "What status should ticket {ticket_id} move to?"),
            ("{name} asked me to change the status on {ticket_id}.",
             "Which status should {ticket_id} get: open, in progress, resolved or closed?"),
        ],
        "eval": [("Can you do something about {ticket_id}'s status?",
                  "Sure. Should {ticket_id} be open, in progress, resolved or closed?")],
    },
    "check_inventory": {
        "train": [
            ("How many {sku} do we have?", "Which warehouse should I check for {sku}: Berlin, Dallas or Singapore?"),
            ("Is {sku} in stock?", "In which warehouse? I can check Berlin, Dallas or Singapore for {sku}."),
        ],
        "eval": [("Stock level for {sku}?", "Which warehouse do you mean for {sku}?")],
    },
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Message construction.
# ---------------------------------------------------------------------------------------------


def _call_id(rng: _Rng) -> str:
    return "call_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))


def _tool_call(rng: _Rng, name: str, args: dict) -> dict:
    return {
        "id": _call_id(rng),
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


def _assistant_calls(rng: _Rng, calls: list[tuple[str, dict]]) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [_tool_call(rng, n, a) for n, a in calls]}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


# A builder returns the turns after the system message and the names of the tools they need.
_Built = tuple[list[dict], list[str]]


def _fmt(rng: _Rng, split: str, key: str, **fields: str) -> str:
    return _cap(rng.choice(_T[key][split]).format(**fields))


def _single_call(rng: _Rng, text: str, name: str, args: dict) -> _Built:
    return [_user(text), _assistant_calls(rng, [(name, args)])], [name]


def _b_order_status(rng: _Rng, split: str) -> _Built:
    oid = _order_id(rng, split)
    text = _fmt(rng, split, "get_order_status", order_id=oid, name=rng.choice(_PEOPLE[split]))
    return _single_call(rng, text, "get_order_status", {"order_id": oid})


def _b_cancel(rng: _Rng, split: str) -> _Built:
    oid, notify = _order_id(rng, split), rng.random() < 0.5
    text = _fmt(
        rng,
        split,
        "cancel_order",
        order_id=oid,
        notify=rng.choice(_NOTIFY_TEXT[notify]),
        name=rng.choice(_PEOPLE[split]),
    )
    return _single_call(rng, text, "cancel_order", {"order_id": oid, "notify_customer": notify})


def _refund_args(rng: _Rng, split: str) -> tuple[dict, dict]:
    oid, reason = _order_id(rng, split), rng.choice(_REFUND_REASONS)
    amount = _amount(rng, 5, 400)
    text = _amount_text(rng, amount)
    amount_text = rng.choice([f"${text}", f"{text} USD", text])
    fields = {
        "order_id": oid,
        "amount": amount_text,
        "reason": rng.choice(_REASON_TEXT[reason]),
        "name": rng.choice(_PEOPLE[split]),
    }
    return {"order_id": oid, "amount": amount, "reason": reason}, fields


def _b_refund(rng: _Rng, split: str) -> _Built:
    args, fields = _refund_args(rng, split)
    return _single_call(rng, _fmt(rng, split, "issue_refund", **fields), "issue_refund", args)


def _invoice_args(rng: _Rng, split: str) -> tuple[dict, dict]:
    cid, currency, days = _customer_id(rng, split), rng.choice(_CURRENCIES), rng.choice(_DUE_DAYS)
    amount = _amount(rng, 80, 12000)
    fields = {
        "customer_id": cid,
        "company": rng.choice(_COMPANIES[split]),
        "money": _money_text(rng, amount, currency),
        "due": rng.choice(_DUE_TEXT).format(d=days),
        "payment_id": _payment_id(rng, split),
    }
    return {"customer_id": cid, "amount": amount, "currency": currency, "due_days": days}, fields


def _b_invoice(rng: _Rng, split: str) -> _Built:
    args, fields = _invoice_args(rng, split)
    return _single_call(rng, _fmt(rng, split, "create_invoice", **fields), "create_invoice", args)


def _b_reconcile(rng: _Rng, split: str) -> _Built:
    iid, pid = _invoice_id(rng, split), _payment_id(rng, split)
    text = _fmt(rng, split, "reconcile_invoice", invoice_id=iid, payment_id=pid)
    return _single_call(rng, text, "reconcile_invoice", {"invoice_id": iid, "payment_id": pid})


def _b_inventory(rng: _Rng, split: str) -> _Built:
    sku, wh = _sku(rng, split), rng.choice(_WAREHOUSES)
    text = _fmt(rng, split, "check_inventory", sku=sku, wh=rng.choice(_WAREHOUSE_TEXT[wh]))
    return _single_call(rng, text, "check_inventory", {"sku": sku, "warehouse": wh})


def _title(rng: _Rng, split: str) -> str:
    if split == "train" and rng.title_words:
        words = [rng.choice(rng.title_words) for _ in range(rng.randint(2, 5))]
        return " ".join([words[0].capitalize(), *words[1:]])
    if split == "train" and rng.varied_titles:
        return f"{rng.choice(_TITLE_SUBJECTS)} {rng.choice(_TITLE_SYMPTOMS)}"
    return rng.choice(_TITLES[split])


def _ticket_args(rng: _Rng, split: str) -> tuple[dict, dict]:
    title, prio, team = _title(rng, split), rng.choice(_PRIORITIES), rng.choice(_TEAMS)
    fields = {"title": title, "prio": rng.choice(_PRIORITY_TEXT[prio]), "team": team}
    return {"title": title, "priority": prio, "team": team}, fields


def _b_ticket(rng: _Rng, split: str) -> _Built:
    args, fields = _ticket_args(rng, split)
    return _single_call(rng, _fmt(rng, split, "create_ticket", **fields), "create_ticket", args)


def _b_ticket_status(rng: _Rng, split: str) -> _Built:
    tid, status = _ticket_id(rng, split), rng.choice(_TICKET_STATUSES)
    text = _fmt(
        rng,
        split,
        "update_ticket_status",
        ticket_id=tid,
        status=rng.choice(_STATUS_TEXT[status]),
        name=rng.choice(_PEOPLE[split]),
    )
    return _single_call(rng, text, "update_ticket_status", {"ticket_id": tid, "status": status})


def _b_report(rng: _Rng, split: str) -> _Built:
    metric, group = rng.choice(_METRICS), rng.choice(_GROUP_BYS)
    start, end, start_text, end_text = _date_range(rng)
    text = _fmt(
        rng,
        split,
        "run_report",
        metric=rng.choice(_METRIC_TEXT[metric]),
        group=rng.choice(_GROUP_TEXT[group]),
        start=start_text,
        end=end_text,
    )
    args = {"metric": metric, "group_by": group, "start_date": start, "end_date": end}
    return _single_call(rng, text, "run_report", args)


_SINGLE_BUILDERS = [
    _b_order_status,
    _b_cancel,
    _b_refund,
    _b_invoice,
    _b_reconcile,
    _b_inventory,
    _b_ticket,
    _b_ticket_status,
    _b_report,
]


def _b_no_tool(rng: _Rng, split: str) -> _Built:
    question, answer = rng.choice(_NO_TOOL[split])
    opener = rng.choice(_NO_TOOL_OPENERS)
    text = opener + (question[:1].lower() + question[1:] if opener and question[1:2].islower() else question)
    return [_user(text), {"role": "assistant", "content": answer}], []


def _b_missing_info(rng: _Rng, split: str) -> _Built:
    tool = rng.choice(sorted(_MISSING))
    question, answer = rng.choice(_MISSING[tool][split])
    fields = {
        "order_id": _order_id(rng, split),
        "customer_id": _customer_id(rng, split),
        "invoice_id": _invoice_id(rng, split),
        "ticket_id": _ticket_id(rng, split),
        "sku": _sku(rng, split),
        "name": rng.choice(_PEOPLE[split]),
        "company": rng.choice(_COMPANIES[split]),
        "reason": rng.choice(_REASON_TEXT[rng.choice(_REFUND_REASONS)]),
        "due": rng.choice(_DUE_TEXT).format(d=rng.choice(_DUE_DAYS)),
    }
    return [_user(_cap(question.format(**fields))), {"role": "assistant", "content": answer.format(**fields)}], [tool]


def _email(rng: _Rng, split: str, key_sentences: list[str], subject: str | None = None) -> str:
    n_fill = rng.randint(max(0, 3 - len(key_sentences)), 6 - len(key_sentences))
    fillers = rng.sample(_T["extract_filler"][split], n_fill)
    body = fillers[: n_fill // 2] + key_sentences + fillers[n_fill // 2 :]
    head = f"Subject: {subject}\n\n" if subject else rng.choice(["Hi team,\n", "Hello,\n", ""])
    sign = f"\n{rng.choice(_PEOPLE[split])}"
    return f"{rng.choice(_T['extract_intro'][split])}\n\n{head}{' '.join(body)}{sign}"


def _x_refund(rng: _Rng, split: str) -> _Built:
    args, f = _refund_args(rng, split)
    keys = [
        rng.choice([f"My order {f['order_id']} {f['reason']}.", f"Order {f['order_id']} {f['reason']}."]),
        rng.choice([f"I'd like a refund of {f['amount']}.", f"Please refund {f['amount']}."]),
    ]
    return [_user(_email(rng, split, keys)), _assistant_calls(rng, [("issue_refund", args)])], ["issue_refund"]


def _x_ticket(rng: _Rng, split: str) -> _Built:
    args, f = _ticket_args(rng, split)
    keys = [
        rng.choice([f"Please treat it as {f['prio']}.", f"I'd classify this as {f['prio']}."]),
        rng.choice([f"It should go to the {f['team']} team.", f"Please route it to {f['team']}."]),
    ]
    text = _email(rng, split, keys, subject=args["title"])
    return [_user(text), _assistant_calls(rng, [("create_ticket", args)])], ["create_ticket"]


def _x_invoice(rng: _Rng, split: str) -> _Built:
    args, f = _invoice_args(rng, split)
    keys = [
        f"We closed the deal with {f['company']}, customer id {f['customer_id']}.",
        rng.choice([f"The agreed amount is {f['money']}.", f"They will pay {f['money']}."]),
        f"Payment terms: {f['due']}.",
    ]
    text = _email(rng, split, keys)
    return [_user(text), _assistant_calls(rng, [("create_invoice", args)])], ["create_invoice"]


def _x_cancel(rng: _Rng, split: str) -> _Built:
    oid, notify = _order_id(rng, split), rng.random() < 0.5
    keys = [
        rng.choice([f"Please cancel order {oid}.", f"We no longer need order {oid}, cancel it please."]),
        rng.choice(_NOTIFY_SENTENCE[notify]),
    ]
    args = {"order_id": oid, "notify_customer": notify}
    return [_user(_email(rng, split, keys)), _assistant_calls(rng, [("cancel_order", args)])], ["cancel_order"]


def _p_orders(rng: _Rng, split: str) -> _Built:
    o1 = _order_id(rng, split)
    o2 = _order_id(rng, split, avoid=(o1,))
    text = _fmt(rng, split, "parallel_orders", o1=o1, o2=o2)
    calls = [("get_order_status", {"order_id": o1}), ("get_order_status", {"order_id": o2})]
    return [_user(text), _assistant_calls(rng, calls)], ["get_order_status"]


def _p_warehouses(rng: _Rng, split: str) -> _Built:
    sku = _sku(rng, split)
    wh1, wh2 = rng.sample(_WAREHOUSES, 2)
    text = _fmt(
        rng,
        split,
        "parallel_warehouses",
        sku=sku,
        wh1=rng.choice(_WAREHOUSE_TEXT[wh1]),
        wh2=rng.choice(_WAREHOUSE_TEXT[wh2]),
    )
    calls = [
        ("check_inventory", {"sku": sku, "warehouse": wh1}),
        ("check_inventory", {"sku": sku, "warehouse": wh2}),
    ]
    return [_user(text), _assistant_calls(rng, calls)], ["check_inventory"]


def _p_skus(rng: _Rng, split: str) -> _Built:
    sku1 = _sku(rng, split)
    sku2, wh = _sku(rng, split, avoid=(sku1,)), rng.choice(_WAREHOUSES)
    text = _fmt(rng, split, "parallel_skus", sku1=sku1, sku2=sku2, wh=rng.choice(_WAREHOUSE_TEXT[wh]))
    calls = [
        ("check_inventory", {"sku": sku1, "warehouse": wh}),
        ("check_inventory", {"sku": sku2, "warehouse": wh}),
    ]
    return [_user(text), _assistant_calls(rng, calls)], ["check_inventory"]


def _p_tickets(rng: _Rng, split: str) -> _Built:
    t1 = _ticket_id(rng, split)
    t2, status = _ticket_id(rng, split, avoid=(t1,)), rng.choice(_TICKET_STATUSES)
    text = _fmt(rng, split, "parallel_tickets", t1=t1, t2=t2, status=rng.choice(_STATUS_TEXT[status]))
    calls = [
        ("update_ticket_status", {"ticket_id": t1, "status": status}),
        ("update_ticket_status", {"ticket_id": t2, "status": status}),
    ]
    return [_user(text), _assistant_calls(rng, calls)], ["update_ticket_status"]


def _s_invoice(rng: _Rng, split: str) -> _Built:
    args, fields = _invoice_args(rng, split)
    first = _assistant_calls(rng, [("create_invoice", args)])
    invoice_id = _invoice_id(rng, split)
    result = {
        "invoice_id": invoice_id,
        "status": "open",
        "amount": args["amount"],
        "currency": args["currency"],
    }
    tool_msg = {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": json.dumps(result)}
    second = _assistant_calls(
        rng, [("reconcile_invoice", {"invoice_id": invoice_id, "payment_id": fields["payment_id"]})]
    )
    turns = [_user(_fmt(rng, split, "two_step_invoice", **fields)), first, tool_msg, second]
    return turns, ["create_invoice", "reconcile_invoice"]


def _s_refund(rng: _Rng, split: str) -> _Built:
    args, fields = _refund_args(rng, split)
    first = _assistant_calls(rng, [("get_order_status", {"order_id": args["order_id"]})])
    status = rng.choice(["delivered", "shipped"]) if args["reason"] != "not_received" else "shipped"
    result = {"order_id": args["order_id"], "status": status, "total": args["amount"], "currency": "USD"}
    tool_msg = {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": json.dumps(result)}
    second = _assistant_calls(rng, [("issue_refund", args)])
    turns = [_user(_fmt(rng, split, "two_step_refund", **fields)), first, tool_msg, second]
    return turns, ["get_order_status", "issue_refund"]


_BUILDERS: dict[str, list[tuple[Callable[[_Rng, str], _Built], int]]] = {
    "single": [(b, 1) for b in _SINGLE_BUILDERS],
    "no_tool": [(_b_no_tool, 1), (_b_missing_info, 1)],
    "extract": [(_x_refund, 1), (_x_ticket, 1), (_x_invoice, 1), (_x_cancel, 1)],
    "parallel": [(_p_orders, 2), (_p_warehouses, 1), (_p_skus, 1), (_p_tickets, 1)],
    "two_step": [(_s_invoice, 3), (_s_refund, 1)],
}


# Soft cap on len(json.dumps(row)); at roughly 3 to 3.5 characters per token for this JSON it keeps
# rows well under 450 tokens. Only distractor tools are dropped to meet it.
_MAX_ROW_CHARS = 1400


def _json_len(obj: object) -> int:
    return len(json.dumps(obj))


def _pick_tools(rng: _Rng, needed: list[str], messages: list[dict]) -> list[dict]:
    """Add distractor tools up to a random count, skipping any that would push the row past the budget.

    Distractors teach the model to choose among tools rather than call whichever one is shown, but
    each one costs prompt tokens, so long rows carry fewer of them.
    """
    k = max(len(needed), 2, rng.choice([2, 2, 3, 3, 4]))
    names = list(needed)
    size = _json_len({"messages": messages, "tools": [_TOOLS_BY_NAME[n] for n in names]})
    others = [name for name in _TOOLS_BY_NAME if name not in needed]
    for name in rng.sample(others, len(others)):
        if len(names) >= k:
            break
        extra = _json_len(_TOOLS_BY_NAME[name]) + 2
        if len(names) < 2 or size + extra <= _MAX_ROW_CHARS:
            names.append(name)
            size += extra
    rng.shuffle(names)
    return [copy.deepcopy(_TOOLS_BY_NAME[name]) for name in names]


def _kind_plan(rng: _Rng, n: int, weights: dict[str, float]) -> list[str]:
    """Allocate kinds by largest remainder so that small eval sets still contain every kind."""
    exact = {k: n * w for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    if n >= len(KINDS):
        for k in KINDS:
            counts[k] = max(counts[k], 1)
    by_remainder = sorted(KINDS, key=lambda k: (-(exact[k] - int(exact[k])), KINDS.index(k)))
    i = 0
    while sum(counts.values()) < n:
        counts[by_remainder[i % len(KINDS)]] += 1
        i += 1
    while sum(counts.values()) > n:
        counts[max(counts, key=lambda k: counts[k])] -= 1
    plan = [k for k in KINDS for _ in range(counts[k])]
    rng.shuffle(plan)
    return plan


def _generate_split(rng: _Rng, split: str, n: int) -> list[dict]:
    rows = []
    for kind in _kind_plan(rng, n, _TRAIN_KIND_WEIGHTS if split == "train" else _KIND_WEIGHTS):
        builders, weights = zip(*_BUILDERS[kind], strict=True)
        builder = rng.choices(builders, weights=weights)[0]
        turns, needed = builder(rng, split)
        messages = []
        if rng.random() < 0.5:
            messages.append({"role": "system", "content": rng.choice(_SYSTEM_PROMPTS)})
        messages.extend(turns)
        rows.append({"messages": messages, "tools": _pick_tools(rng, needed, messages), "kind": kind})
    return rows


def generate(
    seed: int = 0,
    n_train: int = 400,
    n_eval: int = 60,
    varied_titles: bool = False,
    title_words: Sequence[str] = (),
) -> tuple[list[dict], list[dict]]:
    """Return (train_rows, eval_rows); one seeded generator drives both so a seed fixes the whole set.

    ``varied_titles`` draws train ticket titles from hundreds of subject + symptom pairs instead of twelve
    fixed ones (a transfer set for a small student, which otherwise learns the twelve by heart). It is off by
    default so that a seed keeps naming the same rows, the demo's held-out set included.

    ``title_words`` (e.g. ``tokenizer_words``) goes further: each train title is 2-5 words drawn from it, so no
    title can be told from a list and the only way to write one is to copy it from the request. Words of the
    held-out titles are left out of it, so those stay unseen.
    """
    rng = _Rng(seed)
    rng.varied_titles = varied_titles
    rng.title_words = tuple(w for w in dict.fromkeys(title_words) if w.lower() not in _EVAL_TITLE_WORDS)
    if title_words and not rng.title_words:
        raise MoatforgeError("sample data: title_words holds no word outside the held-out titles; pass more words")
    return _generate_split(rng, "train", n_train), _generate_split(rng, "eval", n_eval)


def tokenizer_words(tokenizer, min_len: int = 3, max_len: int = 12) -> list[str]:
    """The lower-case whole words of a byte-level BPE vocabulary (tokens that start a word and hold only
    letters): some 20,000 for SmolLM2, a word pool for open titles without a word list from the network."""
    pattern = re.compile(rf"\u0120([a-z]{{{min_len},{max_len}}})")
    return sorted({m.group(1) for token in tokenizer.get_vocab() if (m := pattern.fullmatch(token))})


def _write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
    # Write-then-rename so a reader never sees a half-written file after a crash or a concurrent run.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_sample_data(
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_train: int = 400,
    n_eval: int = 60,
    varied_titles: bool = False,
    title_words: Sequence[str] = (),
) -> dict[str, pathlib.Path]:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, eval_rows = generate(
        seed=seed, n_train=n_train, n_eval=n_eval, varied_titles=varied_titles, title_words=title_words
    )
    paths = {"train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    _write_jsonl(paths["train"], train)
    _write_jsonl(paths["eval"], eval_rows)
    return paths


# ---------------------------------------------------------------------------------------------
# The dirty export: what a real chat/tool-call log dump looks like before curation. Additive to
# generate(): the clean rows are generate()'s train rows (a few with PII pasted into them), and the
# dirt is planted around them with a label per row, so a test can check that curation removes it.
# ---------------------------------------------------------------------------------------------

DIRT_KINDS = ("exact_dup", "near_dup", "junk", "leaked_eval")

_PII_LINES = [
    "Reach me at {first}.{last}@{company}.example.com or +1 415-555-01{n:02d}.",
    "You can also call {first} on +44 20 7946 0{n:03d} or write to {first}{n}@{company}-mail.example.org.",
    "Customer contact: {first}.{last}@{company}.example.com, card on file 4111 1111 1111 1111.",
]
_NEAR_SUFFIXES = ["!!", " ??", " ...", "!?"]


def _junk_rows() -> list[tuple[object, str]]:
    """Each junk row with the curate step expected to drop it; a ``str`` is a raw line, not a JSON object."""
    tool = _TOOLS_BY_NAME["get_order_status"]
    call = {"id": "call_0", "type": "function", "function": {"name": "get_order_status", "arguments": "{order_id:"}}
    return [
        ({"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "\u200b\u200b"}]}, "normalize"),
        ({"messages": [{"role": "assistant", "content": "Hello, how can I help?"}, {"role": "user", "content": "hi"}]}, "chat_validate"),
        ({"messages": [{"role": "user", "content": "Check order ORD-55555 please."}, {"role": "assistant", "content": None, "tool_calls": [call]}], "tools": [tool]}, "chat_validate"),
        ({"messages": [{"role": "user", "content": "Delete every order from last year."}, {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "drop_database", "arguments": "{}"}}]}], "tools": [tool]}, "chat_validate"),
        ({"messages": [{"role": "user", "content": "Are you there? Hello??"}]}, "chat_validate"),
        ({"text": "N/A"}, "quality"),
        ({"text": "#### EXPORT PAGE 3 OF 17 #### #### #### ####"}, "quality"),
        ({"ticket_id": "TCK-0000", "status": "closed"}, "read"),
        ('{"messages": [{"role": "user", "content": "Refund ORD-4', "read"),
    ]  # fmt: skip


def generate_dirty(
    seed: int = 0, n_train: int = 400, n_eval: int = 60, dirt: float = 0.25
) -> tuple[list[object], list[dict], dict]:
    """(export rows, eval rows, truth): ``generate()``'s data plus the dirt of a real export.

    About ``dirt`` x ``n_train`` rows are planted around the clean train rows: exact copies of clean rows
    (some with different export metadata), near copies (the same conversation re-exported with different
    punctuation and casing, which an exact hash misses), junk (empty and malformed conversations, tool
    calls to undeclared tools or with broken JSON arguments, text fragments, rows without content and a
    truncated line, which is a ``str`` in the list), and eval rows leaked into train. About one clean row in
    ten also gets an e-mail address, phone number or card number pasted into its user message: such rows
    are labelled ``clean_pii`` and should be kept, redacted. ``truth["labels"]`` has one label per export row
    (``clean``, ``clean_pii`` or one of ``DIRT_KINDS``) and ``truth["copy_of"]`` maps the position of each
    exact or near copy to the position of the clean row it copies. Every dict row carries ``export_row`` (its
    position), which curation keeps in ``meta``.

    The clean rows themselves contain natural repeats (the same small-talk question asked twice), which
    dedup removes too; the eval rows are exactly ``generate()``'s.
    """
    clean, eval_rows = generate(seed=seed, n_train=n_train, n_eval=n_eval)
    rng = random.Random(seed + 7919)
    rows: list[object] = []
    labels: list[str] = []
    sources: list[int | None] = []
    for row in clean:
        label = "clean"
        if row["kind"] in ("extract", "single") and rng.random() < 0.2:
            row = copy.deepcopy(row)
            user = next(m for m in row["messages"] if m["role"] == "user")
            first, last = rng.choice(_PEOPLE["train"]).lower().split()
            company = rng.choice(_COMPANIES["train"]).split()[0].lower()
            line = rng.choice(_PII_LINES).format(first=first, last=last, company=company, n=rng.randint(0, 99))
            user["content"] = f"{user['content']}\n{line}"
            label = "clean_pii"
        rows.append(row)
        labels.append(label)
        sources.append(None)

    n_dirt = round(dirt * n_train)
    n_exact, n_near, n_leak = round(n_dirt * 0.4), round(n_dirt * 0.3), max(1, round(n_dirt * 0.1))
    junk = _junk_rows()
    planted: list[tuple[object, str, int | None]] = []
    for i in range(n_exact):
        k = rng.randrange(n_train)
        source = copy.deepcopy(rows[k])
        if i % 2:
            source["exported_at"] = f"2025-0{1 + i % 9}-1{i % 10}T08:00:00Z"
        planted.append((source, "exact_dup", k))
    long_rows = [k for k in range(n_train) if rows[k]["kind"] in ("extract", "two_step")]
    for _ in range(n_near):
        k = rng.choice(long_rows)
        source = copy.deepcopy(rows[k])
        user = next(m for m in source["messages"] if m["role"] == "user")
        text = user["content"].rstrip(".?!")
        user["content"] = (text[:1].swapcase() + text[1:]) + rng.choice(_NEAR_SUFFIXES)
        planted.append((source, "near_dup", k))
    # Leak real test questions: a four-word "thanks, bye" exchange is too short for any n-gram check to call it
    # a leak (decontamination skips eval texts under five words, which would otherwise flag half a corpus).
    questions = [
        r for r in eval_rows if len(next(m for m in r["messages"] if m["role"] == "user")["content"].split()) >= 8
    ]
    for row in rng.sample(questions, min(n_leak, len(questions))):
        planted.append((copy.deepcopy(row), "leaked_eval", None))
    for i in range(max(len(junk), n_dirt - n_exact - n_near - n_leak)):
        planted.append((copy.deepcopy(junk[i % len(junk)][0]), "junk", None))
    rows_and_truth = list(zip(rows, labels, sources, strict=True))
    for item in planted:  # scatter the dirt through the export
        rows_and_truth.insert(rng.randint(0, len(rows_and_truth)), item)
    ids = {id(row): i for i, (row, _, _) in enumerate(rows_and_truth)}
    export: list[object] = []
    truth: dict = {"labels": [], "copy_of": {}}
    for i, (row, label, source) in enumerate(rows_and_truth):
        if isinstance(row, dict):
            row["export_row"] = i
        if source is not None:
            truth["copy_of"][i] = ids[id(rows[source])]
        export.append(row)
        truth["labels"].append(label)
    return export, eval_rows, truth


def junk_expected_step(row: object) -> str:
    """The curate step expected to drop a junk row from ``generate_dirty``."""
    for candidate, step in _junk_rows():
        if isinstance(row, dict) and isinstance(candidate, dict):
            if {k: v for k, v in row.items() if k != "export_row"} == candidate:
                return step
        elif row == candidate:
            return step
    raise ValueError("not a planted junk row")


def write_dirty_sample_data(
    out_dir: str | os.PathLike, seed: int = 0, n_train: int = 400, n_eval: int = 60, dirt: float = 0.25
) -> dict[str, pathlib.Path]:
    """``raw/export.jsonl`` (the dirty export, to curate), ``eval.jsonl`` and ``raw_truth.json`` (labels)."""
    out = pathlib.Path(out_dir)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    rows, eval_rows, truth = generate_dirty(seed=seed, n_train=n_train, n_eval=n_eval, dirt=dirt)
    paths = {"raw": out / "raw" / "export.jsonl", "eval": out / "eval.jsonl", "truth": out / "raw_truth.json"}
    fd, tmp = tempfile.mkstemp(dir=paths["raw"].parent, prefix=".export.jsonl.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
        os.replace(tmp, paths["raw"])
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    _write_jsonl(paths["eval"], eval_rows)
    paths["truth"].write_text(json.dumps(truth) + "\n", encoding="utf-8")
    return paths
