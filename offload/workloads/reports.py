"""PDF reports with fpdf2 (pure Python): the table parser the form validates with, and the builder.

fpdf2 (and Pillow and fontTools under it) is imported inside :func:`build_pdf`, which only
workers run; the web imports this module for :func:`parse_table` alone.
"""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, datetime

MAX_ROWS = 200
MAX_COLUMNS = 8
MAX_CELL = 100


def parse_table(text: str) -> list[list[str]]:
    """Return the rows of CSV ``text`` (first row: headings); raise ValueError naming the bad row."""
    try:
        rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text.strip())) if any(row)]
    except csv.Error as exc:  # a bare carriage return inside a cell, say
        raise ValueError(f"not readable as CSV ({exc})") from None
    if len(rows) > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} rows, got {len(rows)}")
    for number, row in enumerate(rows, start=1):
        if len(row) > MAX_COLUMNS:
            raise ValueError(f"row {number} has {len(row)} cells; at most {MAX_COLUMNS}")
        if any(len(cell) > MAX_CELL for cell in row):
            raise ValueError(f"row {number} has a cell longer than {MAX_CELL} characters")
    width = max((len(row) for row in rows), default=0)
    return [row + [""] * (width - len(row)) for row in rows]


def file_name(title: str) -> str:
    """Return a safe download name from ``title``: ``quarterly-sales.pdf``."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60].strip("-")
    return f"{slug or 'report'}.pdf"


def build_pdf(title: str, text: str, rows: list[list[str]], font_path: str = "") -> bytes:
    """Return an A4 PDF: the title, the text in paragraphs, then ``rows`` as a table."""
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_creator("Offload")
    pdf.set_creation_date(datetime.now(UTC))
    if font_path and os.path.exists(font_path):
        pdf.add_font("body", fname=font_path)
        family = "body"
    else:
        # Core fonts only know Latin-1; anything else becomes "?" instead of failing the job.
        family = "helvetica"
        title, text = _latin1(title), _latin1(text)
        rows = [[_latin1(cell) for cell in row] for row in rows]
    pdf.add_page()

    pdf.set_font(family, size=20)
    pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=9)
    pdf.set_text_color(110)
    pdf.cell(0, 6, f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.ln(4)

    pdf.set_font(size=11)
    for paragraph in (part.strip() for part in text.split("\n\n")):
        if paragraph:
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)

    if rows:
        pdf.ln(2)
        pdf.set_font(size=10)
        with pdf.table(headings_style=FontFace(fill_color=(225, 230, 240))) as table:
            for row in rows:
                cells = table.row()
                for cell in row:
                    cells.cell(cell)

    return bytes(pdf.output())


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")
