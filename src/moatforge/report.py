"""``moatforge report RUN_DIR``: a Markdown report with PNG plots, for a person rather than a log reader.

Two kinds of folder:

* a training or distillation run directory (``metrics.jsonl`` + ``summary.json``): a summary table, loss and eval
  loss, tokens/s and cost over time;
* the quickstart folder (``<storage>/quickstart`` with ``results.json``): base, teacher and student side by side
  (accuracy, speed, size, what training cost and what serving costs per 1M generated tokens), a chart of accuracy
  against serving cost, and the teacher's and student's run reports when their run directories are at hand.

Serving cost per 1M generated tokens is an estimate from the evaluation's measured throughput:
replica USD per hour / (tokens/s x 3600) x 1e6, the replica billed as the cores the evaluation ran on at the
price table's ``cpu_core`` rate (``cost.prices``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from moatforge.errors import MoatforgeError
from moatforge.metrics import DEFAULT_PRICES

REPORT_FILE = "report.md"
PLOTS_DIR = "report"
MODELS = ("base", "teacher", "student")


# ---------------------------------------------------------------- numbers


def serving_usd_per_1m_tokens(tokens_per_s: float | None, usd_per_hour: float) -> float | None:
    """What one replica costs per million generated tokens at a measured throughput."""
    if not tokens_per_s or tokens_per_s <= 0:
        return None
    return usd_per_hour / (tokens_per_s * 3600.0) * 1e6


def _serving_rate(prices: dict[str, float] | None, cores: float | None) -> tuple[float, float]:
    cores = float(cores or os.cpu_count() or 1)
    return cores, cores * {**DEFAULT_PRICES, **(prices or {})}["cpu_core"]


def model_rows(results: dict, prices: dict[str, float] | None = None, cores: float | None = None) -> list[dict]:
    """One row per model of a quickstart ``results.json``: quality, speed, training and serving cost."""
    _, usd_per_hour = _serving_rate(prices, cores)
    training = {"teacher": results.get("train_summary") or {}, "student": results.get("distill_summary") or {}}
    rows = []
    for name in MODELS:
        r = results.get(name)
        if not r:
            continue
        summary = training.get(name, {})
        rows.append(
            {
                "model": name,
                "tool_call_accuracy": r.get("tool_call_accuracy"),
                "tokens_per_s": r.get("tokens_per_s"),
                "params": r.get("params"),
                "model_path": r.get("model_path"),
                "train_cost_usd": summary.get("cost_usd"),
                "train_usd_per_1m_tokens": summary.get("usd_per_1m_tokens"),
                "serve_usd_per_1m_tokens": serving_usd_per_1m_tokens(r.get("tokens_per_s"), usd_per_hour),
            }
        )
    return rows


def _usd(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def cost_summary(results: dict, prices: dict[str, float] | None = None, cores: float | None = None) -> str:
    """A few lines for the end of the quickstart: what each model cost to make and costs to serve."""
    cores, usd_per_hour = _serving_rate(prices, cores)
    rows = {r["model"]: r for r in model_rows(results, prices, cores)}
    lines = [
        f"[cost] serving estimates: one replica of {cores:g} CPU cores at ${usd_per_hour:.3f}/hour "
        "(cost.prices.cpu_core x cores), at the throughput measured in evaluation"
    ]
    for name in MODELS:
        r = rows.get(name)
        if r is None:
            continue
        made = ""
        if r["train_cost_usd"] is not None:
            verb = "distilled" if name == "student" else "fine-tuned"
            made = f"{verb} for {_usd(r['train_cost_usd'])} ({_usd(r['train_usd_per_1m_tokens'], 2)} per 1M tokens); "
        lines.append(
            f"[cost] {name:<8} {made}serves at ~{_usd(r['serve_usd_per_1m_tokens'], 2)} per 1M generated tokens, "
            f"tool-call accuracy {_pct(r['tool_call_accuracy'])}"
        )
    t, s = rows.get("teacher"), rows.get("student")
    if t and s and t["serve_usd_per_1m_tokens"] and s["serve_usd_per_1m_tokens"]:
        ratio = t["serve_usd_per_1m_tokens"] / s["serve_usd_per_1m_tokens"]
        delta = (s["tool_call_accuracy"] - t["tool_call_accuracy"]) * 100
        lines.append(
            f"[cost] student vs teacher: {ratio:.2f}x {'cheaper' if ratio >= 1 else 'dearer'} per generated token, "
            f"accuracy {delta:+.1f} points"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- reading


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MoatforgeError(f"cannot read {path}: {exc}") from None


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(metrics: list[dict], x: str, y: str) -> tuple[list, list]:
    points = [(m[x], m[y]) for m in metrics if m.get(x) is not None and m.get(y) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def run_plots(metrics: list[dict], out_dir: Path, prefix: str = "") -> dict[str, Path]:
    """loss (+ eval loss), tokens/s and cost over time; a plot is skipped when its series is absent."""
    plt = _pyplot()
    plots: dict[str, Path] = {}
    steps, loss = _series(metrics, "step", "loss")
    if steps:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot(steps, loss, label="train loss")
        es, ev = _series(metrics, "step", "eval_loss")
        if es:
            ax.plot(es, ev, "o-", label="eval loss")
        ax.set(xlabel="optimizer step", ylabel="loss (nats/token)", title="Loss")
        ax.grid(alpha=0.3)
        ax.legend()
        plots["loss"] = _save(fig, out_dir / f"{prefix}loss.png")
    steps, tps = _series(metrics, "step", "tokens_per_s")
    if steps:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot(steps, tps)
        ax.set(xlabel="optimizer step", ylabel="tokens / s", title="Training throughput")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        plots["throughput"] = _save(fig, out_dir / f"{prefix}throughput.png")
    elapsed, cost = _series(metrics, "elapsed_s", "cost_usd")
    if elapsed:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        minutes = [e / 60 for e in elapsed]
        ax.plot(minutes, cost, label="cost so far")
        pe, pc = _series(metrics, "elapsed_s", "projected_cost_usd")
        if pe:
            ax.plot([e / 60 for e in pe], pc, "--", label="projected run cost")
        ax.set(xlabel="wall time (min)", ylabel="USD", title="Cost over time")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        plots["cost"] = _save(fig, out_dir / f"{prefix}cost.png")
    return plots


def accuracy_cost_plot(rows: list[dict], path: Path) -> Path | None:
    points = [r for r in rows if r["serve_usd_per_1m_tokens"] is not None and r["tool_call_accuracy"] is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in points:
        ax.scatter(r["serve_usd_per_1m_tokens"], r["tool_call_accuracy"] * 100, s=60)
        label = f"{r['model']} ({(r['params'] or 0) / 1e6:.0f}M)"
        ax.annotate(
            label,
            (r["serve_usd_per_1m_tokens"], r["tool_call_accuracy"] * 100),
            xytext=(6, 6),
            textcoords="offset points",
        )
    ax.set(
        xlabel="serving cost, USD per 1M generated tokens (lower is better)",
        ylabel="tool-call accuracy, % (higher is better)",
        title="Accuracy against serving cost",
    )
    ax.set_xlim(left=0)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------- Markdown


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "usd":
        return _usd(value)
    if kind == "pct":
        return _pct(value)
    if kind == "s":
        return f"{value:,.1f} s"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _image(path: Path, base: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(base).as_posix()})"


def run_section(run_dir: Path, base: Path, prefix: str = "", heading: str = "##") -> list[str]:
    summary = _read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    metrics = read_metrics(run_dir)
    name = summary.get("run_name") or run_dir.name
    lines = [f"{heading} Run `{name}`", ""]
    if summary:
        fields = [
            ("Status", summary.get("status"), ""),
            ("Steps", f"{summary.get('steps')} / {summary.get('total_steps')}", ""),
            ("Tokens trained", summary.get("tokens"), ""),
            ("Wall time", summary.get("wall_time_s"), "s"),
            ("Cost", summary.get("cost_usd"), "usd"),
            ("USD per 1M trained tokens", summary.get("usd_per_1m_tokens"), "usd"),
            ("Goodput", summary.get("goodput"), "pct"),
            ("MFU (mean)", summary.get("mfu_mean"), "pct"),
            ("Final loss", summary.get("final_loss"), ""),
            ("Final eval loss", summary.get("final_eval_loss"), ""),
            ("Restarts", summary.get("restarts"), ""),
            ("Model", summary.get("final_model"), ""),
        ]
        lines += ["| | |", "|---|---|", *(f"| {k} | {_fmt(v, kind)} |" for k, v, kind in fields), ""]
    plots = run_plots(metrics, base / PLOTS_DIR, prefix)
    if not metrics:
        lines += ["No metrics.jsonl in this run directory yet.", ""]
    for key, alt in (("loss", "loss and eval loss"), ("throughput", "tokens per second"), ("cost", "cost")):
        if key in plots:
            lines += [_image(plots[key], base, alt), ""]
    return lines


def quickstart_section(home: Path, results: dict) -> list[str]:
    rows = model_rows(results)
    lines = [
        "# moatforge quickstart report",
        "",
        "Base model, fine-tuned teacher and distilled student on the same held-out tool-calling set.",
        "",
        "| Model | Tool-call accuracy | Tokens/s | Parameters | Training cost | USD / 1M trained tokens "
        "| Serving USD / 1M generated tokens (est.) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {_pct(r['tool_call_accuracy'])} | {_fmt(r['tokens_per_s'])} | {_fmt(r['params'])} "
            f"| {_usd(r['train_cost_usd'])} | {_usd(r['train_usd_per_1m_tokens'], 2)} "
            f"| {_usd(r['serve_usd_per_1m_tokens'], 2)} |"
        )
    lines += ["", "```", cost_summary(results), "```", ""]
    chart = accuracy_cost_plot(rows, home / PLOTS_DIR / "accuracy_vs_cost.png")
    if chart is not None:
        lines += [_image(chart, home, "accuracy against serving cost"), ""]
    for key, prefix in (("train_summary", "teacher_"), ("distill_summary", "student_")):
        run_dir = (results.get(key) or {}).get("run_dir")
        if run_dir and Path(run_dir).is_dir():
            lines += run_section(Path(run_dir), home, prefix)
    return lines


def write_report(path) -> Path:
    """Write ``report.md`` (plots under ``report/``) into a run directory or the quickstart folder."""
    home = Path(path).expanduser().resolve()
    if not home.is_dir():
        raise MoatforgeError(f"{path} is not a directory (give a run directory or <storage>/quickstart)")
    if (home / "results.json").is_file():
        lines = quickstart_section(home, _read_json(home / "results.json"))
    elif (home / "summary.json").is_file() or (home / "metrics.jsonl").is_file():
        lines = ["# moatforge run report", "", *run_section(home, home)]
    else:
        raise MoatforgeError(
            f"{path} has no summary.json, metrics.jsonl or results.json: give a training/distillation run directory "
            "(<run.storage_path>/<run.name>) or the quickstart folder (<run.storage_path>/quickstart)"
        )
    out = home / REPORT_FILE
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out
