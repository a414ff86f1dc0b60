"""int8 top-1 of every zoo family on Fashion-MNIST: fp32, post-training quantization per tensor
and per channel, and quantization-aware training, for each installed int8 method (issue 21).

For each family (CIFAR variant, 10 classes) the script trains an fp32 network with ``lightnets
train`` on Fashion-MNIST (by default the full 60,000 training images, no validation carve-out,
long enough for >= 90% fp32 top-1; the recipe ``train`` picks for that length, with the
family's values, so SqueezeNet trains with BatchNorm, folded into its convolutions in every
int8 file), then, for each installed method:

- PTQ per-tensor and PTQ per-channel (``lightnets.deploy.quantize``, 300 calibration images
  from the training set, ``per_channel=False`` / ``True``);
- QAT (``lightnets.deploy.qat.finetune_qat``: the library's default fine-tune, 10% of the run's
  epochs and 1% of its peak lr, BatchNorm frozen after half; every method QAT supports; one
  fine-tune serves the methods that share a quantizer, onnxruntime and openvino),

and measures top-1 of the file each writes, run in its own runtime, on the first
``--eval-images`` images of the test split (10,000: all of it), beside eager fp32 on the same
images; and the wall time each step took. onnxruntime and openvino quantize weights in 7 bits
where this CPU lacks VNNI (their u8 x s8 kernels saturate there; ``--no-reduce-range`` measures
what 8-bit weights cost on such a CPU, ``--reduce-range`` what 7 bits cost on one with VNNI).
One table, printed and (``--json``) written, then
whether each family met the issue's targets (fp32 >= 90%; QAT within 0.3 point of fp32).

With ``--out DIR`` the trained checkpoints and each finished (family, method) row are kept there
(``DIR/<family>/``, ``DIR/results.jsonl``): rerunning with the same settings reuses them, so a
run of hours can be done a family at a time and an interrupted one continues where it stopped.

    python benchmarks/int8_accuracy.py                      # the full run (hours on 2 cores)
    python benchmarks/int8_accuracy.py --families mobilenet_v2 --width-mult 0.5 \\
        --train-subset 6000 --epochs 3 --eval-images 2000  # a reduced run: say so with its table
    python benchmarks/int8_accuracy.py --families shufflenet_v2 --epochs 5 --out runs/int8
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: The zoo families at the widths the issue names (CIFAR stem: 32 x 32 Fashion-MNIST).
FAMILIES: dict[str, dict[str, Any]] = {
    "squeezenet1_1": {},
    "mobilenet_v1": {"width_mult": 1.0},
    "mobilenet_v2": {"width_mult": 1.0},
    "shufflenet_v1": {"groups": 3},
    "shufflenet_v2": {"width_mult": 1.0},
}
METHODS = ("executorch", "litert", "openvino", "onnxruntime")
SUFFIX = {"executorch": ".pte", "litert": ".tflite", "openvino": ".xml", "onnxruntime": ".onnx"}


def installed(method: str) -> bool:
    from lightnets.deploy.quantization import get_method
    from lightnets.errors import LightnetsError

    try:
        get_method(method)
    except LightnetsError:
        return False
    return True


def train_fp32(
    family: str, hparams: dict, resolved: Any, args: argparse.Namespace, folder: Path
) -> tuple:
    """(checkpoint path, summary, seconds) of the fp32 run: ``resolved`` is the family's recipe
    for this length (``resolve``), whose first line names the family's values it used."""
    from lightnets.train.config import TrainConfig, flag_for
    from lightnets.train.trainer import finished_summary, train

    config = TrainConfig(
        model=family,
        model_hparams=hparams,
        output=str(folder / family),
        dataset="fashion-mnist",
        val_size=0,
        train_subset=args.train_subset,
        recipe=resolved.recipe,
        recipe_source=resolved.describe(flag_for),
        seed=0,
    )
    checkpoint = Path(config.output) / "last.pt"
    summary = finished_summary(config)
    if summary is not None:
        print(f"{family}: reusing the finished run in {config.output}", flush=True)
    else:
        summary = train(config, resume=checkpoint.is_file())
    return checkpoint, summary, training_seconds(Path(config.output))


def resolve(family: str, hparams: dict, args: argparse.Namespace) -> Any:
    """The recipe ``lightnets train`` gives a run of this length, the family's values included
    (SqueezeNet's AdamW at lr 0.001, and BatchNorm for its one-cycle runs)."""
    from lightnets.train.recipes import resolve_recipe

    return resolve_recipe(family, epochs=args.epochs, lr=args.lr, model_hparams=hparams)


