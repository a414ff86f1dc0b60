"""Mutated weights files through every loader (issue 17): a .lnz, a lightnets .pth checkpoint, a
lightnets .safetensors and an exported ONNX file, made here from a small real model, then damaged
by seeded byte flips, truncations and header / metadata field edits (``tests/fuzz_worker.py``)
and fed to ``load_weights``, ``create_model(weights=)``, ``model_from_file``, the checkpoint path
of ``predict``/``eval``/``bench``/``export`` and the ONNX loader. Every call must succeed or be
refused in one line (a LightnetsError; exit status 2); never another exception, a crash, a
hang, or a peak memory beyond :data:`PEAK_BOUND`.

About 20 s of mutations in CI; ``LIGHTNETS_FUZZ_SECONDS=600`` for a longer manual run. A case
is a kind and a seed, and reproduces alone: ``LIGHTNETS_FUZZ_CASES="lnz:17 onnx:4" pytest
tests/test_fuzz_loaders.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from conftest import run_measured
from lightnets.deploy.compression import CompressionSettings, compress
from lightnets.deploy.exporters import export
from lightnets.deploy.metadata import metadata_for
from lightnets.models.weights import save_weights
from lightnets.train.checkpoint import save_checkpoint

WORKER = Path(__file__).with_name("fuzz_worker.py")
SECONDS = float(os.environ.get("LIGHTNETS_FUZZ_SECONDS", "20"))
CASES = os.environ.get("LIGHTNETS_FUZZ_CASES", "").split()
#: The worker's peak: Python, torch, ONNX Runtime, a 0.7M-parameter model and its files.
PEAK_BOUND = 1 << 30


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model = lightnets.create_model("squeezenet1_1", variant="cifar", num_classes=10).eval()
    dataset = {
        "name": "cifar10",
        "classes": [f"class {i}" for i in range(10)],
        "mean": [0.49, 0.48, 0.45],
        "std": [0.25, 0.24, 0.26],
        "input_size": [3, 32, 32],
    }
    state = {"hparams": model.hparams, "model": model.state_dict(), "dataset": dataset}
    save_checkpoint(folder / "model.pth", state)
    save_weights(model, folder / "model.safetensors", dataset=dataset)
    compress(model, folder / "model.lnz", CompressionSettings(bits=4), source=state)
    size = (3, 32, 32)
    export(model, folder / "model.onnx", "onnx", size, metadata=metadata_for(model, state, size))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(folder / "image.png")
    return folder


def test_mutated_files_are_loaded_or_refused_in_one_line(originals):
    cases = CASES or [f"{kind}:-1" for kind in ("lnz", "pth", "safetensors", "onnx")]
    seconds = 0 if CASES else SECONDS
    run = run_measured(
        [WORKER, originals, str(seconds), *cases], timeout=seconds + 180, address_limit=6 << 30
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or (lines and "start" in lines[-1]):
        last = lines[-1]["start"] if lines else "before the first case"
        pytest.fail(f"the worker died (exit {run.returncode}) in {last}: {run.stderr[-2000:]}")
    results = [line for line in lines if "outcome" in line]
    bad = [r for r in results if r["outcome"] == "bad"]
    assert not bad, "\n".join(f"{r['case']} {r['loader']}: {r['error']}" for r in bad[:20])
    assert 0 < run.peak_bytes < PEAK_BOUND, run.peak_bytes
    originals_ok = [r for r in results if r["case"].endswith(":-1")]
    if not CASES:  # the unmutated files load everywhere, then the mutations ran
        assert originals_ok and all(r["outcome"] == "ok" for r in originals_ok), originals_ok
        outcomes = Counter(r["outcome"] for r in results)
        kinds = Counter(r["case"].split(":")[0] for r in results if r not in originals_ok)
        assert outcomes["refused"] > 0 and set(kinds) == {"lnz", "pth", "safetensors", "onnx"}
