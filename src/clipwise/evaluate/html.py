"""A self-contained HTML page from the markdown that clipwise's reports are written in.

The reports use a small, fixed subset of markdown (headings, paragraphs, lists, pipe tables, block quotes,
images, bold, inline code, links), so a converter for exactly that subset keeps the dependency list short.
Images are embedded as data URIs: the page is one file that can be mailed or attached to a paper's
supplement and still shows its figures.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;line-height:1.5;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}img{max-width:100%;height:auto}code{background:#f3f3f3;padding:0 0.2em}
blockquote{border-left:4px solid #d33;background:#fff5f5;margin:1em 0;padding:0.5em 1em}h1{font-size:1.6em}"""


def _inline(text: str, base: Path) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)

    def image(m: re.Match) -> str:
        alt, src = html.unescape(m.group(1)), html.unescape(m.group(2))
        path = base / src
        if path.is_file():
            mime = "image/png" if path.suffix.lower() == ".png" else "image/svg+xml"
            src = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
        return f'<img alt="{html.escape(alt)}" src="{src}">'

    out = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", image, out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)


def _cells(row: str) -> list[str]:
    row = row.strip().strip("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def markdown_to_html(text: str, *, base: str | os.PathLike = ".", title: str = "clipwise report") -> str:
    """Convert report markdown to a standalone HTML page; images under ``base`` are embedded."""
    base = Path(base)
    lines = text.splitlines()
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif m := re.match(r"^(#{1,6})\s+(.*)$", line):
            level = len(m.group(1))
            body.append(f"<h{level}>{_inline(m.group(2), base)}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            head, rest = _cells(rows[0]), [r for r in rows[1:] if not re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", r)]
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c, base)}</th>" for c in head)
                        + "</tr></thead><tbody>")
            body += ["<tr>" + "".join(f"<td>{_inline(c, base)}</td>" for c in _cells(r)) + "</tr>" for r in rest]
            body.append("</tbody></table>")
        elif line.startswith(">"):
            quote = []
            while i < len(lines) and lines[i].startswith(">"):
                quote.append(lines[i][1:].strip())
                i += 1
            body.append("<blockquote>" + _blocks(quote, base) + "</blockquote>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
                i += 1
            body.append("<ul>" + "".join(f"<li>{_inline(t, base)}</li>" for t in items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||>|\s*[-*]\s)", lines[i]):
                para.append(lines[i])
                i += 1
            body.append(f"<p>{_inline(' '.join(para), base)}</p>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _blocks(lines: list[str], base: Path) -> str:
    """A block quote's content: its list items and paragraphs."""
    items = [re.sub(r"^[-*]\s+", "", t) for t in lines if re.match(r"^[-*]\s+", t)]
    paras = [t for t in lines if t and not re.match(r"^[-*]\s+", t)]
    out = "".join(f"<p>{_inline(p, base)}</p>" for p in paras)
    return out + ("<ul>" + "".join(f"<li>{_inline(t, base)}</li>" for t in items) + "</ul>" if items else "")


def write_html(markdown_path: str | os.PathLike) -> Path:
    """Write ``report.html`` beside a ``report.md``; returns its path."""
    from clipwise.run import atomic_write_text

    md = Path(markdown_path)
    text = md.read_text(encoding="utf-8")
    first = next((ln[2:] for ln in text.splitlines() if ln.startswith("# ")), "clipwise report")
    out = md.with_suffix(".html")
    atomic_write_text(out, markdown_to_html(text, base=md.parent, title=first))
    return out