def training_seconds(run: Path) -> float:
    """The run's epochs' wall time (metrics.jsonl), also across an interrupted and resumed run."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return sum(json.loads(line)["seconds"] for line in lines if line.strip())


def reduce_range(method: str, args: argparse.Namespace) -> bool:
    """7-bit weights for ``method``: ``--reduce-range`` (for the methods it applies to) or this
    CPU's default."""
    from lightnets.train.qat import QAT_BACKENDS, check_reduce_range

    given = args.reduce_range if QAT_BACKENDS[method].u8s8_kernels else None
    return check_reduce_range(method, given, "--reduce-range")


def settings(family: str, hparams: dict, method: str, args: argparse.Namespace) -> dict:
    """What makes a row: a stored row is reused only when all of these are equal."""
    return {
        "family": family,
        "hparams": hparams,
        "method": method,
        "epochs": args.epochs,
        "lr": args.lr,
        "train_images": args.train_subset or 60000,
        "eval_images": args.eval_images,
        "calibration_images": args.calibration_images,
        "reduce_range": reduce_range(method, args),
    }


def stored_rows(folder: Path) -> list[dict]:
    path = folder / "results.jsonl"
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def measure(
    family: str, hparams: dict, resolved: Any, args: argparse.Namespace, folder: Path
) -> list[dict]:
    from lightnets.deploy.qat import QAT_METHODS, finetune_qat, remove_qat_run
    from lightnets.deploy.quantization import calibration_data, calibration_source, quantize
    from lightnets.train.checkpoint import model_from_checkpoint
    from lightnets.train.qat import QAT_BACKENDS

    done = {json.dumps(r["settings"], sort_keys=True): r for r in stored_rows(folder)}
    keys = {m: json.dumps(settings(family, hparams, m, args), sort_keys=True) for m in args.methods}
    if all(key in done for key in keys.values()):
        rows = [done[keys[m]] for m in args.methods]
        for row in rows:
            print(format_row(row) + " (stored)", flush=True)
        return rows
    checkpoint, summary, train_s = train_fp32(family, hparams, resolved, args, folder)
    model, state = model_from_checkpoint(checkpoint)
    size = tuple(state["dataset"]["input_size"])
    source, kwargs = calibration_source(state, None, None)
    calib, evals, _ = calibration_data(
        source,
        input_size=size,
        calibration_images=args.calibration_images,
        eval_images=args.eval_images,
        **kwargs,
    )
    rows = []
    finetuned: dict[str, tuple[Any, float]] = {}  # method -> (QatResult, fine-tune seconds)
    for method in args.methods:
        if keys[method] in done:
            rows.append(done[keys[method]])
            print(format_row(rows[-1]) + " (stored)", flush=True)
            continue
        row: dict[str, Any] = {
            "family": family,
            "hparams": hparams,
            "method": method,
            "train_s": train_s,
            "epochs": args.epochs,
            "fp32_test_top1_all": summary.get("test_top1"),
            "settings": settings(family, hparams, method, args),
            "reduce_range": reduce_range(method, args),
        }
        schemes = [("ptq_per_tensor", False), ("ptq_per_channel", True)]
        for key, per_channel in schemes:
            start = time.perf_counter()
            report = quantize(
                model,
                folder / f"{family}_{method}_{key}{SUFFIX[method]}",
                calib,
                evals,
                size,
                method=method,
                calibration_name=source,
                per_channel=per_channel,
                reduce_range=row["reduce_range"],
            )
            row[key] = report.int8_top1
            row[f"{key}_s"] = time.perf_counter() - start
            row["fp32"] = report.fp32_top1
            row["eval_images"] = report.eval_images
            row[f"{key}_scheme"] = report.scheme
        if method in QAT_METHODS:
            # Runtimes sharing one quantizer (onnxruntime, openvino) share one fine-tune.
            shared = [m for m in finetuned if QAT_BACKENDS[method].quantizes_like(QAT_BACKENDS[m])]
            if shared:
                qat, finetune_s = finetuned[shared[0]]
                row["qat_finetune_of"] = shared[0]
            else:
                # A run directory, not a temporary one: an interrupted fine-tune resumes.
                run_dir = folder / f"{family}_{method}_qat-run"
                rerun = shlex.join(["python", *sys.argv])
                qat = finetune_qat(
                    checkpoint,
                    state,
                    method,
                    run_dir=run_dir,
                    continue_with=f"the same command ({rerun})",
                    reduce_range=row["reduce_range"],
                )
                finetune_s = qat.wall_time_s
                finetuned[method] = qat, finetune_s
            start = time.perf_counter()
            report = quantize(
                model,
                folder / f"{family}_{method}_qat{SUFFIX[method]}",
                calib,
                evals,
                size,
                method=method,
                qat=qat,
            )
            remove_qat_run(folder / f"{family}_{method}_qat-run")
            row["qat"] = report.int8_top1
            row["qat_s"] = finetune_s + time.perf_counter() - start
            row["qat_finetune_s"] = finetune_s
            row["qat_scheme"] = report.scheme
        rows.append(row)
        with open(folder / "results.jsonl", "a", encoding="utf-8") as stored:
            stored.write(json.dumps(row) + "\n")
        print(format_row(row), flush=True)
    return rows


