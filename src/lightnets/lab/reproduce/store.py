"""The report's folder: one stored result per section, written atomically, and the figures.

Layout of ``OUT_DIR``::

    .lightnets-reproduce      marker: this folder is a lightnets report (only we write it)
    index.html  results.json  the page and every number on it
    sections/<id>.json        one finished section (written last, atomically)
    figures/<name>.png        the figures (compressed PNG)
    work/                     what sections keep between runs (the Fashion-MNIST sweep's runs)

A section counts as finished when its file reads back as strict JSON of this layout version,
was made with the same inputs (plan, weights), and every figure it names is on disk with the
recorded SHA-256; anything else (a torn or edited file, a missing figure) is recomputed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightnets import fileio, jsonio
from lightnets.data.download import file_digest
from lightnets.errors import InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MARKER", "SCHEMA", "Workspace"]

MARKER = ".lightnets-reproduce"
#: Version of the stored section layout; a file of another version is recomputed.
SCHEMA = 1
#: Largest section file read back (a finished section is a few tens of kilobytes).
MAX_SECTION_BYTES = 16 << 20
#: Figures are shrunk to at most this width (pixels) and to a 256-colour palette.
FIGURE_WIDTH = 1100


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


class Workspace:
    """``OUT_DIR`` of one report; :meth:`open` checks it may be written and lays it out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sections = root / "sections"
        self.figures = root / "figures"
        self.work = root / "work"

    @classmethod
    def open(cls, out_dir: str | os.PathLike[str]) -> Workspace:
        """The report folder, created if new; a folder holding anything that is not a
        lightnets report is refused (the user's files are never overwritten)."""
        root = Path(out_dir)
        if root.exists() and not root.is_dir():
            raise InvalidArgumentError(f"-o {str(root)!r} exists and is not a folder")
        if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
            raise InvalidArgumentError(
                f"-o {str(root)!r} holds files that are not a lightnets report (no {MARKER}): "
                "choose a new or empty folder"
            )
        if not root.parent.is_dir():
            raise InvalidArgumentError(
                f"-o {str(root)!r}: folder {str(root.parent)!r} does not exist"
            )
        workspace = cls(root)
        for folder in (root, workspace.sections, workspace.figures, workspace.work):
            folder.mkdir(exist_ok=True)
        if not (root / MARKER).is_file():
            fileio.write_text_atomic(root / MARKER, "lightnets reproduce report\n")
        return workspace

    # -- sections -------------------------------------------------------------------------------
    def section_path(self, section_id: str) -> Path:
        return self.sections / f"{section_id}.json"

    def load(self, section_id: str, inputs: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The stored result of ``section_id`` if it is finished for these ``inputs``, else
        ``(None, why not)``."""
        path = self.section_path(section_id)
        if not path.is_file():
            return None, "not run yet"
        try:
            if path.stat().st_size > MAX_SECTION_BYTES:
                return None, f"stored result larger than {MAX_SECTION_BYTES >> 20} MiB"
            stored = _strict_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return None, f"stored result unreadable ({type(exc).__name__})"
        problem = self._check(stored, section_id, inputs)
        return (None, problem) if problem else (stored, "finished")

    def _check(self, stored: Any, section_id: str, inputs: dict[str, Any]) -> str:
        if not isinstance(stored, dict) or not isinstance(stored.get("result"), dict):
            return "stored result malformed"
        if stored.get("schema") != SCHEMA or stored["result"].get("id") != section_id:
            return "stored result of another layout version"
        if stored.get("inputs") != jsonio.finite_or_none(inputs):
            return "stored result made with other settings"
        for figure in stored["result"].get("figures", []):
            path = self.root / str(figure.get("file", ""))
            if not path.is_file() or file_digest(path, "sha256") != figure.get("sha256"):
                return f"figure {figure.get('file')} missing or changed"
        return ""

    def save(self, section_id: str, inputs: dict[str, Any], record: dict[str, Any]) -> None:
        """Store a finished section (its figures are already on disk)."""
        document = {"schema": SCHEMA, "inputs": inputs, "result": record}
        fileio.write_text_atomic(
            self.section_path(section_id), jsonio.dumps(document, indent=1) + "\n"
        )

    # -- figures --------------------------------------------------------------------------------
    def save_figure(self, figure: Figure, name: str, caption: str) -> dict[str, str]:
        """Draw ``figure`` into ``figures/<name>.png`` (compressed); its record for the section."""
        from lightnets.figures import save_figure

        scratch = self.work / f"{name}.full.png"
        save_figure(figure, scratch, dpi=100)
        return self.adopt_png(scratch, name, caption)

    def adopt_png(self, source: Path, name: str, caption: str) -> dict[str, str]:
        """Copy a PNG drawn elsewhere into ``figures/<name>.png``, shrunk to at most
        :data:`FIGURE_WIDTH` pixels wide and a 256-colour palette (a third of the bytes)."""
        from PIL import Image

        target = self.figures / f"{name}.png"
        with Image.open(source) as image:
            picture = image.convert("RGB")
        if picture.width > FIGURE_WIDTH:
            height = round(picture.height * FIGURE_WIDTH / picture.width)
            picture = picture.resize((FIGURE_WIDTH, height), Image.Resampling.LANCZOS)
        palette = picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        with fileio.atomic_path(target, ".png") as temp:
            palette.save(temp, format="PNG", optimize=True)
        return {
            "file": f"figures/{target.name}",
            "caption": caption,
            "sha256": file_digest(target, "sha256"),
            "width": picture.width,
            "height": picture.height,
        }
