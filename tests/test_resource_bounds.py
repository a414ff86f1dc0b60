"""Files and flags that would exhaust the machine (issue 17), each crafted here from its recipe:
refused in one line with exit status 2, or done correctly, with the command's own peak memory
measured (``os.wait4``) far below what the attack used to take.

The figures the attacks reached before: ``bench --threads 100000`` a segmentation fault; an LZMA
stream inflating to 2 GiB 4.4 GB; Huffman ``entries = 2^27`` 2.3 GB; a deflated 1 GB ``.pth``
record 1.2 GB; a 1 GiB CIFAR tar member 1.29 GB; num_classes 2e7 / width_mult 3000 74 GB;
``input_size`` from metadata 19 GB; 3,000 images to ``predict`` 4.8 GB.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import pickle
import signal
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from conftest import run_cli_measured
from lightnets.cli import main
from lightnets.deploy.compression import CompressionSettings, compress, load_compressed
from lightnets.deploy.compression.format import Payload, write_file
from lightnets.errors import CheckpointError, DataError, InvalidArgumentError, max_threads
from lightnets.models.weights import read_weights_file
from lightnets.models.weights.compressed.header import MAGIC, VERSION, read_file
from lightnets.models.weights.compressed.streams import (
    LZMA_FILTERS,
    MAX_CODE_LENGTH,
    huffman_decode,
)
from lightnets.train.checkpoint import load_checkpoint

#: What a refused command may use at its peak: Python, torch and lightnets loaded (~250 MB
#: here), a small model, and its file; far below every attack's figure above.
PEAK_BOUND = 700 << 20
GIB = 1 << 30


def one_line_refusal(run, *fragments: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert "unexpected error" not in run.stderr, run.stderr
    for fragment in fragments:
        assert fragment in run.stderr, run.stderr
    assert 0 < run.peak_bytes < PEAK_BOUND, run.peak_bytes


# -- files made here ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lnz(tmp_path_factory) -> Path:
    """A real compressed file: SqueezeNet 1.1, cifar stem, 10 classes, 6-bit."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lnz") / "squeezenet.lnz"
    model = lightnets.create_model("squeezenet1_1", variant="cifar", num_classes=10)
    compress(model, path, CompressionSettings(bits=6))
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def lnz_parts(path: Path) -> tuple[dict, bytes]:
    header, payload = read_file(path)
    return header, bytes(payload)


def forge_lnz(path: Path, header: dict, payload: bytes) -> Path:
    """Write ``header`` and ``payload`` as lightnets does: the CRC is re-forged to match."""
    write_file(path, header, Payload([payload], len(payload)))
    return path


def forge_lnz_text(path: Path, header_text: bytes, payload: bytes) -> Path:
    """Like :func:`forge_lnz` with the header's JSON text as given (1e400 has no Python value)."""
    body = struct.pack("<I", len(header_text)) + header_text + payload
    path.write_bytes(MAGIC + struct.pack("<HI", VERSION, zlib.crc32(body)) + body)
    return path


# -- --threads ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "squeezenet1_1", "--backend", "eager"],
        ["compare", "squeezenet1_1"],
        ["roofline", "squeezenet1_1"],
        ["guidelines", "G1", "--quick"],
    ],
)
def test_threads_beyond_the_cpus_are_refused_by_every_command(argv, capsys):
    limit = max_threads()
    for threads in ("100000", "20000", str(limit + 1), "0", "-3"):
        with pytest.raises(SystemExit) as info:
            main([*argv, "--threads", threads])
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.count("\n") == 1, err
        assert f"'{threads}' is not allowed; use an integer in 1..{limit}" in err, err


def test_threads_are_bounded_in_the_library_too():
    from lightnets.analysis.compare import compare
    from lightnets.analysis.timing import torch_threads
    from lightnets.lab.guidelines import run_guidelines

    before = torch.get_num_threads()
    for call in (
        lambda: torch_threads(100_000).__enter__(),
        lambda: compare(["squeezenet1_1"], threads=20_000),
        lambda: run_guidelines(["G1"], quick=True, threads=max_threads() + 1),
    ):
        with pytest.raises(InvalidArgumentError, match=r"threads=\d+ is not allowed"):
            call()
    assert torch.get_num_threads() == before
    with torch_threads(max_threads()) as used:  # the bound itself is allowed
        assert used == torch.get_num_threads() == max_threads()


