"""Deep Compression for the zoo and for trained checkpoints (SqueezeNet's "< 0.5 MB").

Han, Mao & Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding", ICLR 2016; SqueezeNet (Iandola et al. 2016), Section 4 and
Table 2. One module per stage: :mod:`.pruning` (magnitude pruning), :mod:`.sharing` (k-means
weight sharing, trained centroids), :mod:`.coding` (sparse relative indices, Huffman / LZMA /
Zstandard), :mod:`.format` (the file), :mod:`.codec` (model -> streams), :mod:`.pipeline`
and :mod:`.report`. The reader (``load_compressed``, re-exported here) sits below, beside the
other weight formats: :mod:`lightnets.models.weights.compressed`.

>>> from lightnets import create_model
>>> from lightnets.deploy.compression import compress, load_compressed
>>> report, _ = compress(create_model("squeezenet1_0"), "sq.lnz")   # doctest: +SKIP
>>> model, state = load_compressed("sq.lnz")                        # doctest: +SKIP
"""

from __future__ import annotations

from lightnets.deploy.compression.pipeline import (
    CompressionData,
    CompressionSettings,
    compress,
    parse_per_layer_bits,
)
from lightnets.deploy.compression.report import CompressionReport, print_report
from lightnets.models.weights.compressed import is_compressed, load_compressed

__all__ = [
    "CompressionData",
    "CompressionReport",
    "CompressionSettings",
    "compress",
    "is_compressed",
    "load_compressed",
    "parse_per_layer_bits",
    "print_report",
]
