"""Compressing whole models: exact decode, density and codebooks as asked, the < 0.5 MB claim,
fine-tuning that keeps the mask and the codebook, and damaged files rejected in one line."""

from __future__ import annotations

import pytest
import torch

import lightnets
from lightnets.data import load_splits, make_loader
from lightnets.deploy.compression import (
    CompressionData,
    CompressionSettings,
    compress,
    is_compressed,
    load_compressed,
)
from lightnets.deploy.compression.pruning import compressible_layers
from lightnets.errors import CheckpointError, InvalidArgumentError
from lightnets.train.checkpoint import model_from_checkpoint, save_checkpoint
from lightnets.train.config import TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(name: str = "shufflenet_v2", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"variant": "cifar", "num_classes": 10, **kw}
    if name == "shufflenet_v2":
        kw.setdefault("width_mult", 0.5)
    return lightnets.create_model(name, **kw)


def test_decode_equals_the_pruned_quantized_weights_bit_for_bit(tmp_path):
    path = tmp_path / "m.lnz"
    model = small_model()
    report, compressed = compress(model, path, CompressionSettings(density=0.4, bits=5))
    loaded, state = load_compressed(path)
    expected = compressed.state_dict()
    got = loaded.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert expected[key].dtype == got[key].dtype
        assert torch.equal(expected[key], got[key]), key
    assert state["hparams"] == model.hparams and report.file_bytes == path.stat().st_size
    # The original model is left as it was.
    assert (compressible_layers(model)[0].module.weight != 0).all()


def test_density_and_codebook_size_as_asked(tmp_path):
    model = small_model("mobilenet_v2", width_mult=0.35)
    settings = CompressionSettings(density=0.25, bits=6, per_layer_bits={"fc": 4})
    report, compressed = compress(model, tmp_path / "m.lnz", settings)
    for layer in compressible_layers(compressed):
        w = layer.module.weight
        kept = int((w != 0).sum())
        # torch.nn.utils.prune removes round((1 - density) * n) weights of each layer
        assert kept == w.numel() - round(0.75 * w.numel()), layer.name
        values = torch.unique(w[w != 0])
        bits = 4 if layer.kind == "fc" else 6
        assert len(values) <= 2**bits - 1, layer.name
    rows = {row.name: row for row in report.layers}
    assert rows["classifier.1"].bits == 4 and rows["classifier.1"].index_bits == 5
    assert rows["features.0.0"].bits == 6 and rows["features.0.0"].index_bits == 8
    assert report.kept == sum(r.kept for r in report.layers)


