"""The kinds of operation the counter reports: one enum, used by every report, table and figure.

:class:`OpKind` is a :class:`~enum.StrEnum`: each member *is* its string (``OpKind.CONV ==
"conv"``), so JSON, CSV and Markdown output carry the plain names and code written against the
strings keeps working.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10 (the oldest supported): the same behaviour, written out

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


__all__ = ["MAC_KINDS", "TIMED_KINDS", "OpKind"]


class OpKind(StrEnum):
    """What one executed ATen operation does, as :attr:`LayerRecord.kind` reports it."""

    CONV = "conv"
    POINTWISE_CONV = "pointwise_conv"
    DEPTHWISE_CONV = "depthwise_conv"
    GROUP_CONV = "group_conv"
    CONV_TRANSPOSE = "conv_transpose"
    LINEAR = "linear"
    MATMUL = "matmul"
    BATCHNORM = "batchnorm"
    NORM = "norm"
    ACTIVATION = "activation"
    ADD = "add"
    MUL = "mul"
    SOFTMAX = "softmax"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    GLOBAL_POOL = "global_pool"
    REDUCE = "reduce"
    CONCAT = "concat"
    CHANNEL_SHUFFLE = "channel_shuffle"
    PERMUTE_COPY = "permute_copy"
    COPY = "copy"
    ALLOC = "alloc"
    VIEW = "view"
    OTHER = "other"
    UNKNOWN = "unknown"


#: Kinds whose multiply-accumulates are counted as MACs (convolutions and matrix products).
MAC_KINDS = frozenset(
    {
        OpKind.CONV,
        OpKind.POINTWISE_CONV,
        OpKind.DEPTHWISE_CONV,
        OpKind.GROUP_CONV,
        OpKind.CONV_TRANSPOSE,
        OpKind.LINEAR,
        OpKind.MATMUL,
    }
)

#: Kinds the roofline times one by one (a weight tensor and a recorded geometry to rebuild).
TIMED_KINDS = frozenset(
    {
        OpKind.CONV,
        OpKind.POINTWISE_CONV,
        OpKind.DEPTHWISE_CONV,
        OpKind.GROUP_CONV,
        OpKind.LINEAR,
    }
)
