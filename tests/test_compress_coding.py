"""Deep Compression's coding stage: exact round trips, filler zeros, Huffman near the entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightnets.deploy.compression import coding
from lightnets.deploy.compression.sharing import kmeans_linear, share_weights
from lightnets.errors import CheckpointError
from lightnets.models.weights.compressed import streams

FIBONACCI = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765]


def test_length_limit_applies():
    assert coding.huffman_lengths(np.array(FIBONACCI), limit=64).max() == 19
    assert coding.huffman_lengths(np.array(FIBONACCI)).max() == streams.MAX_CODE_LENGTH


def entropy_bits(symbols: np.ndarray) -> float:
    p = np.bincount(symbols) / len(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * len(symbols))


@pytest.mark.parametrize(
    "symbols",
    [
        np.zeros(0, dtype=np.uint8),
        np.full(7, 3, dtype=np.uint8),  # one symbol: a 1-bit code
        np.array([0, 1], dtype=np.uint8),
        np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint8),
        np.random.default_rng(1).geometric(0.3, 20000).clip(max=255).astype(np.uint8),
        # Fibonacci counts give a 19-deep tree: the 16-bit limit must still decode exactly.
        np.repeat(np.arange(20, dtype=np.uint8), FIBONACCI),
    ],
)
def test_every_coder_round_trips_exactly(symbols):
    bits = max(1, int(symbols.max()).bit_length()) if len(symbols) else 1
    for name in coding.available_coders():
        data = coding.CODERS[name].encode(symbols, bits)
        assert np.array_equal(streams.decode_stream(name, data, len(symbols), bits), symbols), name


def test_huffman_is_within_one_bit_per_symbol_of_the_entropy():
    # Shannon's bound for an optimal prefix code: H <= mean length < H + 1 (plus the table).
    symbols = np.random.default_rng(2).geometric(0.2, 50000).clip(max=60).astype(np.uint8)
    data = coding.huffman_encode(symbols)
    payload_bits = 8 * (len(data) - 2 - (int(symbols.max()) + 1))
    h = entropy_bits(symbols)
    assert h <= payload_bits < h + len(symbols) + 8
    lengths = coding.huffman_lengths(np.bincount(symbols))
    assert sum(2.0 ** -int(n) for n in lengths if n) <= 1.0  # Kraft: a prefix code


def test_sparse_indices_use_filler_zeros_for_long_gaps():
    # Deep Compression, Figure 2 (3-bit gaps there): a gap beyond the field adds filler zeros.
    codes = np.zeros(40, dtype=np.uint8)
    codes[[1, 4, 23, 39]] = [5, 6, 7, 1]
    entry_codes, entry_gaps = coding.sparse_encode(codes, 3)
    # gaps (zeros skipped): 1, 2, 18 -> filler (7 zeros) + filler + 2, 15 -> filler + 7
    assert entry_codes.tolist() == [5, 6, 0, 0, 7, 0, 1]
    assert entry_gaps.tolist() == [1, 2, 7, 7, 2, 7, 7]
    assert np.array_equal(streams.sparse_decode(entry_codes, entry_gaps, 40), codes)


@pytest.mark.parametrize("index_bits", [1, 3, 5, 8])
def test_sparse_round_trip_random_masks(index_bits):
    rng = np.random.default_rng(index_bits)
    codes = (rng.random(30000) < 0.05) * rng.integers(1, 64, 30000)
    codes = codes.astype(np.uint8)
    entry_codes, entry_gaps = coding.sparse_encode(codes, index_bits)
    assert int(entry_gaps.max()) < 2**index_bits
    assert int((entry_codes != 0).sum()) == int((codes != 0).sum())
    assert np.array_equal(streams.sparse_decode(entry_codes, entry_gaps, len(codes)), codes)


def test_truncated_streams_are_rejected():
    symbols = np.random.default_rng(3).integers(0, 16, 4000).astype(np.uint8)
    for name in coding.available_coders():
        data = coding.CODERS[name].encode(symbols, 4)
        with pytest.raises(CheckpointError):
            streams.decode_stream(name, data[: len(data) // 2], len(symbols), 4)


def test_kmeans_linear_init_matches_lloyd_oracle():
    # Oracle: a plain Lloyd iteration (nearest centroid by brute force) from the same linear
    # initialisation converges to the same centroids.
    values = torch.randn(3000, generator=torch.Generator().manual_seed(0))
    centroids, assignment = kmeans_linear(values, 7)
    ref = torch.linspace(float(values.min()), float(values.max()), 7, dtype=torch.float64)
    v = values.double()
    for _ in range(200):
        nearest = (v[:, None] - ref[None]).abs().argmin(1)
        ref = torch.stack(
            [v[nearest == k].mean() if (nearest == k).any() else ref[k] for k in range(7)]
        )
    assert torch.allclose(centroids.double(), ref, atol=1e-6)
    assert torch.equal(assignment, (v[:, None] - centroids.double()[None]).abs().argmin(1))


@pytest.mark.parametrize("bits", [1, 2, 5, 8])
def test_share_weights_codebook_size_and_zero(bits):
    w = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(bits))
    w[w.abs() < 0.5] = 0
    book, codes = share_weights(w, bits)
    assert book[0] == 0 and 2 <= len(book) <= 2**bits
    assert torch.equal(codes == 0, w == 0)
    assert int(codes.max()) == len(book) - 1  # no unused entries stored
    error = (book[codes] - w).abs().max()
    assert error <= (float(w.max()) - float(w.min())) / 2 ** (bits - 1)
    assert math.isfinite(float(error))
