"""The fuzz test's worker process (``tests/test_fuzz_loaders.py`` starts it; not a test itself).

``python tests/fuzz_worker.py FOLDER SECONDS [KIND:SEED ...]`` reads the real files the test made
in FOLDER (``model.lnz``, ``model.pth``, ``model.safetensors``, ``model.onnx``, ``image.png``),
then for seed 0, 1, 2, ... and each kind in turn writes one mutated file (byte flips,
truncations, header and metadata field edits; the mutation depends only on the kind and the
seed) and feeds it to every loader of that kind, until SECONDS have passed (or only the cases
given). One JSON line per loader call goes to stdout: the case, the loader, and ``ok``,
``refused`` (a one-line LightnetsError, or the CLI's exit status 2 with one line) or ``bad``
(anything else, with what was raised). A line ``{"start": ...}`` precedes each call, so that the
test can name the case of a crash or a hang.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import signal
import struct
import sys
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import lightnets
from lightnets.errors import LightnetsError

#: Seconds one loader call may take before it counts as a hang.
CALL_SECONDS = 20
#: Values a header or metadata field is set to: wrong types, signs, sizes, names, paths.
VALUES: list[Any] = [
    -1,
    0,
    1,
    3.5,
    2**31,
    2**40,
    -(2**63),
    10**400,
    float("inf"),
    float("nan"),
    "x",
    "",
    None,
    True,
    [],
    {},
    [1, 2],
    [-1],
    [3, 10**6, 10**6],
    {"a": 1},
    "float32",
    "lzma",
    "huffman",
    "fixed",
    "zstd",
    "mobilenet_v2",
    "/dev/zero",
]


class Hang(Exception):
    """A loader call ran past :data:`CALL_SECONDS`."""


# -- mutations ----------------------------------------------------------------------------------


def flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every field of a JSON-like value (containers included)."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaves(item, (*path, index))
    return found


def edit_field(document: Any, rng: random.Random) -> Any:
    """Set one random field of ``document`` to a random value of :data:`VALUES`, or delete it."""
    paths = leaves(document)
    if not paths:
        return rng.choice(VALUES)
    path = rng.choice(paths)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(VALUES)
    return document


def mutate_lnz(data: bytes, rng: random.Random) -> bytes:
    from lightnets.models.weights.compressed.header import MAGIC, VERSION

    how = rng.choice(["flip", "truncate", "field", "field", "field", "payload"])
    if how == "flip":
        return flip(data, rng)
    if how == "truncate":
        return truncate(data, rng)
    (length,) = struct.unpack_from("<I", data, 14)
    header, payload = json.loads(data[18 : 18 + length]), data[18 + length :]
    if how == "field":
        header = edit_field(header, rng)
    else:  # the streams damaged, the checksum made to match
        payload = flip(payload, rng)
    text = json.dumps(header).encode()  # allow_nan: Infinity, NaN (json.loads reads them)
    body = struct.pack("<I", len(text)) + text + payload
    return MAGIC + struct.pack("<HI", VERSION, zlib.crc32(body)) + body


def _rezip(data: bytes, change: Callable[[str, bytes], bytes]) -> bytes:
    """The zip archive ``data`` with each record passed through ``change`` (CRCs recomputed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, change(info.filename, src.read(info.filename)))
    return out.getvalue()


def mutate_pth(data: bytes, rng: random.Random) -> bytes:
    how = rng.choice(["flip", "truncate", "pickle", "field", "field", "tensor"])
    if how == "flip":
        return flip(data, rng)
    if how == "truncate":
        return truncate(data, rng)
    if how == "pickle":
        return _rezip(data, lambda name, b: flip(b, rng) if name.endswith("data.pkl") else b)
    state = torch.load(io.BytesIO(data), weights_only=True)  # our own, unmutated file
    if how == "field":
        meta = {k: state[k] for k in ("hparams", "dataset", "format") if k in state}
        meta = edit_field(meta, rng)
        state.update(meta)
    else:
        key = rng.choice(sorted(state["model"]))
        state["model"][key] = rng.choice(
            [torch.zeros(3, 1), torch.zeros(0), torch.zeros(2, dtype=torch.int8), torch.tensor(7)]
        )
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    how = rng.choice(["flip", "truncate", "header", "header", "metadata", "metadata"])
    if how == "flip":
        return flip(data, rng)
    if how == "truncate":
        return truncate(data, rng)
    (length,) = struct.unpack_from("<Q", data)
    header, body = json.loads(data[8 : 8 + length]), data[8 + length :]
    if how == "header":
        header = edit_field(header, rng)
    else:
        metadata = header["__metadata__"]
        key = rng.choice(sorted(k for k in metadata if k != "format"))
        metadata[key] = json.dumps(edit_field(json.loads(metadata[key]), rng))
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    import onnx

    how = rng.choice(["flip", "truncate", "metadata", "metadata", "graph"])
    if how == "flip":
        return flip(data, rng)
    if how == "truncate":
        return truncate(data, rng)
    model = onnx.load_from_string(data)
    if how == "metadata":
        prop = next(p for p in model.metadata_props if p.key == "lightnets")
        prop.value = json.dumps(edit_field(json.loads(prop.value), rng))
    else:
        graph = model.graph
        choice = rng.randrange(3)
        if choice == 0:
            tensor = rng.choice(list(graph.initializer))
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([0, 1, 7, 2**31])
        elif choice == 1:
            del graph.node[rng.randrange(len(graph.node))]
        else:
            dims = graph.input[0].type.tensor_type.shape.dim
            dims[rng.randrange(1, len(dims))].dim_value = rng.choice([1, 5, 40_000])
    return model.SerializeToString()


