"""Accuracy against cost: train every combination of a few hyperparameters, then compare.

MobileNets (Howard et al. 2017, Section 3.3-3.4, Tables 6-7) trade accuracy for cost with a
width multiplier alpha and a resolution multiplier rho; ShuffleNet (V1) with its group count g,
ShuffleNet V2 with its width. :func:`run_sweep` trains each cell of the grid with the project's
trainer (:func:`lightnets.train.train`), one run directory per cell under the sweep's folder, and
is resumable: a finished cell is read back, an interrupted one resumes from its ``last.pt``.
It then writes ``sweep.json``, ``sweep.md`` and ``sweep.png``: test top-1 against MACs,
parameters and latency measured on this machine, the Pareto front marked, beside the paper's
ImageNet rows (:func:`lightnets.analysis.reference.paper_figures`). A cell whose test top-1 is
at chance level (:func:`lightnets.train.metrics.at_chance`) learned nothing measurable: it is
warned about, marked in the table and the figure, and left off the Pareto front.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightnets import jsonio
from lightnets.errors import InvalidArgumentError, first_line
from lightnets.fileio import write_text_atomic
from lightnets.train.config import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    RESUME_MUTABLE,
    TrainConfig,
    flag_for,
)
from lightnets.train.metrics import CHANCE_SIGMAS, at_chance
from lightnets.train.rundir import check_new_run_dir, is_run_dir, read_marker, write_marker

__all__ = ["AXES", "Cell", "SweepResult", "plan_cells", "plot_sweep", "run_sweep"]

SUMMARY = "summary.json"
TABLE_JSON = "sweep.json"
TABLE_MD = "sweep.md"
FIGURE = "sweep.png"
#: Written by lightnets alone into every sweep folder, with the sweep's settings: what tells
#: our sweeps from a folder that merely holds a ``sweep.md``, and what a rerun must match.
MARKER = ".lightnets-sweep"
#: Settings that change where or how fast a cell runs, not what it computes: a rerun may change
#: them (as a resumed run may, :data:`~lightnets.train.config.RESUME_MUTABLE`, but not
#: ``epochs``: a sweep's cells share one schedule).
FREE_SETTINGS = RESUME_MUTABLE - {"epochs"}
#: Cost axes of the table and figure: record key, label.
COSTS = (("macs", "MACs"), ("params", "params"), ("latency_ms", "latency"))


def _set_hparam(name: str) -> Callable[[TrainConfig, Any], dict[str, Any]]:
    def apply(config: TrainConfig, value: Any) -> dict[str, Any]:
        return {"model_hparams": {**config.model_hparams, name: value}}

    return apply


def _set_image_size(config: TrainConfig, value: Any) -> dict[str, Any]:
    return {"image_size": value}


#: Sweepable hyperparameter -> how a value changes the run's TrainConfig.
AXES: dict[str, Callable[[TrainConfig, Any], dict[str, Any]]] = {
    "width_mult": _set_hparam("width_mult"),
    "groups": _set_hparam("groups"),
    "input_size": _set_image_size,
}


@dataclass(frozen=True)
class Cell:
    """One combination: ``(axis, value)`` pairs in the order the axes were given."""

    values: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        """Run directory name, e.g. ``width_mult-0.5_input_size-28``."""
        return "_".join(f"{axis}-{value:g}" for axis, value in self.values)

    def config(self, base: TrainConfig, output: Path) -> TrainConfig:
        config = dataclasses.replace(base, output=str(output / self.name))
        for axis, value in self.values:
            config = dataclasses.replace(config, **AXES[axis](config, value))
        return config


def plan_cells(axes: Mapping[str, Sequence[Any]]) -> list[Cell]:
    """Every combination of the given axis values (the first axis varies slowest)."""
    if not axes:
        raise InvalidArgumentError(
            "a sweep needs at least one axis: --width-mult, --input-size or --groups"
        )
    for axis, values in axes.items():
        if axis not in AXES:
            raise InvalidArgumentError(f"cannot sweep {axis!r}; allowed: {', '.join(AXES)}")
        if not values:
            raise InvalidArgumentError(f"--{axis.replace('_', '-')} needs at least one value")
        if len(set(values)) != len(values):
            raise InvalidArgumentError(f"--{axis.replace('_', '-')} lists a value twice")
    names = list(axes)
    cells = [
        Cell(tuple(zip(names, combo, strict=True))) for combo in itertools.product(*axes.values())
    ]
    _check_distinct_names(cells)
    return cells


def _check_distinct_names(cells: Sequence[Cell]) -> None:
    """Two cells must not share a run directory: values that print alike (``0.5`` and
    ``0.5000001`` both make ``width_mult-0.5``) are refused before anything trains."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        other = seen.setdefault(cell.name, cell)
        if other is cell:
            continue
        axis, a, b = next(
            (axis, x, y)
            for (axis, x), (_, y) in zip(other.values, cell.values, strict=True)
            if x != y
        )
        raise InvalidArgumentError(
            f"--{axis.replace('_', '-')} {a!r} and {b!r} would share the cell directory "
            f"{cell.name}: give values that differ in their first 6 significant digits"
        )


