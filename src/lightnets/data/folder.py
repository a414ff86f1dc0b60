"""Image folders: ``root/train/<class>/*.jpg|png|...``, optional ``root/val/`` and ``root/test/``.

Class names are the sub-folder names of ``train/`` in sorted order (torchvision's ImageFolder
convention). Images are decoded lazily with Pillow in the loader's worker processes,
converted to RGB and brought to a fixed square size there:

- evaluation: shorter side resized to ``round(1.14 * S)`` (256 for S = 224), centre crop S x S;
- training: shorter side resized to ``L = round(1.14 * S)``, centre crop L x L; the random
  resized crop (Szegedy et al., 2015, *Going Deeper with Convolutions*, Section 6) and the
  horizontal flip then run on the batch, on the training device (``augment.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lightnets.data.dataset import ImageDataset
from lightnets.data.images import open_image
from lightnets.errors import DataError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)
RESIZE_RATIO = 1.14  # 256 / 224
DEFAULT_IMAGE_SIZE = 224


def load_size(image_size: int, train: bool) -> int:
    """Side of the square images the workers produce (see the module docstring)."""
    return round(RESIZE_RATIO * image_size) if train else image_size


def decode_image(path: Path, image_size: int, train: bool) -> np.ndarray:
    """Pillow decode -> RGB -> resize shorter side to round(1.14 S) -> centre crop; uint8 HWC.

    Opened with :func:`~lightnets.data.images.open_image` (its size limit; DataError if the
    file is not a readable image).
    """
    from PIL import Image

    short = round(RESIZE_RATIO * image_size)
    crop = load_size(image_size, train)
    with open_image(path) as image:
        image.draft("RGB", (short, short))  # JPEG: decode at reduced scale when possible
        image = image.convert("RGB")
        w, h = image.size
        scale = short / min(w, h)
        new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        left, top = (new_w - crop) // 2, (new_h - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
        return np.asarray(image, dtype=np.uint8)


class ImageFolderDataset(ImageDataset):
    """File paths + labels; images decoded on demand at ``image_size`` (see module docstring)."""

    def __init__(self, files: Sequence[Path], labels: torch.Tensor, image_size: int) -> None:
        self.files = [Path(f) for f in files]
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.image_size = int(image_size)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageFolderDataset:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageFolderDataset(
            [self.files[i] for i in index.tolist()], self.labels[index], self.image_size
        )

    @property
    def num_channels(self) -> int:
        return 3

    def load(self, index: int, train: bool) -> tuple[torch.Tensor, str | None]:
        """Image ``index`` as uint8 (3, L, L), or a zero image and the error message."""
        try:
            array = decode_image(self.files[index], self.image_size, train)
        except DataError as exc:
            side = load_size(self.image_size, train)
            return torch.zeros(3, side, side, dtype=torch.uint8), str(exc)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), None

    def __repr__(self) -> str:
        return f"ImageFolderDataset({len(self)} files, image_size={self.image_size})"


def scan_split(
    directory: Path, classes: list[str] | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels under ``directory/<class>/``; ``classes`` fixes the label order.

    Without ``classes`` (the training split, which defines them) every class folder must hold
    an image; with them (val/, test/) a class may be absent.
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory (expected <root>/train/<class>/<image>)")
    found = sorted(p.name for p in directory.iterdir() if p.is_dir())
    defines_classes = classes is None
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"{directory}: class folders {unknown} are not in train/ "
                f"(train/ has {len(classes)} classes)"
            )
    files: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        class_dir = directory / name
        if not class_dir.is_dir():
            continue
        found_files = [
            f
            for f in sorted(class_dir.rglob("*"))
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
        ]
        if not found_files:
            empty.append(name)
        files += found_files
        labels += [label] * len(found_files)
    if files and empty and defines_classes:
        # A class without training images is a class the model could never learn.
        raise DataError(
            f"{directory}: class folder(s) {empty} hold no images (extensions: "
            f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s)"
        )
    if not files:
        raise DataError(
            f"{directory}: no images found (extensions: "
            f"{', '.join(IMAGE_EXTENSIONS)}) in class sub-folders"
        )
    return files, labels, classes


def load_folder(
    root: str | Path, image_size: int
) -> tuple[ImageFolderDataset, ImageFolderDataset | None, ImageFolderDataset | None, list[str]]:
    """(train, val or None, test or None, classes) of an image-folder tree."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected <root>/train/<class>/<image>)")
    files, labels, classes = scan_split(root / "train")
    if len(classes) < 2:
        raise DataError(f"{root / 'train'}: found {len(classes)} class folder(s), need at least 2")
    train = ImageFolderDataset(files, torch.tensor(labels), image_size)
    held_out: list[ImageFolderDataset | None] = []
    for name in ("val", "test"):
        if (root / name).is_dir():
            f, y, _ = scan_split(root / name, classes)
            held_out.append(ImageFolderDataset(f, torch.tensor(y), image_size))
        else:
            held_out.append(None)
    return train, held_out[0], held_out[1], classes
