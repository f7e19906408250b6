"""A self-contained HTML page from the markdown that clipwise's reports are written in.

markdown-it-py (CommonMark with pipe tables) renders it; raw HTML in the markdown is not passed through, so a
label or file name that looks like a tag shows as text. Images under the report's folder are embedded as data
URIs: the page is one file that can be mailed or attached to a paper's supplement and still shows its figures.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from markdown_it import MarkdownIt

from clipwise._io import atomic_write_text

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;line-height:1.5;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}img{max-width:100%;height:auto}code{background:#f3f3f3;padding:0 0.2em}
blockquote{border-left:4px solid #d33;background:#fff5f5;margin:1em 0;padding:0.5em 1em}h1{font-size:1.6em}"""
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _renderer(base: Path) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_image = md.renderer.rules["image"]

    def image(renderer, tokens, idx, options, env):  # markdown-it binds rules to its renderer
        token = tokens[idx]
        path = base / str(token.attrGet("src") or "")
        if path.is_file() and path.suffix.lower() in _MIME:
            token.attrSet("src", f"data:{_MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}")
        return default_image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    return md


def markdown_to_html(text: str, *, base: str | os.PathLike = ".", title: str = "clipwise report") -> str:
    """Convert report markdown to a standalone HTML page; images under ``base`` are embedded."""
    body = _renderer(Path(base)).render(text)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + body + "</body></html>\n")


def write_html(markdown_path: str | os.PathLike) -> Path:
    """Write ``report.html`` beside a ``report.md``; returns its path."""
    md = Path(markdown_path)
    text = md.read_text(encoding="utf-8")
    first = next((ln[2:] for ln in text.splitlines() if ln.startswith("# ")), "clipwise report")
    out = md.with_suffix(".html")
    atomic_write_text(out, markdown_to_html(text, base=md.parent, title=first))
    return out
