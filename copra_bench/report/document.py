"""A tiny document model (headings, paragraphs, tables, images) rendered to Markdown and to self-contained HTML.

The HTML has its CSS inline and images as base64 ``data:`` URIs: it opens from disk with no network.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f0f0f0}td.l,th.l{text-align:left}tr.paper td{color:#7a4b00;background:#fff8e6;font-style:italic}
.note{color:#555;font-size:.9em}.missing{color:#b00020;font-weight:600}.warn{background:#fff3cd;padding:.5em}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}details{margin:.4em 0}code{background:#f4f4f4}
"""


@dataclass
class Table:
    """Header and rows of cell strings. ``heat``: optional 0..1 intensities per body cell (None = no colour);
    ``row_classes``: CSS class per row (e.g. ``paper``)."""

    headers: list[str]
    rows: list[list[str]]
    title: str = ""
    note: str = ""
    heat: list[list[float | None]] | None = None
    row_classes: list[str] = field(default_factory=list)


@dataclass
class Image:
    caption: str
    png: bytes | None  # None: missing (the caption says what)


@dataclass
class Document:
    """Blocks in order: ``("h", level, text)``, ``("p", text)``, ``("warn", text)``, Table, Image,
    ``("details", summary, [blocks])`` (HTML only shows it collapsed; Markdown inlines the summary)."""

    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document, *, html_only_images: bool = True) -> str:
    lines = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Table):
            if block.title:
                lines += [f"**{block.title}**", ""]
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
            if block.note:
                lines += [f"_{block.note}_", ""]
        elif isinstance(block, Image):
            if block.png is None:
                lines += [f"- MISSING: {block.caption}", ""]
        elif block[0] == "h":
            lines += [f"{'#' * (block[1] + 1)} {block[2]}", ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "warn":
            lines += [f"> **Note:** {block[1]}", ""]
        elif block[0] == "details":
            lines += [f"<details><summary>{block[1]}</summary>", ""]
            lines += to_markdown(Document("", block[2])).splitlines()[2:]
            lines += ["</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def _heat_style(value: float | None) -> str:
    if value is None:
        return ""
    lightness = 96 - 50 * max(0.0, min(1.0, value))
    color = "#fff" if lightness < 62 else "#111"
    return f' style="background:hsl(210,65%,{lightness:.0f}%);color:{color}"'


def _html_blocks(blocks: list) -> list[str]:
    esc = html.escape
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            if block.title:
                out.append(f"<h4>{esc(block.title)}</h4>")
            out.append("<table><thead><tr>" + "".join(
                f'<th class="l">{esc(h)}</th>' if i == 0 else f"<th>{esc(h)}</th>"
                for i, h in enumerate(block.headers)) + "</tr></thead><tbody>")
            for r, row in enumerate(block.rows):
                klass = block.row_classes[r] if r < len(block.row_classes) else ""
                cells = []
                for c, cell in enumerate(row):
                    heat = block.heat[r][c] if block.heat and c < len(block.heat[r]) else None
                    left = ' class="l"' if c == 0 or not any(ch.isdigit() for ch in str(cell)[:2]) else ""
                    cells.append(f"<td{left}{_heat_style(heat)}>{esc(str(cell))}</td>")
                out.append(f'<tr class="{klass}">' + "".join(cells) + "</tr>" if klass else
                           "<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
            if block.note:
                out.append(f'<p class="note">{esc(block.note)}</p>')
        elif isinstance(block, Image):
            if block.png is None:
                out.append(f'<p class="missing">missing: {esc(block.caption)}</p>')
            else:
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                           f"<figcaption class=\"note\">{esc(block.caption)}</figcaption></figure>")
        elif block[0] == "h":
            level = min(block[1] + 1, 6)
            out.append(f"<h{level}>{esc(block[2])}</h{level}>")
        elif block[0] == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif block[0] == "warn":
            out.append(f'<p class="warn">{esc(block[1])}</p>')
        elif block[0] == "details":
            out.append(f"<details><summary>{esc(block[1])}</summary>")
            out += _html_blocks(block[2])
            out.append("</details>")
    return out


def to_html(doc: Document) -> str:
    body = "\n".join(_html_blocks(doc.blocks))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(doc.title)}"
            f"</title><style>{CSS}</style></head><body>\n<h1>{html.escape(doc.title)}</h1>\n{body}\n</body></html>\n")
