"""ShuffleNet V2's controlled experiments (Ma et al., ECCV 2018, Section 2), as data.

Source: "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design",
arXiv:1807.11164, Section 2, Tables 1-4 and Appendix Fig. 1. Every number below is printed
in the paper; nothing here is computed. Hardware (Section 2): GPU = one GTX 1080Ti, cuDNN 7.0,
benchmark mode on, figures in batches/s; ARM = Qualcomm Snapdragon 810, one thread, figures in
images/s (Tables 2-4 head that column "CPU"; the text calls it ARM).

The columns x1, x2, x4 multiply the channel numbers of the x1 configuration (so MACs grow
4x and 16x): Table 3 and Table 4 print them as c=128/256/512 (GPU) and c=64/128/256 (ARM),
and the ARM images/s fall roughly as 1/k^2 across them in every table.

What the paper does not print, and what lightnets assumes (named in every report):
- Feature map: Tables 1-3 say "Input image size is 56 x 56"; Table 4's caption names no
  size, and 56 x 56 is used for it too.
- Table 4's "bottleneck" unit (1x1, 3x3, 1x1 convolutions, ReLU, shortcut, He et al. 2016):
  "c is the number of channels in unit"; lightnets uses c for all three convolutions, with
  BatchNorm folded away as at inference.
- Appendix Fig. 1 draws the fragment blocks; the text says each block "consists of from 1 to 4
  1x1 convolutions, which are arranged in sequence or in parallel" and the caption of Table 3
  that "the channel number in other fragmented structures is adjusted so that the FLOPs is
  the same as 1-fragment". lightnets builds k convolutions of width c' = round(c / sqrt(k)),
  in sequence, or in parallel on the same input with their outputs summed.
- Table 2's ARM width c=180 at g=8 cannot be split into 8 groups; lightnets uses 176, the
  multiple of 8 nearest in MACs (c^2/g 3872 against 4050).
- The GPU batch size of Tables 1-4 is not stated (Fig. 1 uses 8 for whole networks).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FEATURE_MAP",
    "GUIDELINE_TABLES",
    "PAPER",
    "SCALES",
    "GuidelineRow",
    "GuidelineTable",
]

PAPER = "ShuffleNet V2 (Ma et al., ECCV 2018, arXiv:1807.11164)"
#: Height and width of every benchmark network's feature map (Tables 1-3 captions).
FEATURE_MAP = 56
#: The paper's three columns per platform: channel numbers x1, x2, x4.
SCALES = (1, 2, 4)
#: Blocks (or layers) stacked in every benchmark network (Section 2, G1-G4).
REPEATS = 10


@dataclass(frozen=True)
class GuidelineRow:
    """One row of Tables 1-4.

    ``gpu_channels`` / ``arm_channels``: the x1 configuration the paper ran on each platform
    (G1: (c1, c2); G2: (c,); G3, G4: (c,) of the 1-fragment / bottleneck unit).
    ``gpu`` (batches/s) and ``arm`` (images/s) at x1, x2, x4.
    """

    config: str
    gpu_channels: tuple[int, ...]
    arm_channels: tuple[int, ...]
    gpu: tuple[float, float, float]
    arm: tuple[float, float, float]
    groups: int = 1
    fragments: int = 1
    arrangement: str = "series"
    relu: bool = True
    shortcut: bool = True


@dataclass(frozen=True)
class GuidelineTable:
    guideline: str
    claim: str
    source: str
    rows: tuple[GuidelineRow, ...]


_R = GuidelineRow

GUIDELINE_TABLES: dict[str, GuidelineTable] = {
    "G1": GuidelineTable(
        "G1",
        "equal channel width minimizes memory access cost",
        f"{PAPER}, Section 2, Table 1: 10 blocks of two 1x1 convs c1->c2->c1, 56x56",
        (
            _R("1:1", (128, 128), (32, 32), (1480, 723, 232), (76.2, 21.7, 5.3)),
            _R("1:2", (90, 180), (22, 44), (1296, 586, 206), (72.9, 20.5, 5.1)),
            _R("1:6", (52, 312), (13, 78), (876, 489, 189), (69.1, 17.9, 4.6)),
            _R("1:12", (36, 432), (9, 108), (748, 392, 163), (57.6, 15.1, 4.4)),
        ),
    ),
    "G2": GuidelineTable(
        "G2",
        "excessive group convolution increases memory access cost",
        f"{PAPER}, Section 2, Table 2: 10 pointwise group convs c->c, 56x56",
        (
            _R("g=1", (128,), (64,), (2451, 1289, 437), (40.0, 10.2, 2.3), groups=1),
            _R("g=2", (180,), (90,), (1725, 873, 341), (35.0, 9.5, 2.2), groups=2),
            _R("g=4", (256,), (128,), (1026, 644, 338), (32.9, 8.7, 2.1), groups=4),
            _R("g=8", (360,), (180,), (634, 445, 230), (27.8, 7.5, 1.8), groups=8),
        ),
    ),
    "G3": GuidelineTable(
        "G3",
        "network fragmentation reduces degree of parallelism",
        f"{PAPER}, Section 2, Table 3 and Appendix Fig. 1: 10 blocks of 1-4 1x1 convs, 56x56",
        (
            _R("1-fragment", (128,), (64,), (2446, 1274, 434), (40.2, 10.1, 2.3)),
            _R(
                "2-fragment-series", (128,), (64,), (1790, 909, 336), (38.6, 10.1, 2.2), fragments=2
            ),
            _R("4-fragment-series", (128,), (64,), (752, 745, 349), (38.4, 10.1, 2.3), fragments=4),
            _R(
                "2-fragment-parallel",
                (128,),
                (64,),
                (1537, 803, 320),
                (33.4, 9.1, 2.2),
                fragments=2,
                arrangement="parallel",
            ),
            _R(
                "4-fragment-parallel",
                (128,),
                (64,),
                (691, 572, 292),
                (35.0, 8.4, 2.1),
                fragments=4,
                arrangement="parallel",
            ),
        ),
    ),
    "G4": GuidelineTable(
        "G4",
        "element-wise operations are non-negligible",
        f"{PAPER}, Section 2, Table 4: 10 ResNet bottleneck units (1x1, 3x3, 1x1)",
        (
            _R("relu+shortcut", (32,), (32,), (2427, 2066, 1436), (56.7, 16.9, 5.0)),
            _R("relu", (32,), (32,), (2647, 2256, 1735), (61.9, 18.8, 5.2), shortcut=False),
            _R("shortcut", (32,), (32,), (2672, 2121, 1458), (57.3, 18.2, 5.1), relu=False),
            _R(
                "none",
                (32,),
                (32,),
                (2842, 2376, 1782),
                (66.3, 20.2, 5.4),
                relu=False,
                shortcut=False,
            ),
        ),
    ),
}