def targets(rows: list[dict]) -> list[str]:
    """One line per family: fp32 >= 90% on the test images, QAT within 0.3 point of fp32."""
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        fp32 = mine[0]["fp32"]
        line = f"{family}: fp32 {fp32:.2f}% ({'meets' if fp32 >= 90 else 'below'} the 90% bar)"
        for r in mine:
            if "qat" in r:
                gap = r["qat"] - fp32
                verdict = "within" if gap >= -0.3 else "outside"
                line += f"; QAT {r['method']} {gap:+.2f} ({verdict} 0.3)"
        lines.append(line)
    return lines


def cell(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    return f"{row[key]:.2f} ({row[key] - row['fp32']:+.2f}; {row[f'{key}_s']:.0f} s)"


def format_row(row: dict) -> str:
    name = row["family"] + "".join(f" {k}={v}" for k, v in row["hparams"].items())
    method = row["method"] + (" (7-bit weights)" if row.get("reduce_range") else "")
    return (
        f"| {name} | {method} | {row['fp32']:.2f} ({row['train_s']:.0f} s) | "
        f"{cell(row, 'ptq_per_tensor')} | {cell(row, 'ptq_per_channel')} | {cell(row, 'qat')} |"
    )


HEADER = (
    "| family | method | fp32 top-1 % (train time) | PTQ per-tensor (change; time) | "
    "PTQ per-channel (change; time) | QAT (change; time) |\n|---|---|---:|---:|---:|---:|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--methods", default=",".join(METHODS), help="those installed are run")
    parser.add_argument("--width-mult", type=float, default=None, help="override (reduced run)")
    parser.add_argument("--train-subset", type=int, default=None, help="default: all 60,000")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--eval-images", type=int, default=10000)
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="7-bit weights for onnxruntime and openvino (default: where this CPU lacks VNNI)",
    )
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--out", default=None, metavar="DIR", help="keep runs and rows; resume")
    args = parser.parse_args()
    from lightnets.analysis.machine import has_int8_dot_product

    if args.threads:
        torch.set_num_threads(args.threads)
    args.methods = [m for m in args.methods.split(",") if installed(m)]
    families = args.families.split(",")
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        sys.exit(f"unknown family {', '.join(unknown)}; allowed: {', '.join(FAMILIES)}")
    conditions = {
        "families": families,
        "width_mult": args.width_mult,
        "train_images": args.train_subset or 60000,
        "epochs": args.epochs,
        "eval_images": args.eval_images,
        "calibration_images": args.calibration_images,
        "methods": args.methods,
        "torch_threads": torch.get_num_threads(),
        "cpu_int8_dot_product": has_int8_dot_product(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(f"conditions: {conditions}", flush=True)
    print(HEADER, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-accuracy-") as scratch:
        folder = Path(args.out) if args.out else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for family in families:
            hparams = dict(FAMILIES[family])
            if args.width_mult is not None and "width_mult" in hparams:
                hparams["width_mult"] = args.width_mult
            resolved = resolve(family, hparams, args)
            hparams = {**resolved.model_hparams, **hparams}
            rows += measure(family, hparams, resolved, args, folder)
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row))
    print("\n".join(["", *targets(rows)]))
    if args.json:
        from lightnets.fileio import write_text_atomic
        from lightnets.jsonio import dumps

        write_text_atomic(args.json, dumps({"conditions": conditions, "rows": rows}, indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # --out keeps the finished rows and every training run's exact position (the trainer
        # saves it on Ctrl-C): the fp32 run's and a QAT fine-tune's (DIR/<family>_<method>_qat-run).
        print("interrupted: rerun the same command (with --out) to continue", file=sys.stderr)
        sys.exit(130)
