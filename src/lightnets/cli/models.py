"""``lightnets models``: every registered model, its hyperparameters and parameter counts.

Describing the zoo needs the registry, and the registry needs PyTorch (the families' modules
define their ``nn.Module`` classes beside their facts): importing torch alone takes longer than
the whole listing may. So the listing of the built-in zoo is also kept as data,
``models_catalog.json`` beside this module, written by ``python -m lightnets.cli.models``
(:func:`write_catalog`) and stamped with a digest of the sources it was made from (the modules
of :mod:`lightnets.models`). ``lightnets models`` prints the catalog when its digest is that of
the installed sources and every NAME asked for is in it; otherwise it describes the models from
the live registry, so an edited family is never listed stale. tests/test_cli_models.py checks
the catalog record for record against the registry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from lightnets.jsonio import dumps

#: The catalog of the built-in zoo (see the module docstring).
CATALOG = Path(__file__).with_name("models_catalog.json")
#: The sources the descriptions come from: the registry, the families and what they build on.
#: (``lightnets.models.weights`` reads files; it changes no description.)
SOURCES = Path(__file__).parents[1] / "models"

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
    import torch

    from lightnets.models import create_model

    with torch.device("meta"):
        model = create_model(name, variant=variant, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def describe_model(name: str) -> dict[str, Any]:
    """A plain-data description of model ``name`` (the JSON record of ``lightnets models``)."""
    from lightnets.models import get_model_entry

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


def sources_digest() -> str:
    """SHA-256 over the names and bytes of the modules in :data:`SOURCES`, in name order."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def live_records(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Descriptions of ``names`` (default: the whole zoo) from the registry."""
    from lightnets.models import list_models

    return [describe_model(name) for name in (names or list_models())]


def write_catalog(path: Path = CATALOG) -> None:
    """Write the catalog of the whole zoo, stamped with :func:`sources_digest`."""
    catalog = {"sources_digest": sources_digest(), "models": live_records()}
    path.write_text(dumps(catalog, indent=1) + "\n")


def catalog_records(names: list[str] | None = None) -> list[dict[str, Any]] | None:
    """Descriptions of ``names`` from the catalog; None when it is missing, stale or lacks one."""
    try:
        catalog = json.loads(CATALOG.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(catalog, dict) or catalog.get("sources_digest") != sources_digest():
        return None
    by_name = {record["name"]: record for record in catalog["models"]}
    if names and not set(names) <= set(by_name):
        return None  # the registry's own error names the unknown model
    return [by_name[name] for name in names] if names else list(catalog["models"])


def run(args: argparse.Namespace) -> int:
    records = catalog_records(args.names) or live_records(args.names)
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


if __name__ == "__main__":
    write_catalog()
    print(f"wrote {CATALOG}")
