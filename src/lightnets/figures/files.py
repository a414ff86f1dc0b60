"""Where figures go: ``--plot FILE`` checked before the long work, files written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightnets import fileio

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "check_plot_output", "check_writable", "save_figure"]

#: The figure formats lightnets writes, by file suffix.
FORMATS = (".png", ".svg", ".pdf")


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail now, before a long measurement, if ``path`` cannot be written as a figure."""
    return fileio.check_writable(path, suffixes=FORMATS)


def check_plot_output(
    path: str | os.PathLike[str], *, force: bool, inputs: Sequence[str] = ()
) -> Path:
    """``--plot FILE`` checked by the rule every written file follows
    (:func:`lightnets.fileio.check_output`): a figure format, not an input, and an existing
    file replaced only with a yes or ``--force``."""
    return fileio.check_output(path, inputs=inputs, force=force, suffixes=FORMATS)


def save_figure(
    figure: Figure, path: str | os.PathLike[str], dpi: int = 150, *, check_path: bool = True
) -> Path:
    """Write ``figure`` to ``path`` atomically; the format follows the suffix.

    ``check_path=False`` skips :func:`check_writable` (a file of lightnets' own, such as a run
    directory's ``curves.png``, replaced as it always is)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = check_writable(path) if check_path else Path(path)
    FigureCanvasAgg(figure)
    with fileio.atomic_path(path, path.suffix) as temp:
        figure.savefig(temp, format=path.suffix[1:].lower(), dpi=dpi)
    return path