# -- compressed files (.lnz) ---------------------------------------------------------------------


def lzma_bomb(size: int) -> bytes:
    """A raw LZMA2 stream of ``size`` zero bytes, a few hundred bytes per 2 MiB: one chunk with a
    full reset, repeated (each chunk decodes on its own), then the end marker."""
    chunk = lzma.compress(bytes(2 << 20), format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)[:-1]
    assert size % (2 << 20) == 0 and chunk[0] == 0xFF  # one LZMA chunk, full reset
    return chunk * (size // (2 << 20)) + b"\x00"


def test_lzma_bomb_is_decoded_only_to_its_declared_size(lnz, image, tmp_path):
    header, payload = lnz_parts(lnz)
    bomb = lzma_bomb(2 * GIB)
    dense = header["dense"]
    header["dense"] = {**dense, "coder": "lzma", "offset": len(payload), "length": len(bomb)}
    evil = forge_lnz(tmp_path / "bomb.lnz", header, payload + bomb)
    assert evil.stat().st_size < 700_000  # the recipe: ~469 KB inflating to 2 GiB
    with pytest.raises(CheckpointError, match=r"inflates past its declared 11816 bytes"):
        load_compressed(evil)
    run = run_cli_measured(["predict", evil, image])
    one_line_refusal(run, str(evil), "lzma")
    # The declared count forged to match the bomb: refused from the header, nothing inflated.
    header["dense"]["count"] = 2 * GIB
    forged = forge_lnz(tmp_path / "bomb-count.lnz", header, payload + bomb)
    with pytest.raises(CheckpointError, match="sizes do not add up"):
        load_compressed(forged)


def test_huffman_entries_beyond_the_layer_are_refused_before_decoding(lnz, image, tmp_path):
    header, payload = lnz_parts(lnz)
    layer = header["layers"][0]
    assert layer["codes"]["coder"] == "huffman" and layer["shape"] == [64, 3, 3, 3]
    layer["entries"] = 2**27
    evil = forge_lnz(tmp_path / "entries.lnz", header, payload)
    with pytest.raises(CheckpointError, match=r"features\.0\.weight declares 134217728 entries"):
        load_compressed(evil)
    run = run_cli_measured(["predict", evil, image])
    one_line_refusal(run, "134217728 entries for 1728 weights")
    # The decoder itself refuses a count its bits cannot hold, whatever calls it.
    data = payload[layer["codes"]["offset"] :][: layer["codes"]["length"]]
    with pytest.raises(CheckpointError, match="cannot fit in"):
        huffman_decode(data, 2**27)


def kraft_sum(lengths) -> float:
    return sum(2.0 ** -int(n) for n in lengths if n)


def test_over_subscribed_huffman_table_with_reforged_crc_is_refused(lnz, tmp_path):
    header, payload = lnz_parts(lnz)
    layer = header["layers"][0]
    start = layer["codes"]["offset"]
    (alphabet,) = struct.unpack_from("<H", payload, start)
    lengths = bytearray(payload[start + 2 : start + 2 + alphabet])
    assert kraft_sum(lengths) == 1.0  # the real table is a complete prefix code
    longest = max(range(alphabet), key=lambda s: lengths[s])
    lengths[longest] -= 1  # one code a bit shorter: sum(2^-l) > 1, codes collide
    assert kraft_sum(lengths) > 1.0
    forged = bytearray(payload)
    forged[start + 2 : start + 2 + alphabet] = lengths
    evil = forge_lnz(tmp_path / "kraft.lnz", header, bytes(forged))
    with pytest.raises(CheckpointError, match="over-subscribed"):
        load_compressed(evil)
    # An incomplete table (a code longer than needed) decodes bit patterns to nothing: refused.
    lengths[longest] += 2
    assert kraft_sum(lengths) < 1.0
    forged[start + 2 : start + 2 + alphabet] = lengths
    with pytest.raises(CheckpointError, match="incomplete"):
        load_compressed(forge_lnz(tmp_path / "kraft2.lnz", header, bytes(forged)))
    assert MAX_CODE_LENGTH == 16


def _set(path: tuple, value):
    def edit(header: dict) -> None:
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop(path: tuple):
    def edit(header: dict) -> None:
        target = header
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_set(("layers", 0, "shape"), [64, -3, 3, 3]), "layers[0].shape"),
        (_set(("dense", "tensors", 1, "shape"), [-16]), "dense.tensors[1].shape"),
        (_set(("hparams",), "squeezenet1_1"), "hparams"),
        (_set(("layers", 2, "bits"), 40), "layers[2].bits"),
        (_set(("layers", 1, "entries"), -1), "layers[1].entries"),
        (_set(("layers", 1, "entries"), 3.5), "layers[1].entries"),
        (_set(("layers", 0, "codes", "offset"), 10**12), "layers[0].codes"),
        (_set(("layers", 0, "codes", "coder"), 7), "layers[0].codes.coder"),
        (_set(("dense", "tensors", 0, "dtype"), "object"), "dense.tensors[0].dtype"),
        (_set(("dense", "count"), "many"), "dense.count"),
        (_set(("layers",), {"a": 1}), "layers"),
        (_set(("dataset",), "fashion-mnist"), "dataset"),
        (_drop(("layers", 0, "entries")), "layers[0].entries is missing"),
        (_drop(("dense",)), "dense is missing"),
        (_drop(("layers", 3, "gaps")), "layers[3].gaps is missing"),
    ],
)
def test_malformed_headers_name_the_field(lnz, tmp_path, edit, named):
    header, payload = lnz_parts(lnz)
    edit(header)
    evil = forge_lnz(tmp_path / "bad.lnz", header, payload)
    for load in (
        load_compressed,
        lambda p: lightnets.create_model("squeezenet1_1", weights=p),
        lambda p: lightnets.load_weights(
            lightnets.create_model("squeezenet1_1", variant="cifar", num_classes=10), p
        ),
    ):
        with pytest.raises(CheckpointError) as info:
            load(evil)
        message = str(info.value)
        assert named in message and str(evil) in message and "\n" not in message, message


