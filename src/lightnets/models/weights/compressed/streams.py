"""Decoding the streams of a compressed file: sparse relative indices and the four coders.

The inverse of Deep Compression's storage stage (Han, Mao & Dally, ICLR 2016, Sections 2 and 4;
the encoders are in :mod:`lightnets.deploy.compression.coding`). A layer's entries carry a code
(0 for a pruned weight or a filler) and a gap: the number of zeros skipped before it (the
previous index of the first entry being -1). Each stream is stored by one of :data:`DECODERS`:
fixed-width bit packing, canonical Huffman coding, raw LZMA2 or Zstandard.

Nothing a stream declares is believed: each is decoded to exactly the symbol count its header
declares (itself checked against the model, :mod:`.tensors`) and must hold nothing more; a
Huffman table must be a complete prefix code (Kraft's equality); LZMA and Zstandard never
inflate past that count.
"""

from __future__ import annotations

import lzma
import struct
from collections.abc import Callable
from types import ModuleType

import numpy as np

from lightnets.errors import CheckpointError, MissingDependencyError

#: Huffman code lengths are limited to this many bits (a 64 K-entry decoding table).
MAX_CODE_LENGTH = 16
#: Raw LZMA2 (no container header: the file format records the method).
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
#: A stream must hold its symbols and nothing more: extra bytes mean a wrong count or a forgery.
_LONGER = "corrupted compressed stream: it holds more than its declared {count} symbols"


def sparse_decode(entry_codes: np.ndarray, entry_gaps: np.ndarray, size: int) -> np.ndarray:
    """Entry codes and gaps -> flat weight codes of length ``size`` (0 = pruned)."""
    if len(entry_codes) != len(entry_gaps):
        raise CheckpointError("corrupted compressed layer: code and gap streams differ in length")
    positions = np.cumsum(entry_gaps.astype(np.int64) + 1) - 1
    if len(positions) and positions[-1] >= size:
        raise CheckpointError("corrupted compressed layer: an index lies outside the tensor")
    codes = np.zeros(size, dtype=np.uint8)
    codes[positions] = entry_codes
    return codes


# -- canonical Huffman coding ----------------------------------------------------------------


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
    """``count`` symbols from a table (number of lengths, one length byte per symbol) + bits.

    The table is checked first (:func:`check_code_lengths`), and ``count`` against the bits
    there are (every symbol takes at least its shortest code's length), so a forged count
    cannot make the decoder allocate more than the stream's own size allows. Decoding is a
    vectorised table lookup."""
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


# -- the other coders ------------------------------------------------------------------------


def unpack_fixed(data: bytes, count: int, bits: int) -> np.ndarray:
    """``count`` symbols of ``bits`` bits each, most significant first (the paper's layout
    before Huffman coding)."""
    if len(data) > (count * bits + 7) // 8:
        raise CheckpointError(_LONGER.format(count=count))
    spread = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    if len(spread) < count * bits:
        raise CheckpointError("corrupted compressed stream: fixed-width data run out")
    weights = 1 << np.arange(bits - 1, -1, -1)
    return (spread.reshape(count, bits).astype(np.int64) @ weights).astype(np.uint8)


def zstd_module() -> ModuleType | None:
    """The optional ``zstandard`` package, or None when it is not installed."""
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def lzma_decode(data: bytes, count: int, bits: int) -> np.ndarray:
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


def zstd_decode(data: bytes, count: int, bits: int) -> np.ndarray:
    """At most ``count`` bytes are inflated, whatever the frame header claims."""
    module = zstd_module()
    if module is None:
        raise MissingDependencyError(
            "this file has zstd-coded streams: pip install zstandard to read it"
        )
    raw = module.ZstdDecompressor().decompress(data, max_output_size=max(count, 1))
    return np.frombuffer(raw, dtype=np.uint8).copy()


#: A stream decoder: (stored bytes, symbol count, bits per symbol) -> uint8 symbols.
Decoder = Callable[[bytes, int, int], np.ndarray]
#: The coders a stream may name in its header, by name.
DECODERS: dict[str, Decoder] = {
    "fixed": unpack_fixed,
    "huffman": lambda data, count, bits: huffman_decode(data, count),
    "lzma": lzma_decode,
    "zstd": zstd_decode,
}


def decode_stream(method: str | None, data: bytes, count: int, bits: int) -> np.ndarray:
    """Decode ``count`` symbols stored by ``method``; any failure is a CheckpointError."""
    if method is None or method not in DECODERS:
        raise CheckpointError(f"corrupted compressed file: unknown stream coder {method!r}")
    try:
        symbols = DECODERS[method](data, count, bits)
    except (CheckpointError, ImportError):
        raise
    except Exception as exc:  # lzma/zstd/numpy raise many types on garbage
        raise CheckpointError(f"corrupted compressed stream ({method}): {exc}") from exc
    if len(symbols) != count:
        raise CheckpointError(f"corrupted compressed stream ({method}): wrong symbol count")
    return symbols
