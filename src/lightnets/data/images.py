"""The one way lightnets opens an image file: :func:`open_image`.

Every path that decodes a user's image (image-folder data sets, ``lightnets predict``) goes
through it, so every path has the same limit against decompression bombs -- a small file that
decodes to gigabytes -- and the same one-line :class:`~lightnets.errors.DataError` for a file
that is not a readable image. The limit is checked on the header, before any pixel is decoded.

Pixels are 8-bit for everything downstream (``convert("L")``, ``convert("RGB")``). Pillow opens
a 16-bit grayscale image (PNG, TIFF, PGM) as ``I;16`` / ``I`` with values up to 65535, and its
``convert("L")`` then clips every value above 255 to white; such an image is brought to 8 bits
here at its real scale (``round(v / 257)``: 65535 -> 255, and an 8-bit image saved as 16-bit,
``v * 257``, gets its own pixels back). Colour images with 16 bits per channel Pillow already
reads as 8-bit RGB(A). Pixels with no fixed range (32-bit float) are refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from lightnets.errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image

#: Largest image accepted, in pixels: Pillow's own decompression-bomb threshold (about
#: 9,459 x 9,459; 256 MiB as RGBA). Pillow only warns between this and twice it; we refuse.
MAX_IMAGE_PIXELS = 89_478_485


#: Pillow modes holding 16-bit unsigned pixels (0..65535).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _eight_bit(path: Path, image: Image) -> Image:
    """``image`` with 8-bit pixels at their real scale (module docstring)."""
    from PIL import Image as PILImage

    mode = image.mode
    if mode not in SIXTEEN_BIT_MODES and mode not in ("I", "F"):
        return image
    import numpy as np

    values = np.asarray(image)
    if mode in ("I", "F") and not _declares_sixteen_bits(image):
        raise DataError(
            f"{path}: {image.format or ''} image of {mode} pixels (32-bit): their scale is "
            "unknown; save it with 8 or 16 bits per channel"
        )
    scaled = (values.astype(np.uint32) + 128) // 257  # round(v / 257): 65535 -> 255
    return PILImage.fromarray(scaled.astype(np.uint8), mode="L")


def _declares_sixteen_bits(image: Image) -> bool:
    """Whether an ``I``-mode image's file says it has 16-bit pixels: a 16-bit PNG or PGM
    (Pillow's only reason for ``I`` there), a TIFF with 16 bits per sample."""
    if image.format in ("PNG", "PPM"):
        return True
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample
        return bits in (16, (16,))
    return False


@contextmanager
def open_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator[Image]:
    """Open ``path`` with Pillow (lazily, as ``Image.open``) for use in a ``with`` block.

    Raises DataError, naming the file, when it is missing, not an image, larger than
    ``max_pixels``, or fails to decode inside the block (truncated data and the like).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # The limit below replaces Pillow's warning (which still decodes the image).
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise DataError(
                        f"{path}: {width}x{height} image ({width * height:,} pixels) exceeds "
                        f"the limit of {max_pixels:,} pixels (a decompression bomb?); "
                        "resize it first"
                    )
                yield _eight_bit(path, image)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such image file") from exc
    except PILImage.DecompressionBombError as exc:  # Pillow's own refusal, at twice its limit
        raise DataError(
            f"{path}: image exceeds the limit of {max_pixels:,} pixels (a decompression bomb?); "
            f"resize it first ({exc})"
        ) from exc
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
