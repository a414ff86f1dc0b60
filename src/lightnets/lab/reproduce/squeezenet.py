"""SqueezeNet (Iandola et al. 2016): the architecture's dimensions (Table 1) and Deep
Compression's sizes (Table 2), compressed here by :func:`lightnets.deploy.compression.compress`
on torchvision's trained weights when ``--weights-dir`` holds them, else on random weights
(sizes only: random weights do not compress like trained ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightnets.data.download import file_digest
from lightnets.lab.reproduce.common import Context, count
from lightnets.lab.reproduce.report import (
    SectionResult,
    Table,
    compare_count,
    integer_text,
    number,
    verdict,
)

ID = "squeezenet"
TITLE = "SqueezeNet"
PAPER = "SqueezeNet (Iandola et al. 2016, arXiv:1602.07360)"

#: Table 1 (SqueezeNet v1.0): layer, output size (height, width, channels) and parameters
#: before pruning (None for pooling layers).
PAPER_TABLE1: tuple[tuple[str, tuple[int, int, int], int | None], ...] = (
    ("conv1", (111, 111, 96), 14_208),
    ("maxpool1", (55, 55, 96), None),
    ("fire2", (55, 55, 128), 11_920),
    ("fire3", (55, 55, 128), 12_432),
    ("fire4", (55, 55, 256), 45_344),
    ("maxpool4", (27, 27, 256), None),
    ("fire5", (27, 27, 256), 49_440),
    ("fire6", (27, 27, 384), 104_880),
    ("fire7", (27, 27, 384), 111_024),
    ("fire8", (27, 27, 512), 188_992),
    ("maxpool8", (13, 13, 512), None),
    ("fire9", (13, 13, 512), 197_184),
    ("conv10", (13, 13, 1000), 513_000),
    ("avgpool10", (1, 1, 1000), None),
)
PAPER_TOTAL_PARAMS = 1_248_424
#: Table 1's sizes follow from a 227x227 input (Caffe's crop), not the 224 it prints.
INPUT_SIZE = 227
MIB = 1 << 20
#: Table 2: SqueezeNet 1.0's size in MB (which are MiB: 1,248,424 x 4 bytes = 4.76 MiB),
#: uncompressed and after Deep Compression at 8 and 6 bits; top-1 57.5% in all three.
PAPER_SIZES_MIB: dict[str, float] = {"fp32": 4.8, "8-bit": 0.66, "6-bit": 0.47}
PAPER_TOP1 = 57.5
#: The title's claim, "< 0.5 MB model size".
CLAIM_BYTES = 500_000
#: Deep Compression as the paper applies it (Section 4): a third of the weights kept.
DENSITY = 0.33
WEIGHT_FILES = {"squeezenet1_0": "squeezenet1_0*.pth", "squeezenet1_1": "squeezenet1_1*.pth"}


def weight_files(weights_dir: Path | None) -> dict[str, Path]:
    """torchvision's SqueezeNet files in ``weights_dir`` (``squeezenet1_0-*.pth``, ...)."""
    found: dict[str, Path] = {}
    if weights_dir is None:
        return found
    for name, pattern in WEIGHT_FILES.items():
        matches = sorted(weights_dir.glob(pattern))
        if matches:
            found[name] = matches[0]
    return found


def inputs(ctx: Context) -> dict[str, Any]:
    files = weight_files(ctx.weights_dir)
    return {
        name: file_digest(files[name], "sha256") if name in files else None for name in WEIGHT_FILES
    }


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        ID,
        TITLE,
        PAPER,
        "The layer dimensions and parameter counts of Table 1, and Deep Compression's sizes "
        "(Table 2): the title's '< 0.5 MB model size'.",
    )
    result.tables.append(table1())
    table, conditions = compression(ctx)
    result.tables.append(table)
    result.conditions.update(conditions)
    return result


def _our_layers(model: Any) -> list[tuple[str, Any]]:
    """The model's top-level layers that Table 1 lists (convolutions, pools, Fire modules), as
    (module path, module), in order."""
    from torch import nn

    from lightnets.models.squeezenet import Fire

    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d, Fire)
    return [
        (f"{parent}.{index}", module)
        for parent in ("features", "classifier")
        for index, module in enumerate(getattr(model, parent))
        if isinstance(module, kinds)
    ]


