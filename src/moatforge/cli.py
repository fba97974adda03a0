"""Argument parsing only: ``moatforge <verb> --config FILE key=value ...``.

Every user-facing failure arrives here as a MoatforgeError and leaves as one line on stderr with exit 2.
"""

from __future__ import annotations

import argparse
import sys

from moatforge.errors import MoatforgeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moatforge", description="Own your model: curate, train, distill, serve.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    train = verbs.add_parser("train", help="fine-tune a model on Ray Train + DeepSpeed")
    train.add_argument("--config", help="YAML config file (see jobs/configs/)")
    train.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=1e-4")
    curate = verbs.add_parser("curate", help="clean raw exports on Ray Data: dedup, quality, PII, decontamination")
    curate.add_argument("--config", help="YAML config file with a curate: section")
    curate.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. curate.input=raw/")
    distill = verbs.add_parser("distill", help="train a small student on a fine-tuned teacher's outputs")
    distill.add_argument("--config", help="YAML config file with a distill: section (see jobs/configs/)")
    distill.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. distill.student=prune:12")
    aug = verbs.add_parser(
        "augment", help="a wider distillation transfer set: requests reworded, answered by the teacher"
    )
    aug.add_argument("--teacher", required=True, help="model reference of the teacher (e.g. a run's final/model)")
    aug.add_argument("--data", required=True, help="JSONL of conversations ending in an assistant turn")
    aug.add_argument("--out", required=True, help="JSONL to write: reworded rows with the teacher's answers")
    aug.add_argument("--variants", type=int, default=1, help="reworded copies per row")
    aug.add_argument("--swap-rate", type=float, default=0.2, help="share of swappable words replaced per copy")
    aug.add_argument("--seed", type=int, default=0)
    aug.add_argument("--batch-size", type=int, default=12, help="prompts the teacher answers together")
    aug.add_argument("--limit", type=int, default=None, help="reword only the first N rows")
    quick = verbs.add_parser("quickstart", help="the demo: sample data, LoRA fine-tune, accuracy before and after")
    quick.add_argument("--config", help="optional YAML config for the demo's fine-tune")
    quick.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    sample = verbs.add_parser("sample-data", help="write the demo's tool-calling train/eval JSONL files")
    sample.add_argument("--out", required=True, help="output folder")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--train-rows", type=int, default=400)
    sample.add_argument("--eval-rows", type=int, default=60)
    sample.add_argument(
        "--varied-titles",
        action="store_true",
        help="draw train ticket titles from hundreds of combinations instead of 12 (a distillation transfer set)",
    )
    sample.add_argument(
        "--open-titles",
        action="store_true",
        help="train ticket titles of 2-5 random words from SmolLM2's vocabulary, so a model must copy them "
        "(overrides --varied-titles)",
    )
    srv = verbs.add_parser("serve", help="serve a model on Ray Serve behind an OpenAI-compatible API")
    srv.add_argument(
        "--config", help="moatforge config with a serve: group, or a Serve YAML such as serve/student.yaml"
    )
    srv.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. serve.model=DIR serve.port=8000")
    ev = verbs.add_parser("eval", help="tool-call accuracy of a model on a held-out chat set")
    ev.add_argument("--model", help="model reference (alias, HF directory or hub id); optional with --predictions")
    ev.add_argument("--data", required=True, help="held-out JSONL of conversations")
    ev.add_argument("--out", help="write eval.json here")
    ev.add_argument("--limit", type=int, default=None, help="score only the first N rows")
    ev.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: the longest reference answer's length + 16 tokens"
    )
    ev.add_argument("--batch-size", type=int, default=8, help="prompts generated together")
    ev.add_argument(
        "--predictions", help="JSONL of assistant outputs, one per eval row: score them instead of generating"
    )
    rep = verbs.add_parser("report", help="Markdown report with plots of a run directory or the quickstart folder")
    rep.add_argument("run_dir", help="<run.storage_path>/<run.name>, or <run.storage_path>/quickstart")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except MoatforgeError as exc:
        print(f"moatforge {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"moatforge {args.verb}: interrupted", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    from moatforge.config import load_config

    if args.verb == "train":
        from moatforge.train.run import run_training

        summary = run_training(load_config(args.config, args.overrides))
        print(f"[train] {summary['status']}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}")
        print(f"[train] model: {summary['final_model']}")
        return 0
    if args.verb == "curate":
        from moatforge.curate.pipeline import run_curate
        from moatforge.metrics import wait_for_metrics_export

        cfg = load_config(args.config, args.overrides)
        run_curate(cfg)
        wait_for_metrics_export(cfg.cluster.address)
        return 0
    if args.verb == "distill":
        from moatforge.distill.run import run_distill

        summary = run_distill(load_config(args.config, args.overrides))
        print(f"[distill] {summary['status']}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}")
        print(f"[distill] student model: {summary['final_model']}")
        return 0
    if args.verb == "augment":
        from moatforge.distill.augment import run_augment

        summary = run_augment(
            args.teacher,
            args.data,
            args.out,
            variants=args.variants,
            rate=args.swap_rate,
            seed=args.seed,
            batch_size=args.batch_size,
            limit=args.limit,
        )
        print(
            f"[augment] {summary.rows_out} rows written to {args.out} from {summary.rows_in} "
            f"({summary.words_swapped} words swapped; skipped: {summary.no_swappable_word} with no swappable "
            f"word, {summary.unparseable_answers} with a malformed teacher answer, {summary.truncated_answers} with "
            f"an answer cut off by the token budget)"
        )
        return 0
    if args.verb == "quickstart":
        from moatforge.quickstart import quickstart_config, run_quickstart

        run_quickstart(load_config(args.config, args.overrides) if args.config else quickstart_config(args.overrides))
        return 0
    if args.verb == "sample-data":
        from moatforge.sample_data import tokenizer_words, write_sample_data

        words: list[str] = []
        if args.open_titles:
            from moatforge.models import load_tokenizer, smollm2_tokenizer_dir

            words = tokenizer_words(load_tokenizer(smollm2_tokenizer_dir()))
        paths = write_sample_data(
            args.out,
            seed=args.seed,
            n_train=args.train_rows,
            n_eval=args.eval_rows,
            varied_titles=args.varied_titles,
            title_words=words,
        )
        for name, path in paths.items():
            print(f"{name}: {path}")
        return 0
    if args.verb == "eval":
        from moatforge.evaluate import run_eval

        result = run_eval(
            args.model,
            args.data,
            out=args.out,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            predictions=args.predictions,
        )
        print(result)
        return 0
    if args.verb == "report":
        from moatforge.report import write_report

        print(f"[report] {write_report(args.run_dir)}")
        return 0
    if args.verb == "serve":
        from moatforge.serve.run import load_serve_config, run_serve

        return run_serve(load_serve_config(args.config, args.overrides))
    raise AssertionError(args.verb)
