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
"""

from __future__ import annotations

import heapq
import lzma
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lightnets.errors import CheckpointError

#: Huffman code lengths are limited to this many bits (a 64 K-entry decoding table).
MAX_CODE_LENGTH = 16
#: Raw LZMA2 (no container header: the file format records the method).
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]


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


def sparse_decode(entry_codes: np.ndarray, entry_gaps: np.ndarray, size: int) -> np.ndarray:
    """The inverse of :func:`sparse_encode`: flat codes of length ``size`` (0 = pruned)."""
    if len(entry_codes) != len(entry_gaps):
        raise CheckpointError("corrupted compressed layer: code and gap streams differ in length")
    positions = np.cumsum(entry_gaps.astype(np.int64) + 1) - 1
    if len(positions) and positions[-1] >= size:
        raise CheckpointError("corrupted compressed layer: an index lies outside the tensor")
    codes = np.zeros(size, dtype=np.uint8)
    codes[positions] = entry_codes
    return codes


#: A stream must hold its symbols and nothing more: extra bytes mean a wrong count or a forgery.
_LONGER = "corrupted compressed stream: it holds more than its declared {count} symbols"


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


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman code values: symbols sorted by (length, symbol) count up."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        previous = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


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


def check_code_lengths(lengths: np.ndarray) -> None:
    """Refuse a table of code lengths that is not a complete prefix code.

    Kraft's inequality: a prefix code with lengths l_i exists iff sum(2**-l_i) <= 1. A Huffman
    tree is full, so its code has sum == 1 exactly (a lone symbol gets one bit: 1/2). More than 1
    (over-subscribed) makes codes collide; less leaves bit patterns that decode to nothing. Either
    way the bits would decode to wrong symbols without any error, so both are refused.
    """
    used = lengths[lengths > 0]
    if len(used) == 0 or int(used.max()) > MAX_CODE_LENGTH:
        raise CheckpointError("corrupted compressed stream: bad Huffman table")
    kraft = int(sum(1 << (MAX_CODE_LENGTH - int(length)) for length in used))
    complete = kraft == 1 << MAX_CODE_LENGTH or (len(used) == 1 and int(used[0]) == 1)
    if not complete:
        state = "over-subscribed" if kraft > 1 << MAX_CODE_LENGTH else "incomplete"
        raise CheckpointError(
            f"corrupted compressed stream: the Huffman table is {state} (its code lengths "
            "break Kraft's equality sum(2^-length) = 1 of a Huffman code)"
        )


def huffman_decode(data: bytes, count: int) -> np.ndarray:
    """The inverse of :func:`huffman_encode` for ``count`` symbols (vectorised table lookup).

    The table is checked first (:func:`check_code_lengths`), and ``count`` against the bits
    there are (every symbol takes at least its shortest code's length), so a forged count
    cannot make the decoder allocate more than the stream's own size allows."""
    if count == 0:
        if data != struct.pack("<H", 0):
            raise CheckpointError(_LONGER.format(count=0))
        return np.zeros(0, dtype=np.uint8)
    if len(data) < 2:
        raise CheckpointError("corrupted compressed stream: Huffman table cut short")
    (alphabet,) = struct.unpack_from("<H", data)
    if not 1 <= alphabet <= 256 or len(data) < 2 + alphabet:
        raise CheckpointError("corrupted compressed stream: bad Huffman table")
    lengths = np.frombuffer(data, dtype=np.uint8, count=alphabet, offset=2).astype(np.int64)
    check_code_lengths(lengths)
    available_bits = 8 * (len(data) - 2 - alphabet)
    if count * int(lengths[lengths > 0].min()) > available_bits:
        raise CheckpointError(
            f"corrupted compressed stream: {count} Huffman symbols cannot fit in "
            f"{available_bits} bits"
        )
    width = int(lengths.max())
    codes = canonical_codes(lengths)
    # table[w] for every width-bit window w: the symbol whose code prefixes w, and its length.
    table_sym = np.zeros(1 << width, dtype=np.int64)
    table_len = np.ones(1 << width, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        start = int(codes[symbol]) << (width - int(lengths[symbol]))
        stop = start + (1 << (width - int(lengths[symbol])))
        table_sym[start:stop], table_len[start:stop] = symbol, lengths[symbol]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=2 + alphabet))
    bits = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    n = len(bits) - width
    window = np.zeros(n, dtype=np.int64)
    for j in range(width):
        window = (window << 1) | bits[j : j + n]
    # Symbol k starts where symbol k-1 started plus its length: follow those jumps for all
    # symbols at once by pointer doubling (log2(count) vectorised steps).
    jump = np.minimum(np.arange(n) + table_len[window], n - 1)
    starts = np.zeros(1, dtype=np.int64)
    while len(starts) < count:
        starts = np.concatenate([starts, jump[starts]])
        jump = jump[jump]
    starts = starts[:count]
    end = int(starts[-1]) + int(table_len[window[starts[-1]]])
    if end > n or (count > 1 and not bool((np.diff(starts) > 0).all())):
        raise CheckpointError("corrupted compressed stream: Huffman bits run out")
    if (end + 7) // 8 != n // 8:  # only the last byte's padding may follow the symbols
        raise CheckpointError(_LONGER.format(count=count))
    return table_sym[window[starts]].astype(np.uint8)


