"""The report as one self-contained HTML page, drawn from the ``results.json`` document alone.

Inline CSS, figures embedded as ``data:`` URIs, no script and no link outside the page: it
opens the same offline, from an e-mail attachment or a CI artefact. Every text on the page
comes from the document, so every number shown is in ``results.json``.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["render_page"]

CSS = """
:root { --good: #1a7f37; --near: #9a6700; --bad: #cf222e; --none: #57606a; --rule: #d0d7de; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; }
header { border-bottom: 2px solid var(--rule); padding: 20px 0 8px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 21px; margin: 36px 0 4px; border-bottom: 1px solid var(--rule);
     padding-bottom: 4px; }
h3 { font-size: 16px; margin: 22px 0 4px; }
.meta, .paper, .measured, .time, figcaption, .notes { color: #424a53; font-size: 13.5px; }
.measured { margin: 2px 0 8px; }
nav ol { columns: 2; margin: 12px 0; padding-left: 22px; }
nav li { margin: 2px 0; }
a { color: #0969da; text-decoration: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; margin: 4px 0; }
th, td { border-bottom: 1px solid var(--rule); padding: 4px 9px; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.note { color: #57606a; max-width: 340px; }
.v { border-radius: 10px; color: #fff; display: inline-block; font-size: 12px; font-weight: 600;
     padding: 1px 8px; white-space: nowrap; }
.v-agrees, .v-holds, .v-stable { background: var(--good); }
.v-close { background: var(--near); }
.v-differs, .v-fails, .v-unstable { background: var(--bad); }
.v-reference, .v-na { background: var(--none); }
.legend { display: grid; gap: 3px 10px; grid-template-columns: max-content 1fr;
          font-size: 13px; margin: 10px 0; }
dl.conditions { display: grid; gap: 2px 12px; grid-template-columns: max-content 1fr;
                font-size: 13px; margin: 8px 0; }
dl.conditions dt { color: #57606a; }
dl.conditions dd { margin: 0; }
figure { margin: 16px 0; }
figure img { border: 1px solid var(--rule); height: auto; max-width: 100%; }
.missing { color: var(--bad); }
footer { border-top: 1px solid var(--rule); color: #57606a; font-size: 13px; margin-top: 40px;
         padding-top: 8px; }
"""


def _badge(kind: str, text: str) -> str:
    css = "na" if kind == "n/a" else kind
    return f'<span class="v v-{escape(css)}">{escape(text)}</span>'


def _cell(cell: Any, column: str) -> str:
    if isinstance(cell, dict) and "verdict" in cell:
        return f"<td>{_badge(cell['verdict'], cell['text'])}</td>"
    if isinstance(cell, dict):
        return f'<td class="num">{escape(str(cell["text"]))}</td>'
    css = ' class="note"' if column == "note" else ""
    return f"<td{css}>{escape(str(cell))}</td>"


def _table(table: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table["columns"])
    body = "".join(
        "<tr>"
        + "".join(_cell(c, col) for c, col in zip(row["cells"], table["columns"], strict=True))
        + "</tr>"
        for row in table["rows"]
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in table["notes"])
    return (
        f'<h3 id="{escape(table["id"])}">{escape(table["title"])}</h3>'
        f'<p class="measured"><b>Measured:</b> {escape(table["measured"])}</p>'
        + (
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
            if table["rows"]
            else ""
        )
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
    )


def _figure(root: Path, figure: dict[str, Any]) -> str:
    data = base64.b64encode((root / figure["file"]).read_bytes()).decode("ascii")
    caption = escape(figure["caption"])
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}" '
        f'width="{int(figure["width"])}" height="{int(figure["height"])}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _counts(verdicts: dict[str, int]) -> str:
    return " ".join(_badge(kind, f"{n} {kind}") for kind, n in verdicts.items())


def _section(root: Path, section: dict[str, Any]) -> str:
    conditions = "".join(
        f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>"
        for k, v in section["conditions"].items()
    )
    parts = [
        f'<section id="{escape(section["id"])}">',
        f"<h2>{escape(section['title'])}</h2>",
        f'<p class="paper">{escape(section["paper"])}</p>',
        f"<p>{escape(section['summary'])}</p>",
        f"<p>{_counts(section['verdicts'])}</p>",
    ]
    if conditions:
        parts.append(f'<dl class="conditions">{conditions}</dl>')
    parts += [_table(t) for t in section["tables"]]
    parts += [f"<p class='notes'>{escape(n)}</p>" for n in section["notes"]]
    parts += [_figure(root, f) for f in section["figures"]]
    parts.append(f'<p class="time">{escape(section["time_text"])}</p></section>')
    return "".join(parts)


def render_page(document: dict[str, Any], root: Path) -> str:
    """The HTML page of a ``results.json`` document; figures are read from ``root``."""
    run = document["run"]
    nav = "".join(
        f'<li><a href="#{escape(s["id"])}">{escape(s["title"])}</a> {_counts(s["verdicts"])}</li>'
        for s in document["sections"]
    ) + "".join(
        f'<li class="missing">{escape(m["title"])}: {escape(m["why"])}</li>'
        for m in document["missing"]
    )
    legend = "".join(
        f"<span>{_badge(kind, kind)}</span><span>{escape(text)}</span>"
        for kind, text in document["verdicts"].items()
    )
    body = "".join(_section(root, s) for s in document["sections"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(document['title'])}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(document['title'])}</h1>"
        f'<p class="meta">{escape(run["summary"])}</p>'
        f'<p class="meta">{escape(document["machine"])}</p>'
        f'<div class="legend">{legend}</div></header>'
        f"<nav><ol>{nav}</ol></nav><main>{body}</main>"
        f"<footer>{escape(document['footer'])}</footer></body></html>\n"
    )