MUTATE = {
    "lnz": mutate_lnz,
    "pth": mutate_pth,
    "safetensors": mutate_safetensors,
    "onnx": mutate_onnx,
}


# -- loaders ------------------------------------------------------------------------------------


def cli(*argv: str) -> Callable[[Path], None]:
    """``lightnets ARGV`` in this process: exit 0, or 2 with one line on stderr."""

    def run(path: Path) -> None:
        from lightnets.cli import main

        out, err = io.StringIO(), io.StringIO()
        args = [a.replace("FILE", str(path)) for a in argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        text = err.getvalue()
        if code == 2 and text.count("\n") == 1:
            raise LightnetsError(text.strip())
        if code != 0:
            raise RuntimeError(f"exit {code}: {text.strip()[-300:]}")

    return run


def run_exported(path: Path) -> None:
    """The ONNX loader (``open_exported``) and one forward pass; a file it does not recognise
    as an exported model is refused by ``predict`` as a checkpoint, which the table covers."""
    from lightnets.deploy.exported import open_exported
    from lightnets.models.memory import check_input_memory

    model = open_exported(path)
    if model is None:
        raise LightnetsError(f"{path}: not recognised as an exported model")
    check_input_memory(list(model.input_size))  # as bench does before its first batch
    model(torch.zeros(1, *model.input_size))


def loaders(image: Path) -> dict[str, list[tuple[str, Callable[[Path], Any]]]]:
    from lightnets.models.weights import model_from_file, read_weights_file
    from lightnets.train.checkpoint import model_from_checkpoint

    def fresh() -> torch.nn.Module:
        return lightnets.create_model("squeezenet1_1", variant="cifar", num_classes=10)

    weights = [
        ("read_weights_file", read_weights_file),
        ("load_weights", lambda p: lightnets.load_weights(fresh(), p)),
        ("create_model(weights=)", lambda p: lightnets.create_model("squeezenet1_1", weights=p)),
        ("model_from_file", model_from_file),
    ]
    checkpoint = [
        ("model_from_checkpoint", model_from_checkpoint),
        ("predict FILE", cli("predict", "FILE", str(image))),
    ]
    return {
        "lnz": weights + checkpoint,
        "pth": weights + checkpoint,
        "safetensors": [
            *weights,
            (
                "predict --weights FILE",
                cli("predict", "squeezenet1_1", "--weights", "FILE", str(image)),
            ),
        ],
        "onnx": [
            ("open_exported", run_exported),
            ("predict FILE", cli("predict", "FILE", str(image))),
        ],
    }


def call(loader: Callable[[Path], Any], path: Path) -> dict[str, str]:
    def alarm(signum, frame):
        raise Hang(f"still running after {CALL_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CALL_SECONDS)
    try:
        loader(path)
        return {"outcome": "ok"}
    except LightnetsError as exc:
        text = str(exc)
        if "\n" in text.strip():
            return {"outcome": "bad", "error": f"a refusal of several lines: {text[:300]!r}"}
        return {"outcome": "refused", "error": text[:300]}
    except BaseException as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {
            "outcome": "bad",
            "error": f"{type(exc).__name__}: {str(exc)[:300]} ({where.filename}:{where.lineno})",
        }
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def main(folder: Path, seconds: float, first: list[str]) -> None:
    """The cases ``first`` (``KIND:SEED``; seed -1: the file unmutated), then seeds 0, 1, ...
    for every kind until ``seconds`` have passed."""
    import itertools
    import logging

    logging.getLogger("lightnets.weights").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    originals = {kind: (folder / f"model.{kind}").read_bytes() for kind in MUTATE}
    table = loaders(folder / "image.png")
    listed = [(kind, int(seed)) for kind, seed in (case.split(":") for case in first)]
    deadline = time.monotonic() + seconds
    endless = ((kind, seed) for seed in itertools.count() for kind in MUTATE)
    for kind, seed in itertools.chain(listed, endless):
        if (kind, seed) not in listed and time.monotonic() > deadline:
            break
        rng = random.Random(f"{kind}:{seed}")
        data = originals[kind] if seed < 0 else MUTATE[kind](originals[kind], rng)
        path = folder / f"case-{kind}-{seed}.{kind}"
        path.write_bytes(data)
        for name, loader in table[kind]:
            case = {"case": f"{kind}:{seed}", "loader": name}
            print(json.dumps({"start": case}), flush=True)
            print(json.dumps({**case, **call(loader, path)}), flush=True)
        path.unlink()


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