def test_infinite_and_huge_numbers_in_the_header_text(lnz, image, tmp_path, capsys):
    header, payload = lnz_parts(lnz)
    text = json.dumps(header, separators=(",", ":"))
    entries = f'"entries":{header["layers"][0]["entries"]}'
    assert text.count(entries) == 1
    # -0 is the integer 0: a valid header, whose streams then hold more than 0 symbols.
    for value, named in (("1e400", "layers[0].entries"), ("-0", "more than its declared 0"),
                         ("9" * 400, "entries")):  # fmt: skip
        evil = forge_lnz_text(
            tmp_path / "num.lnz", text.replace(entries, f'"entries":{value}').encode(), payload
        )
        assert main(["predict", str(evil), str(image)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, err
    deep = forge_lnz_text(tmp_path / "deep.lnz", b"[" * 100_000 + b"]" * 100_000, payload)
    with pytest.raises(CheckpointError, match="unreadable header"):
        load_compressed(deep)


def test_hparams_from_a_compressed_file_pass_the_memory_check_first(lnz, image, tmp_path):
    header, payload = lnz_parts(lnz)
    header["hparams"]["num_classes"] = 20_000_000
    classes = forge_lnz(tmp_path / "classes.lnz", header, payload)
    run = run_cli_measured(["predict", classes, image])
    one_line_refusal(run, "num_classes=20000000", "needs about", "available")
    header["hparams"] = {"name": "mobilenet_v2", "num_classes": 10, "width_mult": 3000.0}
    wide = forge_lnz(tmp_path / "wide.lnz", header, payload)
    with pytest.raises(CheckpointError, match=r"width_mult=3000.0.*needs about"):
        load_compressed(wide)


def test_the_memory_check_never_opens_a_path_a_file_names(lnz, tmp_path):
    header, payload = lnz_parts(lnz)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block forever
    header["hparams"]["weights"] = str(fifo)
    evil = forge_lnz(tmp_path / "path.lnz", header, payload)

    def hang(signum, frame):
        raise AssertionError("the FIFO a file names was opened")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        with pytest.raises(CheckpointError, match="never opens a path that a file names"):
            load_compressed(evil)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_input_size_from_a_compressed_file_is_checked_before_allocating(lnz, image, tmp_path):
    header, payload = lnz_parts(lnz)
    header["dataset"] = {"name": "cifar10", "input_size": [3, 40_000, 40_000]}
    evil = forge_lnz(tmp_path / "size.lnz", header, payload)
    run = run_cli_measured(["predict", evil, image])
    one_line_refusal(run, "3x40000x40000", "needs about")
    header["dataset"]["input_size"] = "32"
    with pytest.raises(CheckpointError, match=r"input_size='32'"):
        load_compressed(forge_lnz(tmp_path / "size2.lnz", header, payload))


def test_a_real_compressed_file_still_loads_and_decodes_exactly(lnz):
    model, state = load_compressed(lnz)
    assert state["hparams"]["name"] == "squeezenet1_1"
    again, _ = load_compressed(lnz)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[key])


# -- safetensors metadata --------------------------------------------------------------------------


def test_safetensors_metadata_is_checked_before_building(image, tmp_path):
    from safetensors.torch import save_file

    model = lightnets.create_model("squeezenet1_1", variant="cifar", num_classes=10)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}

    def forge(hparams: dict, dataset: dict | None = None) -> Path:
        metadata = {"format": "lightnets-weights", "hparams": json.dumps(hparams)}
        if dataset is not None:
            metadata["dataset"] = json.dumps(dataset)
        path = tmp_path / f"evil{len(list(tmp_path.iterdir()))}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        return path

    classes = forge({**model.hparams, "num_classes": 20_000_000})
    run = run_cli_measured(["predict", "squeezenet1_1", "--weights", classes, image])
    one_line_refusal(run, str(classes), "num_classes=20000000", "needs about")
    wide = forge({"name": "mobilenet_v2", "num_classes": 10, "width_mult": 3000.0})
    size = forge(model.hparams, {"name": "cifar10", "input_size": [3, 40_000, 40_000]})
    for path, fragment in ((wide, "width_mult=3000.0"), (size, "3x40000x40000")):
        for load in (
            read_weights_file,
            lambda p: lightnets.create_model("squeezenet1_1", weights=p),
        ):
            with pytest.raises(CheckpointError, match=fragment) as info:
                load(path)
            assert "needs about" in str(info.value) and str(path) in str(info.value)