def table1() -> Table:
    from lightnets.models import create_model

    model = create_model("squeezenet1_0")
    prof = count("squeezenet1_0", INPUT_SIZE)
    table = Table(
        "squeezenet.table1",
        "Table 1: SqueezeNet v1.0's layers",
        f"lightnets.profile of squeezenet1_0 at {INPUT_SIZE}x{INPUT_SIZE} (Table 1's sizes "
        "follow from 227 px, Caffe's crop, although it prints 224): each layer's output shape "
        "(the last operation of its module); parameters = the module's weights and biases",
        [
            "layer",
            "paper output",
            "ours output",
            "paper params",
            "ours params",
            "difference",
            "verdict",
        ],
    )
    layers = _our_layers(model)
    for (name, size, paper_params), (path, module) in zip(PAPER_TABLE1, layers, strict=True):
        rows = [r for r in prof.rows if not r.free and (r.module + ".").startswith(path + ".")]
        shape = rows[-1].output_shape
        ours_size = (shape[2], shape[3], shape[1])
        ours_params = sum(p.numel() for p in module.parameters())
        same = ours_size == size and (paper_params is None or ours_params == paper_params)
        table.add(
            name,
            name,
            "x".join(map(str, size)),
            "x".join(map(str, ours_size)),
            number(paper_params, integer_text(paper_params)) if paper_params else number(None, "-"),
            number(ours_params, integer_text(ours_params)) if ours_params else number(None, "-"),
            number(ours_params - paper_params, f"{ours_params - paper_params:+,}")
            if paper_params
            else number(None, "-"),
            verdict("agrees" if same else "differs"),
        )
    total = prof.params
    table.add(
        "total",
        "total",
        "",
        "",
        number(PAPER_TOTAL_PARAMS, integer_text(PAPER_TOTAL_PARAMS)),
        number(total, integer_text(total)),
        number(total - PAPER_TOTAL_PARAMS, f"{total - PAPER_TOTAL_PARAMS:+,}"),
        verdict("agrees" if total == PAPER_TOTAL_PARAMS else "differs"),
    )
    return table


def _model(name: str, weights: Path | None) -> Any:
    """The network with torchvision's weights, or random ones drawn from a fixed seed."""
    import torch

    from lightnets.models import create_model

    if weights is not None:
        return create_model(name, weights=weights)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model(name)


def compression(ctx: Context) -> tuple[Table, dict[str, Any]]:
    from lightnets.deploy.compression import CompressionSettings, compress

    files = weight_files(ctx.weights_dir)
    origin = {
        name: f"torchvision weights {files[name].name}"
        if name in files
        else "random weights (size only)"
        for name in WEIGHT_FILES
    }
    random_only = not files
    title = "Table 2: Deep Compression's sizes"
    if random_only:
        title += " (random weights, size only)"
    table = Table(
        "squeezenet.compression",
        title,
        f"lightnets compress: magnitude pruning to {DENSITY:.0%} of each layer's weights, "
        "k-means weight sharing at 8 or 6 bits, sparse indices, Huffman/LZMA coding; size = "
        "the file written, in MiB (the paper's MB are 2^20 bytes); no fine-tuning, no data. "
        + (
            "Random weights: trained weights compress differently and top-1 cannot be measured"
            if random_only
            else "Top-1 needs ImageNet and is not measured"
        ),
        ["network", "weights", "quantity", "paper", "ours", "difference", "verdict", "note"],
    )
    for name in WEIGHT_FILES:
        model = _model(name, files.get(name))
        ctx.log(f"compressing {name} ({origin[name]})")
        sizes = {}
        for bits in (8, 6):
            path = ctx.workspace.work / f"{name}-{bits}bit.lnz"
            report, _ = compress(model, path, CompressionSettings(density=DENSITY, bits=bits))
            sizes[f"{bits}-bit"] = report.file_bytes
            sizes["fp32"] = report.dense_bytes
        for quantity in ("fp32", "8-bit", "6-bit"):
            paper = PAPER_SIZES_MIB.get(quantity) if name == "squeezenet1_0" else None
            cells = compare_count(
                paper,
                sizes[quantity] / MIB,
                step=0.1 if quantity == "fp32" else 0.01,
                text=lambda v: f"{v:.3f} MiB",
                paper_text=f"{paper:g} MB" if paper is not None else None,
            )
            note = f"{sizes[quantity]:,} bytes"
            if paper is not None and quantity != "fp32":
                note += "; smaller than the paper's, which gives no breakdown of its file"
            table.add(f"{name} {quantity}", name, origin[name], quantity, *cells, note)
        claim = sizes["6-bit"] < CLAIM_BYTES
        table.add(
            f"{name} claim",
            name,
            origin[name],
            "6-bit under 0.5 MB",
            number(None, "< 0.5 MB") if name == "squeezenet1_0" else number(None, "-"),
            number(sizes["6-bit"], integer_text(sizes["6-bit"]) + " bytes"),
            number(None, "-"),
            verdict("holds" if claim else "fails") if name == "squeezenet1_0" else verdict("n/a"),
            "the paper's title: '<0.5MB model size'" if name == "squeezenet1_0" else "",
        )
    table.add(
        "squeezenet1_0 top-1",
        "squeezenet1_0",
        origin["squeezenet1_0"],
        "ImageNet top-1",
        number(PAPER_TOP1, f"{PAPER_TOP1}%"),
        number(None, "not measured"),
        number(None, "-"),
        verdict("n/a"),
        "unchanged by compression in the paper; needs ImageNet",
    )
    conditions = {f"weights {name}": origin[name] for name in WEIGHT_FILES}
    return table, conditions
