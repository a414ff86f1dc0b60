"""``lightnets eval``: top-1/top-5 accuracy of a training checkpoint on a data set split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightnets.train.metrics import EvalResult

import argparse
import math
import sys

from lightnets.cli.common import add_threads_argument, threads_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightnets.data import DATASET_NAMES
    from lightnets.train.precision import AMP_MODES

    parser = subparsers.add_parser(
        "eval",
        description="Evaluate a training checkpoint (its EMA weights when it has them). The data "
        "set, its location and its validation split default to the checkpoint's.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="PATH", help="a checkpoint, e.g. RUN_DIR/best.pt")
    source.add_argument(
        "--weights",
        metavar="FILE",
        help="any weights file (torchvision / timm state dict, .safetensors): the model is read "
        "from it; pass --dataset unless it is a lightnets file that names one",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASET_NAMES,
        default=None,
        help="default: the data set the checkpoint was trained on",
    )
    parser.add_argument("--data-dir", default=None, help="where the data set lives")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--amp", choices=AMP_MODES, default="none")
    parser.add_argument("--per-class", action="store_true", help="also the accuracy of each class")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"top1", "top5", "loss", "images", "thread_policy"} (fractions; top5 null '
        "for 5 classes or fewer) as JSON",
    )
    add_threads_argument(parser)
    parser.set_defaults(func=run)


def _warn_at_chance(result: EvalResult, num_classes: int, split: str) -> None:
    """One line on stderr (stdout stays clean for --json) when top-1 is at chance level."""

    from lightnets.train.metrics import chance_warning

    warning = chance_warning(result.top1, num_classes, result.images, f"{split} top-1")
    if warning is not None:
        print(warning, file=sys.stderr)


def _qat_record(checkpoint: str) -> dict[str, Any] | None:
    """The checkpoint's quantization-aware training record (``train --qat-epochs``), or None
    (a `lightnets compress` file holds dense weights only)."""
    from lightnets.models.weights.compressed import is_compressed
    from lightnets.train.checkpoint import load_checkpoint

    if is_compressed(checkpoint):
        return None

    record = load_checkpoint(checkpoint).get("qat")
    return record if isinstance(record, dict) else None


def _scheme(qat: dict[str, Any]) -> str:
    return (
        f"QAT for {qat.get('backend')} ({qat.get('epochs')} epochs from epoch "
        f"{int(qat.get('start_epoch', 0)) + 1}), weights {qat.get('weights')}, activations "
        f"{qat.get('activations')}; computed as the runtime does (quantize/dequantize in PyTorch)"
    )


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def run(args: argparse.Namespace) -> int:
    from lightnets.analysis.threads import thread_record
    from lightnets.jsonio import dumps
    from lightnets.train.evaluate import evaluate_checkpoint

    held: list[str] = []  # said after the work: a bad file stays a one-line error
    choice = threads_from_args(args, announce=held.append)
    loaded = None
    if args.weights is not None:
        from lightnets.models.weights import model_from_file

        model, state = model_from_file(args.weights)
        loaded = (model, state or {})
    options = {
        "model_and_state": loaded,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "split": args.split,
        "batch_size": args.batch_size,
        "device": args.device,
        "per_class": args.per_class,
        "amp": args.amp,
    }
    result, classes = evaluate_checkpoint(args.checkpoint or args.weights, **options)
    for line in held:
        print(line, file=sys.stderr)
    _warn_at_chance(result, len(classes), args.split)
    if result.per_class is not None:
        from lightnets.train.metrics import unlearned_warning

        unlearned = unlearned_warning(result.top1, result.per_class, classes, result.images)
        if unlearned is not None:
            print(unlearned, file=sys.stderr)
    qat = _qat_record(args.checkpoint) if args.checkpoint else None
    int8: EvalResult | None = None
    scheme = ""
    if qat is not None:
        int8, _ = evaluate_checkpoint(args.checkpoint, **options, int8=True)
        scheme = _scheme(qat)
    if args.json:
        data = {**result.to_dict(), "thread_policy": thread_record(choice)}
        if result.per_class is not None:
            data["per_class"] = dict(zip(classes, result.per_class, strict=True))
        if int8 is not None:
            data["int8"] = {**int8.to_dict(), "scheme": scheme}
            if int8.per_class is not None:
                data["int8"]["per_class"] = dict(zip(classes, int8.per_class, strict=True))
        print(dumps(data))
        return 0
    from lightnets.tables import Column, rich_table, terminal_console

    console = terminal_console(piped_width=None)
    console.print(f"{args.checkpoint or args.weights}: {args.split} split", highlight=False)
    results = [result] if int8 is None else [result, int8]
    rows = [["top-1", *(_percent(r.top1) for r in results)]]
    if result.top5 is not None:  # None: 5 classes or fewer, where top-5 is always 100%
        rows.append(["top-5", *(_percent(r.top5) for r in results)])
    rows.append(["loss", *(f"{r.loss:.4f}" for r in results)])
    rows.append(["images", *(f"{r.images}" for r in results)])
    headers: list[Column | str] = ["metric", Column("value" if int8 is None else "fp32", "right")]
    if int8 is not None:
        headers.append(Column("int8", "right"))
        console.print(f"int8: {scheme}", highlight=False)
    console.print(rich_table(headers, rows))
    if result.per_class is not None:
        per_class = [
            [str(name), "-" if math.isnan(acc) else f"{100 * acc:.2f}%"]
            for name, acc in zip(classes, result.per_class, strict=True)
        ]
        console.print(rich_table(["class", Column("top-1", "right")], per_class))
    return 0