# -- PyTorch zip archives (.pth) -----------------------------------------------------------------


def deflated_zeros(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``size`` zero bytes and its CRC-32, made in milliseconds: 1 MiB
    compressed once up to a full flush (byte-aligned, no dictionary carried over), repeated."""
    mib = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(size >> 20):
        crc = zlib.crc32(mib, crc)
    return block * (size >> 20) + end, crc


def write_zip(path: Path, records: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip of (name, bytes as stored, uncompressed size, CRC, method) records, written as is."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, size, crc, method in records:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type, info.file_size, info.compress_size, info.CRC = (
                method,
                size,
                len(data),
                crc,
            )
            info.header_offset = archive.fp.tell()
            archive.fp.write(info.FileHeader(zip64=False))
            archive.fp.write(data)
            archive.filelist.append(info)
            archive.NameToInfo[name] = info
            archive.start_dir = archive.fp.tell()


def test_pth_with_a_deflated_gigabyte_record_is_refused_before_reading(image, tmp_path):
    # A real state dict of 123457 floats; its pickle then declares 2^28 of them (1 GiB), and
    # its one storage record is 1 GiB of zeros, deflated: a file of about 1 MB.
    honest = tmp_path / "honest.pth"
    torch.save({"w": torch.zeros(123_457)}, honest)
    numel = struct.pack("<i", 123_457)
    records = []
    with zipfile.ZipFile(honest) as archive:
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert data.count(numel) == 2  # numel and size
                data = data.replace(numel, struct.pack("<i", 1 << 28))
            if info.filename.endswith("data/0"):
                stream, crc = deflated_zeros(GIB)
                records.append((info.filename, stream, GIB, crc, zipfile.ZIP_DEFLATED))
                continue
            records.append((info.filename, data, len(data), zlib.crc32(data), 0))
    evil = tmp_path / "evil.pth"
    write_zip(evil, records)
    assert evil.stat().st_size < 1_100_000
    with zipfile.ZipFile(evil) as archive:  # a valid zip whose record inflates to 1 GiB
        assert max(i.file_size for i in archive.infolist()) == GIB
    for load in (
        read_weights_file,
        load_checkpoint,
    ):
        with pytest.raises(CheckpointError, match=r"would inflate to 1,073,741,824 bytes"):
            load(evil)
    run = run_cli_measured(["predict", "squeezenet1_1", "--weights", evil, image])
    one_line_refusal(run, "would inflate")
    # A record deflated by another zip tool within the limit still loads.
    redeflated = tmp_path / "redeflated.pth"
    with zipfile.ZipFile(honest) as src, zipfile.ZipFile(redeflated, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename), zipfile.ZIP_DEFLATED)
    loaded = read_weights_file(redeflated)
    assert torch.equal(loaded.tensors["w"], torch.zeros(123_457))


# -- CIFAR archives -------------------------------------------------------------------------


def test_cifar_archive_with_a_gigabyte_member_is_refused_from_its_header(tmp_path):
    from lightnets.data.cifar import load_cifar

    # A tar whose data_batch_1 declares (and holds) 1 GiB of zeros, gzipped as concatenated
    # members (gzip reads them as one stream): about 1 MB on disk.
    folder = tmp_path / "c10"
    folder.mkdir()
    archive = folder / "cifar-10-python.tar.gz"
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = GIB
    mib = gzip.compress(bytes(1 << 20), compresslevel=9)
    with open(archive, "wb") as out:
        out.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(GIB >> 20):
            out.write(mib)
        out.write(gzip.compress(bytes(1024)))  # the two empty end-of-archive blocks
    assert archive.stat().st_size < 1_500_000
    with pytest.raises(DataError, match=r"1,073,741,824 bytes; the official cifar10 file"):
        load_cifar("cifar10", archive)
    argv = ["train", "--model", "squeezenet1_1", "--dataset", "cifar10", "--data-dir", folder]
    run = run_cli_measured([*argv, "--output", tmp_path / "run", "--epochs", "1"])
    one_line_refusal(run, "data_batch_1", "refused before reading")


def test_cifar_folder_file_beyond_the_official_size_is_refused(tmp_path):
    from lightnets.data.cifar import load_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"c{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    with open(folder / "data_batch_1", "wb") as handle:
        handle.truncate(200 << 20)  # sparse: 200 MB declared, nothing written
    for name in ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (folder / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"data_batch_1: 209,715,200 bytes; the official"):
        load_cifar("cifar10", folder)


# -- predict streams its images; train checks --input-size first -------------------------------


def test_predict_runs_thousands_of_images_in_bounded_batches(tmp_path):
    from lightnets.deploy.prediction import PREDICT_BATCH, Preprocessing, predict

    rng = np.random.default_rng(1)
    distinct = []
    for i in range(40):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        distinct.append(path)
    paths = [distinct[i % len(distinct)] for i in range(3000)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 7))
    seen: list[int] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    pre = Preprocessing("cifar10", (0.5,) * 3, (0.25,) * 3, (3, 16, 16), None)
    results = predict(model, paths, pre, topk=3)
    assert len(results) == 3000 and sum(seen) == 3000 and max(seen) == PREDICT_BATCH
    # Oracle: each image alone gives the answer it got in its batch.
    for index, path in enumerate(distinct):
        alone = predict(model, [path], pre, topk=3)[0].topk
        for got in (results[index].topk, results[index + 40 * 70].topk):
            assert [i for i, _, _ in got] == [i for i, _, _ in alone]
            assert [p for _, _, p in got] == pytest.approx([p for _, _, p in alone], abs=1e-6)


def test_train_checks_input_size_before_generating_data(tmp_path):
    run = run_cli_measured(["train", "--model", "mobilenet_v2", "--dataset", "synthetic",
                            "--input-size", "100000", "--output", tmp_path / "run"])  # fmt: skip
    one_line_refusal(run, "3x100000x100000", "needs about")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_data_workers_are_bounded_by_the_cpus(tmp_path, capsys):
    from lightnets.train.config import max_workers

    limit = max_workers()
    run = tmp_path / "run"
    for workers in ("100000", str(limit + 1), "-1"):
        argv = ["train", "--model", "squeezenet1_1", "--epochs", "1", "--output", str(run)]
        code = main([*argv, "--workers", workers])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"--workers={workers} is not allowed; use an integer in 0..{limit}" in err, err
    assert not run.exists()
