"""Pieces of the self-contained HTML pages: the style sheet, escaped tables, embedded images and the
gallery of photos as JPEG thumbnails."""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import pandas as pd

from pipeline.data.images import thumbnail

_logger = logging.getLogger(__name__)

THUMBNAIL = 192  # longest side of a gallery photo, in pixels
JPEG_QUALITY = 80

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f2f2f2; }
td.text { text-align: left; font-family: monospace; }
img { max-width: 100%; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8em; }
.gallery figure { margin: 0; width: 200px; font-size: 0.8em; }
.gallery figcaption { font-family: monospace; overflow-wrap: anywhere; }
.note { max-width: 60em; }
"""


def table(header: list[str], rows: list[list], text_columns: frozenset[int] = frozenset(), css: str = "") -> str:
    """An HTML table; every cell is escaped, columns in ``text_columns`` are left-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    cell = ['<td class="text">' if i in text_columns else "<td>" for i in range(len(header))]
    body = "".join("<tr>" + "".join(f"{cell[i]}{html.escape(str(v))}</td>" for i, v in enumerate(row)) + "</tr>\n"
                   for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>'


def run_page_head(name: str) -> str:
    """The start of a run's report page, up to its configuration heading (``name``: escaped already)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Run {name}</title><style>{CSS}</style></head>
<body>
<h1>Run {name}</h1>
<h2>Configuration</h2>"""


def score_cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def img_data(data: bytes, mime: str, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{encoded}" alt="{html.escape(alt)}">'


def img_file(path: Path, alt: str) -> str:
    return img_data(path.read_bytes(), "image/png", alt)


def thumbnails(wrong: pd.DataFrame, size: int = THUMBNAIL,
               quality: int = JPEG_QUALITY) -> list[tuple[bytes | None, pd.Series]]:
    """JPEG thumbnails (longest side ``size``) of ``wrong``'s photos with their rows; None for one that cannot be
    read (a photo deleted since training).

    Args:
        wrong: rows from :func:`pipeline.metrics.most_confident_wrong` (``path``, ``label``, ...).
        size: longest side in pixels.
        quality: JPEG quality (1-95).
    """
    out = []
    for _, row in wrong.iterrows():
        img = thumbnail(row.path, size)
        if img is None:
            _logger.warning("%s cannot be read: the gallery lists it without a picture", row.path)
            out.append((None, row))
            continue
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality, optimize=True)
        out.append((buffer.getvalue(), row))
    return out