# -- the coders a stream may be stored with ------------------------------------------------


def pack_fixed(symbols: np.ndarray, bits: int) -> bytes:
    """Each symbol in ``bits`` bits, most significant first: the paper's pre-Huffman layout."""
    spread = (symbols[:, None].astype(np.int64) >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(spread.astype(np.uint8).reshape(-1)).tobytes()


def unpack_fixed(data: bytes, count: int, bits: int) -> np.ndarray:
    if len(data) > (count * bits + 7) // 8:
        raise CheckpointError(_LONGER.format(count=count))
    spread = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    if len(spread) < count * bits:
        raise CheckpointError("corrupted compressed stream: fixed-width data run out")
    weights = 1 << np.arange(bits - 1, -1, -1)
    return (spread.reshape(count, bits).astype(np.int64) @ weights).astype(np.uint8)


def _zstd():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


@dataclass(frozen=True)
class Coder:
    """A lossless coder of a uint8 symbol stream whose symbols fit in ``bits`` bits."""

    name: str
    encode: Callable[[np.ndarray, int], bytes]
    decode: Callable[[bytes, int, int], np.ndarray]


def _lzma_decode(data: bytes, count: int, bits: int) -> np.ndarray:
    """At most ``count`` bytes are ever inflated: a stream that holds more is refused, not
    decoded (a 469 KB stream can hold gigabytes of zeros)."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    raw = decompressor.decompress(data, max_length=count)
    if len(raw) == count and not decompressor.eof and decompressor.decompress(b"", max_length=1):
        raise CheckpointError(
            f"corrupted compressed stream (lzma): it inflates past its declared {count} bytes"
        )
    if len(raw) == count and (not decompressor.eof or decompressor.unused_data):
        raise CheckpointError(_LONGER.format(count=count))
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _zstd_decode(data: bytes, count: int, bits: int) -> np.ndarray:
    module = _zstd()
    if module is None:
        from lightnets.errors import MissingDependencyError

        raise MissingDependencyError(
            "this file has zstd-coded streams: pip install zstandard to read it"
        )
    # max_output_size bounds what is inflated, whatever the frame header claims.
    raw = module.ZstdDecompressor().decompress(data, max_output_size=max(count, 1))
    return np.frombuffer(raw, dtype=np.uint8).copy()


#: Registered coders, in the order they are tried (a tie keeps the earlier one).
CODERS: dict[str, Coder] = {
    "fixed": Coder("fixed", pack_fixed, unpack_fixed),
    "huffman": Coder(
        "huffman", lambda s, b: huffman_encode(s), lambda d, n, b: huffman_decode(d, n)
    ),
    "lzma": Coder(
        "lzma",
        lambda s, b: lzma.compress(s.tobytes(), format=lzma.FORMAT_RAW, filters=LZMA_FILTERS),
        _lzma_decode,
    ),
    "zstd": Coder(
        "zstd",
        lambda s, b: _zstd().ZstdCompressor(level=19).compress(s.tobytes()),
        _zstd_decode,
    ),
}


def available_coders() -> list[str]:
    """The coders usable here (zstd only when ``zstandard`` is importable)."""
    return [name for name in CODERS if name != "zstd" or _zstd() is not None]


def encode_stream(symbols: np.ndarray, bits: int) -> tuple[str, bytes, dict[str, int]]:
    """Encode with every available coder; returns (best name, its bytes, size per coder)."""
    symbols = np.ascontiguousarray(symbols, dtype=np.uint8)
    encoded = {name: CODERS[name].encode(symbols, bits) for name in available_coders()}
    best = min(encoded, key=lambda name: len(encoded[name]))
    return best, encoded[best], {name: len(data) for name, data in encoded.items()}


def decode_stream(method: str, data: bytes, count: int, bits: int) -> np.ndarray:
    """Decode ``count`` symbols stored by ``method``; any failure is a CheckpointError."""
    if method not in CODERS:
        raise CheckpointError(f"corrupted compressed file: unknown stream coder {method!r}")
    try:
        symbols = CODERS[method].decode(data, count, bits)
    except (CheckpointError, ImportError):
        raise
    except Exception as exc:  # lzma/zstd/numpy raise many types on garbage
        raise CheckpointError(f"corrupted compressed stream ({method}): {exc}") from exc
    if len(symbols) != count:
        raise CheckpointError(f"corrupted compressed stream ({method}): wrong symbol count")
    return symbols
