"""The one way lightnets opens an image file: :func:`open_image`.

Every path that decodes a user's image (image-folder data sets, ``lightnets predict``) goes
through it, so every path has the same limit against decompression bombs -- a small file that
decodes to gigabytes -- and the same one-line :class:`~lightnets.errors.DataError` for a file
that is not a readable image. The limit is checked on the header, before any pixel is decoded.
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
                yield image
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