def _check_cells(configs: Sequence[TrainConfig]) -> None:
    """Refuse a bad setting or hyperparameter in any cell before the first cell trains
    (each model is built on the meta device: nothing is allocated or computed)."""
    import torch

    from lightnets.models import create_model

    for config in configs:
        config.validate()
        with torch.device("meta"):
            create_model(
                config.model,
                num_classes=10,
                variant=config.variant or "cifar",
                **config.model_hparams,
            )


def sweep_settings(base: TrainConfig) -> dict[str, Any]:
    """The settings every cell shares (the recipe's fields flattened in), as plain data; the
    axes and the settings of :data:`FREE_SETTINGS` left out."""
    data = base.to_dict()
    recipe = data.pop("recipe")
    settings = {k: v for k, v in data.items() if k not in FREE_SETTINGS}
    settings.update({f"recipe.{k}": v for k, v in recipe.items()})
    return jsonio.finite_or_none(settings)


def _check_sweep_dir(
    output: Path, settings: dict[str, Any], configs: Sequence[TrainConfig]
) -> None:
    """Refuse, before anything is trained or written, a ``--output`` that is not this sweep's:
    a folder that is not a lightnets sweep (recognised by :data:`MARKER`; a sweep made before
    the marker existed, by holding only run folders of ours and the sweep's tables), a sweep
    made with other settings (named), or a cell folder that cannot be this sweep's cell."""
    if output.exists():
        marker = read_marker(output / MARKER, "sweep")
        if marker is None:
            _check_unmarked_sweep(output)
        else:
            _check_same_settings(output, marker.get("settings") or {}, settings)
    for config in configs:
        run_dir = Path(config.output)
        if (run_dir / LAST_CHECKPOINT).exists():
            _stored_cell(config)
        else:
            check_new_run_dir(run_dir)


def _check_unmarked_sweep(output: Path) -> None:
    entries = sorted(output.iterdir())
    tables = {TABLE_JSON, TABLE_MD, FIGURE}
    runs = [p for p in entries if p.is_dir() and is_run_dir(p)]
    foreign = [p.name for p in entries if p.name not in tables and p not in runs]
    if foreign or (entries and not runs):
        shown = ", ".join((foreign or [p.name for p in entries])[:3])
        raise InvalidArgumentError(
            f"--output {output} is not empty and is not a lightnets sweep (it holds {shown}): "
            "choose a new or empty directory"
        )


def _check_same_settings(output: Path, stored: dict[str, Any], settings: dict[str, Any]) -> None:
    # Only settings both know: one added by a later lightnets is absent from an older marker.
    for key in sorted(set(stored) & set(settings)):
        if stored[key] == settings[key]:
            continue
        given, was = settings.get(key), stored.get(key)
        if key == "model_hparams":
            name = next(
                k
                for k in sorted(set(given or {}) | set(was or {}))
                if (given or {}).get(k) != (was or {}).get(k)
            )
            flag, given, was = flag_for(name), (given or {}).get(name), (was or {}).get(name)
        elif key == "model":
            flag = "--model"
        else:
            flag = flag_for(key.removeprefix("recipe."))
        raise InvalidArgumentError(
            f"{flag} {given!r} differs from this sweep's {was!r} ({output / MARKER}): a "
            "sweep's cells share their settings; rerun with the sweep's, or choose another "
            "--output"
        )


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _read_summary(run_dir: Path) -> dict[str, Any]:
    """A finished cell's ``summary.json``, checked for what the sweep reads from it."""
    import json
    import math

    path = run_dir / SUMMARY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        top1, epochs = data["test_top1"], data["epochs"]
        if not (
            isinstance(top1, (int, float))
            and math.isfinite(top1)
            and 0 <= top1 <= 1
            and isinstance(epochs, int)
            and not isinstance(epochs, bool)
        ):
            raise ValueError("test_top1 or epochs is out of range")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = first_line(exc)
        raise InvalidArgumentError(
            f"{path} is damaged ({type(exc).__name__}: {reason}): remove it and rerun, and the "
            "cell's test accuracy is measured again from its checkpoints"
        ) from exc
    return data


