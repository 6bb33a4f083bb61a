"""A tiny document model (headings, paragraphs, tables, key/value lists, images) rendered to Markdown and HTML.

The HTML has its CSS inline and images as base64 ``data:`` URIs: it opens from disk with no network. The Markdown
is meant for a terminal too: table columns are padded to one width and no cell is longer than ``MAX_MD_CELL``.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

MAX_MD_CELL = 60
MARK_SIGNS = {"best": "★", "tied": "≈"}
NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?(\s|$)")  # right-aligned cells: "84.12 ± 0.31", "3 (0,1,2)"; not run ids

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222;max-width:1360px}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}h3{margin:1.4em 0 .3em}
h4{margin:.8em 0 .2em;font-size:.95em}.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.84em}
th,td{border:1px solid #ccc;padding:.2em .45em;text-align:right;white-space:nowrap;vertical-align:top}
th{background:#f0f0f0;white-space:normal}td.l,th.l{text-align:left}td.w{white-space:normal;max-width:17em;
overflow-wrap:anywhere}td small{display:block;color:#666;font-size:.86em}td.best{background:#e3f4e1}
td.tied{background:#f3f7e8}tr.paper td{color:#7a4b00;background:#fff8e6;font-style:italic}
.note{color:#555;font-size:.88em;max-width:60em}.missing{color:#b00020;font-weight:600}.warn{background:#fff3cd;
padding:.5em}.grid{display:flex;flex-wrap:wrap;gap:0 1.6em}.grid .note{max-width:28em}ul.kv{font-size:.85em;
columns:2 30em;margin:.3em 0}ul.kv code{overflow-wrap:anywhere}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}details{margin:.4em 0}code{background:#f4f4f4}
"""


@dataclass
class Cell:
    """A table cell with an optional second line (e.g. a bootstrap interval) and a mark (``best``/``tied``)."""

    text: str
    detail: str = ""
    mark: str = ""

    def plain(self) -> str:
        sign = MARK_SIGNS.get(self.mark, "")
        body = f"**{self.text}**" if self.mark == "best" else self.text
        return " ".join(part for part in (body, self.detail, sign) if part)


@dataclass
class Table:
    """Header and rows of cells (strings or :class:`Cell`). ``heat``: optional 0..1 intensities per body cell
    (None = no colour); ``row_classes``: CSS class per row (e.g. ``paper``); ``wrap``: columns whose text may wrap
    (HTML) instead of widening the table."""

    headers: list[str]
    rows: list[list]
    title: str = ""
    note: str = ""
    heat: list[list[float | None]] | None = None
    row_classes: list[str] = field(default_factory=list)
    wrap: tuple[int, ...] = ()


@dataclass
class Image:
    caption: str
    png: bytes | None  # None: missing (the caption says what)


@dataclass
class Document:
    """Blocks in order: ``("h", level, text)``, ``("p", text)``, ``("warn", text)``, Table, Image,
    ``("details", summary, [blocks])`` (HTML: collapsed; Markdown: a bold line and the blocks),
    ``("kv", [(key, value)])`` (a list of settings; indented in Markdown) and ``("grid", [blocks])`` (HTML: side
    by side; Markdown: one after the other)."""

    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))


def _md_cell(cell) -> str:
    text = (cell.plain() if isinstance(cell, Cell) else str(cell)).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_MD_CELL else text[:MAX_MD_CELL - 1] + "…"


def _md_table(table: Table) -> list[str]:
    grid = [[_md_cell(h) for h in table.headers]] + [[_md_cell(c) for c in row] for row in table.rows]
    widths = [max(len(row[i]) for row in grid if i < len(row)) for i in range(len(table.headers))]
    lines = [f"**{table.title}**", ""] if table.title else []
    for r, row in enumerate(grid):
        lines.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(row)) + " |")
        if r == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append("")
    return lines + ([f"_{table.note}_", ""] if table.note else [])


def _md_blocks(blocks: list, indent: str = "") -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            lines += _md_table(block)
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
            lines += [f"**{block[1]}**", ""] + _md_blocks(block[2], indent)
        elif block[0] == "kv":
            lines += [f"{indent}  - {key}: {value}" for key, value in block[1]] + [""]
        elif block[0] == "grid":
            lines += _md_blocks(block[1], indent)
    return lines


def to_markdown(doc: Document) -> str:
    return "\n".join([f"# {doc.title}", "", *_md_blocks(doc.blocks)]).rstrip() + "\n"


def _heat_style(value: float | None) -> str:
    if value is None:
        return ""
    lightness = 96 - 50 * max(0.0, min(1.0, value))
    color = "#fff" if lightness < 62 else "#111"
    return f' style="background:hsl(210,65%,{lightness:.0f}%);color:{color}"'


def _html_cell(cell, column: int, table: Table, heat: float | None) -> str:
    esc = html.escape
    text = cell.text if isinstance(cell, Cell) else str(cell)
    classes = []
    if column == 0 or not NUMBER.match(text):
        classes.append("l")
    if column in table.wrap:
        classes.append("w")
    body = esc(text)
    if isinstance(cell, Cell):
        if cell.mark:
            classes.append(cell.mark)
            body = (f"<strong>{body}</strong>" if cell.mark == "best" else body) + f" {MARK_SIGNS[cell.mark]}"
        if cell.detail:
            body += f"<small>{esc(cell.detail)}</small>"
    klass = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{klass}{_heat_style(heat)}>{body}</td>"


def _html_table(table: Table) -> list[str]:
    esc = html.escape
    out = [f"<h4>{esc(table.title)}</h4>"] if table.title else []
    first = [c.text if isinstance(c, Cell) else str(c) for c in (table.rows[0] if table.rows else [])]
    left = {i for i in range(len(table.headers)) if i == 0 or i in table.wrap
            or (i < len(first) and not NUMBER.match(first[i]))}  # headings aligned like the cells under them
    out.append('<div class="scroll"><table><thead><tr>' + "".join(
        f'<th class="l">{esc(h)}</th>' if i in left else f"<th>{esc(h)}</th>"
        for i, h in enumerate(table.headers)) + "</tr></thead><tbody>")
    for r, row in enumerate(table.rows):
        klass = table.row_classes[r] if r < len(table.row_classes) else ""
        cells = "".join(_html_cell(cell, c, table, table.heat[r][c] if table.heat and c < len(table.heat[r])
                                   else None) for c, cell in enumerate(row))
        out.append(f'<tr class="{klass}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    out.append("</tbody></table></div>")
    return out + ([f'<p class="note">{esc(table.note)}</p>'] if table.note else [])


def _html_blocks(blocks: list) -> list[str]:
    esc = html.escape
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            out += _html_table(block)
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
        elif block[0] == "kv":
            out.append('<ul class="kv">' + "".join(f"<li><code>{esc(k)}</code>: {esc(str(v))}</li>"
                                                 for k, v in block[1]) + "</ul>")
        elif block[0] == "grid":
            out.append('<div class="grid">' + "".join(f"<div>{''.join(_html_blocks([b]))}</div>"
                                                    for b in block[1]) + "</div>")
    return out


def to_html(doc: Document) -> str:
    body = "\n".join(_html_blocks(doc.blocks))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(doc.title)}"
            f"</title><style>{CSS}</style></head><body>\n<h1>{html.escape(doc.title)}</h1>\n{body}\n</body></html>\n")
