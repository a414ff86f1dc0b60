"""Bad input and a hostile environment end in one line and exit status 2 (issue 17), never in
"unexpected error" or a traceback: a full disk while training and converting (a real write
failure: the file size limit, RLIMIT_FSIZE, makes the kernel refuse the write with EFBIG, as
a full disk refuses it with ENOSPC), absurd --lr and --seed, a malformed compressed file, and a
user pressing Ctrl-C three times."""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import signal
import subprocess
import sys
import time

import pytest

import lightnets
from conftest import default_ctrl_c, one_line
from lightnets.cli import main
from lightnets.deploy.compression.codec import write_compressed
from lightnets.deploy.compression.format import Payload, write_file
from lightnets.errors import CheckpointError
from lightnets.models.weights import load_weights
from lightnets.models.weights.compressed.header import read_file
from lightnets.train.checkpoint import load_checkpoint, save_checkpoint

TINY = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 32 --val-size 32 --batch-size 32 --epochs 1 --device cpu"
)


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Writes past ``nbytes`` fail in the kernel with EFBIG (Python ignores SIGXFSZ)."""
    if signal.getsignal(signal.SIGXFSZ) is not signal.SIG_IGN:
        pytest.skip("SIGXFSZ is not ignored in this process")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_full_disk_while_training_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with file_size_limit(256 * 1024):  # config and metrics fit, the checkpoint does not
        code = main([*TINY, "--output", str(run_dir)])
    one_line(capsys, code, f"cannot write {run_dir / 'last.pt'}", "file too large")
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [".lightnets-run", "config.json", "metrics.jsonl"]  # no partial file


def test_a_full_disk_in_convert_is_one_line(tmp_path, capsys):
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=3)
    source = tmp_path / "best.pt"
    save_checkpoint(source, {"hparams": model.hparams, "model": model.state_dict()})
    out = tmp_path / "out"
    out.mkdir()
    with file_size_limit(64 * 1024):
        code = main(["convert", str(source), "-o", str(out / "m.safetensors")])
    one_line(capsys, code, "cannot write", "file too large")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--lr", "1e308"], "lr must be > 0 and at most 1e+09"),
        (["--seed", "99999999999999999999"], "--seed=99999999999999999999 is not allowed"),
    ],
    ids=["lr", "seed"],
)
def test_absurd_lr_and_seed_are_refused_before_anything(tmp_path, capsys, flags, needle):
    run_dir = tmp_path / "run"
    one_line(capsys, main([*TINY, *flags, "--output", str(run_dir)]), needle)
    assert not run_dir.exists()


def test_a_malformed_compressed_file_is_one_line_at_every_boundary(tmp_path, capsys):
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=3)
    good = tmp_path / "good.lnz"
    write_compressed(good, [], dict(model.state_dict()), {"hparams": model.hparams})
    header, payload = read_file(good)
    header["dense"]["tensors"][0]["shape"] = [-8, -1, 3, 3]  # torch raises a bare RuntimeError
    bad = tmp_path / "bad.lnz"
    write_file(bad, header, Payload([bytes(payload)], len(payload)))
    with pytest.raises(CheckpointError, match=r"bad\.lnz is malformed"):
        load_weights(model, bad)
    one_line(capsys, main(["eval", "--checkpoint", str(bad)]), "bad.lnz is malformed")
    one_line(capsys, main(["profile", "mobilenet_v1", "--weights", str(bad)]), "is malformed")


def test_three_ctrl_c_in_a_row_end_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    argv = [a for a in TINY if a not in ("--epochs", "1")]
    argv[argv.index("32")] = "640"  # --train-subset: 20 steps an epoch, 50 epochs
    command = [sys.executable, "-m", "lightnets", *argv, "--epochs", "50", "--output", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=default_ctrl_c,  # as from a terminal, even if this run ignores Ctrl-C
    )
    lines = []
    try:
        for line in proc.stdout:  # wait for the first epoch to finish: training is under way
            lines.append(line)
            if line.startswith("epoch 1/"):
                break
        for _ in range(3):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert output.rstrip().endswith("lightnets train: interrupted"), output
    assert load_checkpoint(run_dir / "last.pt")["epoch"] >= 1