def _finished(run_dir: Path, epochs: int) -> bool:
    if not (run_dir / SUMMARY).exists():
        return False
    return _read_summary(run_dir)["epochs"] >= epochs


def _resume_overrides(config: TrainConfig) -> dict[str, Any]:
    """The cell's settings in the form :func:`resume_config` checks against a stored run."""

    def fields(obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}

    return {**fields(config), "recipe": fields(config.recipe)}


def train_cell(config: TrainConfig) -> tuple[str, dict[str, Any]]:
    """Train one cell, or resume it, or read it back; returns (what happened, summary).

    A run directory holding a checkpoint must have been made with the same settings (checked by
    :func:`~lightnets.train.resume.resume_config`: a different model, hyperparameter or recipe
    is an error, never a silent retrain).
    """
    run_dir = Path(config.output)
    if not (run_dir / LAST_CHECKPOINT).exists():
        return "trained", _fit(config, resume=False)
    stored = _stored_cell(config)
    if _finished(run_dir, config.recipe.epochs):
        return "done", _read_summary(run_dir)
    return "resumed", _fit(stored, resume=True)


def _stored_cell(config: TrainConfig) -> TrainConfig:
    """The stored configuration of a cell that holds a checkpoint, which must be this sweep's:
    same model, hyperparameters and recipe (:func:`resume_config`), and the same number of
    epochs: a sweep's cells share one schedule, so that their accuracies compare."""
    from lightnets.train.resume import resume_config

    run_dir = Path(config.output)
    stored = resume_config(run_dir, _resume_overrides(config))
    kept = _read_summary(run_dir)["epochs"] if (run_dir / SUMMARY).exists() else None
    trained_for = _stored_epochs(run_dir / LAST_CHECKPOINT)
    for epochs in (trained_for, kept):
        if epochs is not None and epochs != config.recipe.epochs:
            raise InvalidArgumentError(
                f"--epochs {config.recipe.epochs} differs from this sweep's {epochs} (cell "
                f"{run_dir.name}): a sweep's cells share their settings; rerun with --epochs "
                f"{epochs}, or choose another --output"
            )
    return stored


def _stored_epochs(path: Path) -> int | None:
    """The epoch count of the run whose checkpoint ``path`` is (its recipe's ``epochs``)."""
    from lightnets.train.checkpoint import load_checkpoint

    recipe = (load_checkpoint(path).get("config") or {}).get("recipe") or {}
    epochs = recipe.get("epochs")
    return epochs if isinstance(epochs, int) else None


