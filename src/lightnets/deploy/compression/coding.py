"""Deep Compression's storage stage: sparse relative indices, then entropy coding.

Han, Mao & Dally, "Deep Compression", ICLR 2016
(https://www.arxiv-vanity.com/papers/1510.00149/):

- Section 2 (Figure 2): a pruned layer is stored as its non-zero weights plus, for each, the
  *difference* between its index and the previous one, written with a fixed number of bits
  (8 for convolutional layers, 5 for fully connected ones). When a gap does not fit, a *filler
  zero* is stored: an entry at the largest representable gap whose weight is zero.
- Section 4: Huffman coding of the quantized weights and of the sparse index differences
  (lossless, 20-30% smaller on AlexNet).

Here a gap counts the zeros skipped before an entry (``index - previous index - 1``, the
previous index of the first entry being -1), so a ``b``-bit gap field holds 0 .. 2**b - 1 and
a filler entry stands at position ``previous + 2**b``. Weight code 0 is reserved for zero (the
fillers); codes 1 .. 2**bits - 1 index the shared weights.

Each stream (codes, gaps) is stored in whichever of :data:`CODERS` makes it smallest: the
fixed-width bit packing of the paper before Huffman, canonical Huffman coding (written here,
with :mod:`heapq`), or the general-purpose LZMA (stdlib) and Zstandard (only when the optional
``zstandard`` package is importable) compressors, whose sizes are reported for comparison.
The decoders, which read files, sit below with the file reader
(:mod:`lightnets.models.weights.compressed.streams`).
"""

from __future__ import annotations

import heapq
import lzma
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lightnets.models.weights.compressed.streams import (
    DECODERS,
    LZMA_FILTERS,
    MAX_CODE_LENGTH,
    Decoder,
    canonical_codes,
    zstd_module,
)

# -- sparse relative indices (Figure 2) -----------------------------------------------------


def sparse_encode(codes: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat weight codes (0 = pruned) -> (entry codes, entry gaps), with filler zeros.

    ``codes`` is the layer's weight tensor flattened in C order, each weight replaced by its
    shared-weight code (0 where pruned). Returns uint8 arrays of equal length: the code of each
    stored entry (0 for a filler) and the number of zeros skipped before it (< 2**index_bits).
    """
    positions = np.flatnonzero(codes).astype(np.int64)
    gaps = np.diff(positions, prepend=-1) - 1
    span = 1 << index_bits
    fillers = gaps // span  # filler entries needed before each real entry
    total = len(positions) + int(fillers.sum())
    entry_codes = np.zeros(total, dtype=np.uint8)
    entry_gaps = np.full(total, span - 1, dtype=np.uint8)
    # Each real entry sits after its fillers: its slot is its rank plus all fillers so far.
    slots = np.arange(len(positions)) + np.cumsum(fillers)
    entry_codes[slots] = codes[positions]
    entry_gaps[slots] = gaps - fillers * span
    return entry_codes, entry_gaps


# -- canonical Huffman coding ----------------------------------------------------------------


def huffman_lengths(counts: np.ndarray, limit: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Code length of each symbol (0 for unused ones), from a Huffman tree built with heapq.

    Lengths over ``limit`` are avoided as zlib does: halve the counts (keeping them >= 1) and
    rebuild, which flattens the tree at a negligible cost in size.
    """
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    weights = counts[used]
    while True:
        heap = [(int(w), i, [int(s)]) for i, (w, s) in enumerate(zip(weights, used, strict=True))]
        heapq.heapify(heap)
        depth = dict.fromkeys(used.tolist(), 0)
        tie = len(heap)
        while len(heap) > 1:
            w1, _, s1 = heapq.heappop(heap)
            w2, _, s2 = heapq.heappop(heap)
            for symbol in s1 + s2:
                depth[symbol] += 1
            heapq.heappush(heap, (w1 + w2, tie, s1 + s2))
            tie += 1
        if max(depth.values()) <= limit:
            lengths[list(depth)] = list(depth.values())
            return lengths
        weights = np.maximum(weights // 2, 1)


def huffman_encode(symbols: np.ndarray) -> bytes:
    """Symbols (uint8) -> table (number of lengths, then one length byte per symbol) + bits."""
    if len(symbols) == 0:
        return struct.pack("<H", 0)
    counts = np.bincount(symbols, minlength=1)
    lengths = huffman_lengths(counts)
    codes = canonical_codes(lengths)
    sym_len, sym_code = lengths[symbols], codes[symbols]
    # Spread every code over its bits, most significant first, then pack.
    total = int(sym_len.sum())
    ends = np.cumsum(sym_len)
    owner = np.repeat(np.arange(len(symbols)), sym_len)
    shift = ends[owner] - 1 - np.arange(total)
    bits = ((sym_code[owner] >> shift) & 1).astype(np.uint8)
    header = struct.pack("<H", len(lengths)) + lengths.astype(np.uint8).tobytes()
    return header + np.packbits(bits).tobytes()


# -- the coders a stream may be stored with ------------------------------------------------


def pack_fixed(symbols: np.ndarray, bits: int) -> bytes:
    """Each symbol in ``bits`` bits, most significant first: the paper's pre-Huffman layout."""
    spread = (symbols[:, None].astype(np.int64) >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(spread.astype(np.uint8).reshape(-1)).tobytes()


def _lzma_encode(symbols: np.ndarray, bits: int) -> bytes:
    return lzma.compress(symbols.tobytes(), format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)


def _zstd_encode(symbols: np.ndarray, bits: int) -> bytes:
    module = zstd_module()
    if module is None:  # available_coders() leaves zstd out then
        raise RuntimeError("zstd encoding needs the zstandard package")
    return module.ZstdCompressor(level=19).compress(symbols.tobytes())


@dataclass(frozen=True)
class Coder:
    """A lossless coder of a uint8 symbol stream whose symbols fit in ``bits`` bits."""

    name: str
    encode: Callable[[np.ndarray, int], bytes]
    decode: Decoder


#: Registered coders, in the order they are tried (a tie keeps the earlier one).
CODERS: dict[str, Coder] = {
    "fixed": Coder("fixed", pack_fixed, DECODERS["fixed"]),
    "huffman": Coder("huffman", lambda s, b: huffman_encode(s), DECODERS["huffman"]),
    "lzma": Coder("lzma", _lzma_encode, DECODERS["lzma"]),
    "zstd": Coder("zstd", _zstd_encode, DECODERS["zstd"]),
}


def available_coders() -> list[str]:
    """The coders usable here (zstd only when ``zstandard`` is importable)."""
    return [name for name in CODERS if name != "zstd" or zstd_module() is not None]


def encode_stream(symbols: np.ndarray, bits: int) -> tuple[str, bytes, dict[str, int]]:
    """Encode with every available coder; returns (best name, its bytes, size per coder)."""
    symbols = np.ascontiguousarray(symbols, dtype=np.uint8)
    encoded = {name: CODERS[name].encode(symbols, bits) for name in available_coders()}
    best = min(encoded, key=lambda name: len(encoded[name]))
    return best, encoded[best], {name: len(data) for name, data in encoded.items()}