def test_global_scope_keeps_the_density_overall(tmp_path):
    model = small_model()
    _, compressed = compress(model, tmp_path / "g.lnz", CompressionSettings(scope="global"))
    weights = [layer.module.weight for layer in compressible_layers(compressed)]
    kept = sum(int((w != 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert kept == total - round(0.67 * total)


def test_squeezenet1_0_under_half_a_megabyte(tmp_path):
    # SqueezeNet, Table 2: Deep Compression, 6-bit, about a third of the weights: 0.47 MB.
    model = lightnets.create_model("squeezenet1_0")
    assert sum(p.numel() for p in model.parameters()) == 1_248_424
    path = tmp_path / "squeezenet1_0.lnz"
    report, _ = compress(model, path)
    assert path.stat().st_size == report.file_bytes < 500_000
    assert report.ratio > 9.9
    # A size only: these are random initial weights, and the report says so.
    assert report.random_weights and report.as_dict()["weights_from"] == "random initial weights"


@pytest.mark.slow
def test_finetune_keeps_mask_and_codebook(tmp_path):
    splits = load_splits("synthetic", num_classes=10, image_size=16, train_subset=256)
    model = small_model("shufflenet_v2")
    data = CompressionData(
        finetune=make_loader(splits.train, splits, batch_size=64, train=True),
        num_classes=10,
        finetune_epochs=1,
        lr=0.05,
        name="synthetic",
    )
    _, plain = compress(model, tmp_path / "a.lnz", CompressionSettings(bits=3))
    _, tuned = compress(model, tmp_path / "b.lnz", CompressionSettings(bits=3), data=data)
    changed = False
    for a, b in zip(compressible_layers(plain), compressible_layers(tuned), strict=True):
        wa, wb = a.module.weight, b.module.weight
        assert int((wb != 0).sum()) == int((wa != 0).sum())  # same number kept
        assert len(torch.unique(wb[wb != 0])) <= 7  # still 3-bit shared weights
        changed |= not torch.equal(wa, wb)
    assert changed
    loaded, state = load_compressed(tmp_path / "b.lnz")
    assert state["finetune"] == {"dataset": "synthetic", "epochs": 1}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tuned.state_dict().items())


def test_checkpoint_records_travel_and_model_from_checkpoint_reads_it(tmp_path):
    model = small_model()
    ckpt = tmp_path / "run.pt"
    config = TrainConfig(
        model="shufflenet_v2", output=str(tmp_path), dataset="fashion-mnist", val_size=500
    ).to_dict()
    record = {
        "name": "fashion-mnist",
        "classes": list("abcdefghij"),
        "mean": [0.3] * 3,
        "std": [0.35] * 3,
        "input_size": [3, 32, 32],
    }
    save_checkpoint(
        ckpt,
        {
            "hparams": model.hparams,
            "model": model.state_dict(),
            "dataset": record,
            "config": config,
        },
    )
    loaded, state = model_from_checkpoint(ckpt)
    target = tmp_path / "model.weights"  # any extension: the content is what counts
    compress(loaded, target, source=state)
    assert is_compressed(target) and not is_compressed(ckpt)
    again, meta = model_from_checkpoint(target)
    assert meta["dataset"] == record and meta["config"]["val_size"] == 500
    assert not again.training


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A compressed file with one flipped bit, one cut short, and one cut to 10 bytes."""
    folder = tmp_path_factory.mktemp("damaged")
    path = folder / "m.lnz"
    compress(small_model(), path, CompressionSettings(bits=4))
    data = path.read_bytes()
    flipped = folder / "flipped.lnz"
    flipped.write_bytes(data[:3000] + bytes([data[3000] ^ 0x40]) + data[3001:])
    truncated = folder / "truncated.lnz"
    truncated.write_bytes(data[: len(data) - 100])
    stub = folder / "stub.lnz"
    stub.write_bytes(data[:10])
    return flipped, truncated, stub


def test_corrupted_and_truncated_files_are_rejected(damaged):
    for path in damaged:
        with pytest.raises(CheckpointError, match=r"corrupted|truncated") as info:
            load_compressed(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_damaged_file_is_one_line_on_the_command_line(damaged, capsys):
    from lightnets.cli import main

    for path in damaged[:2]:
        code = main(["bench", str(path), "--backend", "eager", "--seconds", "0.01"])
        out, err = capsys.readouterr()
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "corrupted or truncated" in err


def test_bad_settings_are_named():
    model = small_model()
    with pytest.raises(InvalidArgumentError, match="density"):
        compress(model, "unused.lnz", CompressionSettings(density=1.5))
    with pytest.raises(InvalidArgumentError, match="bits"):
        compress(model, "unused.lnz", CompressionSettings(bits=9))
    with pytest.raises(InvalidArgumentError, match="neither a layer kind"):
        compress(model, "unused.lnz", CompressionSettings(per_layer_bits={"nope": 4}))


def test_load_weights_and_create_model_accept_a_compressed_file(tmp_path):
    path = tmp_path / "any-extension.bin"
    _, compressed = compress(small_model(), path, CompressionSettings(bits=4))
    fresh = small_model()
    lightnets.load_weights(fresh, path)
    built = lightnets.create_model("shufflenet_v2", weights=path)
    for model in (fresh, built):
        for key, tensor in compressed.state_dict().items():
            assert torch.equal(model.state_dict()[key], tensor), key