def _fit(config: TrainConfig, *, resume: bool) -> dict[str, Any]:
    """:meth:`Trainer.fit`, as :func:`lightnets.train.train` runs it, but leaving the process
    group of a torchrun launch up for the next cell (a re-created group hangs in DDP's first
    collective); :func:`run_sweep` shuts it down once, after the last cell."""
    from lightnets.train.trainer import Trainer

    trainer = Trainer(config, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close(keep_process_group=True)


@dataclass
class SweepResult:
    """The sweep's records (one per cell), the paper's rows and the measuring conditions."""

    model: str
    dataset: str
    records: list[dict[str, Any]]
    paper: list[dict[str, Any]]
    conditions: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_markdown(self) -> str:
        axes = [axis for axis, _ in self.records[0]["cell"]] if self.records else []
        head = [*axes, "test top-1", "MACs", "params", "latency ms", "Pareto front"]
        chance = [r for r in self.records if r.get("at_chance")]
        lines = [
            f"{self.model} on {self.dataset}; latency: {self.conditions.get('latency')}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for r in self.records:
            front = ", ".join(label for key, label in COSTS if key in r["pareto"]) or "-"
            if r.get("at_chance"):
                front = "left off: at chance"
            cells = [f"{v:g}" for _, v in r["cell"]]
            lines.append(
                "| "
                + " | ".join(
                    [
                        *cells,
                        f"{100 * r['test_top1']:.2f}%",
                        f"{r['macs'] / 1e6:.2f}M",
                        f"{r['params'] / 1e6:.3f}M",
                        f"{r['latency_ms']:.2f}",
                        front,
                    ]
                )
                + " |"
            )
        if chance:
            lines += [
                "",
                f"{len(chance)} cell(s) at chance level (test top-1 within "
                f"{CHANCE_SIGMAS:g} binomial standard errors of 1 / classes, or below) learned "
                "nothing measurable and are left off the Pareto front.",
            ]
        if self.paper:
            lines += [
                "",
                "Paper (ImageNet, 1000 classes):",
                "",
                "| hyperparameters | input | MACs | params | top-1 | source |",
                "|---|---|---|---|---|---|",
            ]
            for p in self.paper:
                lines.append(
                    f"| {p['hparams']} | {p['resolution']} | {_m(p['macs'])} | "
                    f"{_m(p['params'])} | {p['top1'] if p['top1'] is not None else '-'} | "
                    f"{p['source']} |"
                )
        return "\n".join(lines)


def _m(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}M"


def pareto(records: Sequence[dict[str, Any]], cost: str) -> set[int]:
    """Indices of the records no other record beats: lower-or-equal cost and higher-or-equal
    top-1, one of them strictly. Records at chance level (``at_chance``) are left out: they
    neither join the front nor push others off it."""
    front = set()
    candidates = [(i, r) for i, r in enumerate(records) if not r.get("at_chance")]
    for i, a in candidates:
        dominated = any(
            b[cost] <= a[cost]
            and b["test_top1"] >= a["test_top1"]
            and (b[cost] < a[cost] or b["test_top1"] > a["test_top1"])
            for j, b in candidates
            if j != i
        )
        if not dominated:
            front.add(i)
    return front


def _paper_rows(model: str) -> list[dict[str, Any]]:
    from lightnets.analysis.reference import paper_figures

    return [
        {
            "hparams": ", ".join(f"{k}={v}" for k, v in f.hparams) or "-",
            "resolution": f.resolution,
            "macs": f.macs,
            "params": f.params,
            "top1": f.top1,
            "source": f.source,
        }
        for f in paper_figures(model)
        if f.top1 is not None
    ]


def _measure(
    cells: Sequence[Cell], run_dirs: Sequence[Path], device: str | None, threads: int | None
) -> tuple[list[dict[str, Any]], str, int]:
    """MACs, params (lightnets' counter) and batch-1 latency of every cell's best weights,
    timed in interleaved rounds with the thread policy's count (the one the cells trained
    with: :func:`lightnets.analysis.threads.apply_thread_policy`, ``threads`` = --threads)."""
    import torch

    from lightnets.analysis.counter import profile
    from lightnets.analysis.threads import apply_thread_policy, local_processes
    from lightnets.analysis.timing import torch_threads
    from lightnets.lab.guidelines.timing import time_calls
    from lightnets.train.checkpoint import model_from_checkpoint
    from lightnets.train.distributed import resolve_device

    kind = resolve_device(device)
    costs, calls = [], []
    for run_dir in run_dirs:
        model, state = model_from_checkpoint(run_dir / BEST_CHECKPOINT)
        shape = tuple(state["dataset"]["input_size"])
        prof = profile(model, shape, device="cpu")
        costs.append({"macs": prof.macs, "params": prof.params, "input_size": list(shape)})
        model = model.to(kind)
        x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0)).to(kind)
        calls.append(_inference(model, x))
    count = apply_thread_policy(threads, processes=local_processes()).threads
    with torch_threads(count if kind == "cpu" else None):
        timings = time_calls(calls, kind, rounds=5, min_seconds=0.5)
    for cost, timing in zip(costs, timings, strict=True):
        cost.update(latency_ms=timing.ms, latency_spread=timing.spread, stable=timing.stable)
    return costs, kind, count


def _inference(model, x):
    import torch

    def call():
        with torch.inference_mode():
            return model(x)

    return call


