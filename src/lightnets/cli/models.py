"""``lightnets models``: every registered model, its hyperparameters and parameter counts."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from lightnets.jsonio import dumps
from lightnets.models import create_model, get_model_entry, list_models

#: The two settings whose parameter counts are listed: (variant, input size, classes).
SETTINGS = (("imagenet", 224, 1000), ("cifar", 32, 100))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        description="List every registered model (or only NAME ...): the paper it implements, "
        "its hyperparameters with defaults and allowed values, and its parameter count at the "
        "default hyperparameters for ImageNet (224 px, 1000 classes) and CIFAR (32 px, "
        "100 classes).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these models")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def count_parameters(name: str, variant: str, num_classes: int) -> int:
    """Parameters of ``name`` at its default hyperparameters (built on the meta device)."""
    with torch.device("meta"):
        model = create_model(name, variant=variant, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def describe_model(name: str) -> dict[str, Any]:
    """A plain-data description of model ``name`` (the JSON record of ``lightnets models``)."""
    entry = get_model_entry(name)
    hparams = {
        key: {
            "default": spec.default,
            "type": spec.kind.__name__,
            "choices": list(spec.choices) if spec.choices is not None else None,
            "positive": spec.positive,
            "help": spec.help,
        }
        for key, spec in entry.hparams.items()
    }
    params = {
        variant: {
            "input_size": [3, size, size],
            "num_classes": classes,
            "params": count_parameters(name, variant, classes),
        }
        for variant, size, classes in SETTINGS
    }
    return {"name": name, "paper": entry.paper, "hparams": hparams, "params": params}


def _format_hparam(key: str, spec: dict[str, Any]) -> str:
    if spec["choices"] is not None:
        return f"{key}={spec['default']} {{{','.join(str(c) for c in spec['choices'])}}}"
    return f"{key}={spec['default']}" + (" (>0)" if spec["positive"] else "")


def run(args: argparse.Namespace) -> int:
    names = args.names or list_models()
    records = [describe_model(name) for name in names]
    if args.json:
        print(dumps(records, indent=2))
        return 0

    from lightnets.tables import Column, rich_table, terminal_console

    rows = [
        [
            record["name"],
            "\n".join(_format_hparam(k, v) for k, v in record["hparams"].items()),
            f"{record['params']['imagenet']['params']:,}",
            f"{record['params']['cifar']['params']:,}",
        ]
        for record in records
    ]
    table = rich_table(
        [
            Column("model", no_wrap=True, style="bold"),
            "hyperparameters: default {allowed}",
            Column("ImageNet\n224 px\n1000 cls", "right", no_wrap=True),
            Column("CIFAR\n32 px\n100 cls", "right", no_wrap=True),
        ],
        rows,
        title="lightnets models: parameters at the default hyperparameters",
    )
    console = terminal_console(piped_width=None)
    console.print(table)
    for record in records:
        console.print(f"[bold]{record['name']}[/bold]: {record['paper']}", highlight=False)
    return 0
