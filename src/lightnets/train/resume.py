"""Resuming a run: its stored configuration, with the settings a resumed run may change.

A resumed run takes its configuration from its ``last.pt``; only the settings that do not change
the arithmetic of training (:data:`~lightnets.train.config.RESUME_MUTABLE`) may differ, plus
``epochs``. Above :mod:`~lightnets.train.config`, :mod:`~lightnets.train.checkpoint` and
:mod:`~lightnets.train.rundir`, since it reads a run directory's checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lightnets.errors import CheckpointError, InvalidArgumentError
from lightnets.train.checkpoint import load_checkpoint
from lightnets.train.config import (
    LAST_CHECKPOINT,
    TrainConfig,
    _recipe_changes,
    _resume_changes,
)
from lightnets.train.rundir import cannot_resume

__all__ = ["resume_config", "stored_run"]


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The stored configuration of the run in ``run_dir``, with the allowed ``overrides``.

    ``overrides`` holds the settings given on the command line (absent ones left out); recipe
    fields go in ``overrides["recipe"]``. A different model is a :class:`CheckpointError`; any
    other differing setting that would change training is an :class:`InvalidArgumentError`.
    """
    run_dir = Path(run_dir)
    path, state, stored = stored_run(run_dir)
    _check_same_model(path, state, stored, overrides)
    changes = _resume_changes(run_dir, stored, overrides)
    recipe_changes = _recipe_changes(stored.recipe, overrides.get("recipe") or {})
    config = dataclasses.replace(stored, **changes)
    config.output = str(run_dir)
    if recipe_changes:
        config.recipe = config.recipe.replace(**recipe_changes)
    return config.validate()


def stored_run(run_dir: Path) -> tuple[Path, dict[str, Any], TrainConfig]:
    """The last checkpoint of ``run_dir``: its path, its contents and its run configuration."""
    path = run_dir / LAST_CHECKPOINT
    if not run_dir.is_dir():
        raise CheckpointError(f"cannot resume: {run_dir} is not a directory")
    if not path.exists():
        raise CheckpointError(cannot_resume(run_dir))
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no run configuration)")
    try:
        stored = TrainConfig.from_dict(state["config"])
    except (TypeError, KeyError, InvalidArgumentError) as exc:
        raise CheckpointError(f"{path}: unreadable run configuration: {exc}") from exc
    return path, state, stored


def _check_same_model(
    path: Path, state: dict[str, Any], stored: TrainConfig, overrides: dict[str, Any]
) -> None:
    """A :class:`CheckpointError` when ``overrides`` name another model or hyperparameters."""
    model = overrides.get("model")
    if model is not None and model != stored.model:
        raise CheckpointError(f"{path} is a checkpoint of {stored.model}, not {model}")
    hparams = overrides.get("model_hparams") or {}
    for key, value in hparams.items():
        if stored.model_hparams.get(key, state["hparams"].get(key)) != value:
            raise CheckpointError(
                f"{path} is a checkpoint of {stored.model} with {key}="
                f"{state['hparams'].get(key)!r}, not {value!r}"
            )