def run_sweep(
    base: TrainConfig,
    axes: Mapping[str, Sequence[Any]],
    output: str | Path,
    *,
    max_cells: int | None = None,
    log: Callable[[str], None] = print,
) -> SweepResult | None:
    """Train every cell of ``axes`` (resumably) and write the table and figure.

    Args:
        base: the settings shared by every cell (its ``output`` is ignored).
        axes: axis name (:data:`AXES`) -> values, e.g. ``{"width_mult": [1, 0.5]}``.
        output: the sweep's folder; each cell trains in ``output/<cell name>``.
        max_cells: train at most this many cells that are not finished yet, then stop
            (``None``: all); a later call continues with the rest.

    Returns:
        The result when every cell is finished (on the main process), else ``None``.
    """
    from lightnets.train.distributed import init_distributed, shutdown_distributed

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InvalidArgumentError(f"--output {output} exists and is not a directory")
    cells = plan_cells(axes)
    configs = [cell.config(base, output) for cell in cells]
    _check_cells(configs)
    settings = sweep_settings(base)
    _check_sweep_dir(output, settings, configs)
    if _is_main():
        output.mkdir(parents=True, exist_ok=True)
        if read_marker(output / MARKER, "sweep") is None:
            write_marker(output / MARKER, "sweep", settings=settings)
    ctx = init_distributed(base.device)
    try:
        summaries = _train_cells(cells, configs, max_cells, log)
    finally:
        shutdown_distributed(ctx)
    if summaries is None or not _is_main():
        return None
    costs, kind, threads = _measure(
        cells, [Path(c.output) for c in configs], base.device, base.threads
    )
    records = _records(cells, configs, summaries, costs)
    conditions = _conditions(base, kind, threads)
    result = SweepResult(base.model, base.dataset, records, _paper_rows(base.model), conditions)
    write_text_atomic(output / TABLE_JSON, jsonio.dumps(result.to_dict(), indent=2) + "\n")
    write_text_atomic(output / TABLE_MD, result.to_markdown() + "\n")
    plot_sweep(result, output / FIGURE)
    return result


def _records(
    cells: Sequence[Cell],
    configs: Sequence[TrainConfig],
    summaries: Sequence[dict[str, Any]],
    costs: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One table row per cell: its values, run folder, test top-1, epochs, costs, and the
    costs (:data:`COSTS`) on whose Pareto front it lies."""
    records = [
        {
            "cell": [list(pair) for pair in cell.values],
            "run_dir": str(Path(config.output)),
            "test_top1": summary["test_top1"],
            "epochs": summary["epochs"],
            "at_chance": _at_chance(summary),
            **cost,
        }
        for cell, config, summary, cost in zip(cells, configs, summaries, costs, strict=True)
    ]
    for key, _ in COSTS:
        for i in pareto(records, key):
            records[i].setdefault("pareto", []).append(key)
    for r in records:
        r.setdefault("pareto", [])
    return records


def _at_chance(summary: dict[str, Any]) -> bool:
    """Whether a cell's test top-1 is at chance level (computed from its summary, so cells
    finished before the summary recorded it are judged the same way)."""
    classes = (summary.get("hparams") or {}).get("num_classes")
    images = summary.get("test_images")
    if not isinstance(classes, int) or not isinstance(images, int):
        return False
    return at_chance(summary["test_top1"], classes, images)


def _conditions(base: TrainConfig, kind: str, threads: int) -> dict[str, Any]:
    """The measurement conditions printed with the table."""
    import torch

    from lightnets.analysis.machine import cpu_name

    return {
        "latency": f"batch 1, median of 5 interleaved rounds on {kind} "
        f"({cpu_name() if kind == 'cpu' else torch.cuda.get_device_name(0)}), "
        + (f"{threads} thread{'s' if threads != 1 else ''}" if kind == "cpu" else "CUDA"),
        "train_subset": base.train_subset,
        "epochs": base.recipe.epochs,
        "recipe": base.recipe.name,
    }


def _train_cells(
    cells: Sequence[Cell],
    configs: Sequence[TrainConfig],
    max_cells: int | None,
    log: Callable[[str], None],
) -> list[dict[str, Any]] | None:
    """Train (or read back) every cell in order; ``None`` when ``max_cells`` stops it early."""
    summaries, trained = [], 0
    for cell, config in zip(cells, configs, strict=True):
        if (
            max_cells is not None
            and trained >= max_cells
            and not _finished(Path(config.output), config.recipe.epochs)
        ):
            if _is_main():
                log(f"stopping after {trained} cell(s) (--max-cells); rerun to continue")
            return None
        what, summary = train_cell(config)
        trained += what != "done"
        if _is_main():
            log(f"cell {cell.name}: {what}, test top-1 {100 * summary['test_top1']:.2f}%")
            if _at_chance(summary):
                log(
                    f"warning: cell {cell.name} is at chance level (test top-1 "
                    f"{100 * summary['test_top1']:.2f}% for "
                    f"{summary['hparams']['num_classes']} classes): left off the Pareto front"
                )
        summaries.append(summary)
    return summaries


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """Test top-1 against MACs, parameters and latency (Pareto front joined), and the paper's
    ImageNet top-1 against MACs in a last panel
    (:func:`lightnets.figures.pareto.accuracy_cost_figure`)."""
    from lightnets.figures import save_figure
    from lightnets.figures.pareto import accuracy_cost_figure

    figure = accuracy_cost_figure(
        result.records, COSTS, model=result.model, dataset=result.dataset, paper=result.paper
    )
    return save_figure(figure, path)
