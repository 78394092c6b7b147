"""CSV files the app writes for people to open in a spreadsheet, safe against formula injection (CSV injection,
OWASP): a cell whose text starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a formula
by Excel, LibreOffice and Google Sheets (``=HYPERLINK("https://evil", "click")`` in a reader's comment), so such
a cell gets a leading single quote, which every spreadsheet shows as text. Numbers are written as numbers: an
``int`` or ``float`` cell (a negative HU, a negative kappa) keeps its minus sign, and so does a text cell that
is exactly a plain decimal number (``"-12.5000"``, ``"-3"``, ``"-1e-05"``, what the reports format
themselves), since a number cannot be a formula. Everything else that starts with a trigger is quoted.

Use ``writer(out)`` in place of ``csv.writer(out)``; ``safe_cell`` and ``safe_row`` for other writers."""

import csv
import re

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# A plain decimal number as the reports write one (sign, digits, optional fraction and exponent): never a formula.
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def safe_cell(value):
    """``value`` as a CSV cell that no spreadsheet runs as a formula: numbers (and ``None``, booleans) as they
    are, text that starts with a formula trigger prefixed with ``'`` unless it is a plain decimal number."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value
    text = str(value)
    if text.startswith(FORMULA_TRIGGERS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def safe_row(row) -> list:
    return [safe_cell(v) for v in row]


class SafeWriter:
    """``csv.writer`` whose rows are passed through ``safe_row`` (same ``writerow`` / ``writerows``)."""

    def __init__(self, out, **kwargs):
        self._writer = csv.writer(out, **kwargs)

    def writerow(self, row):
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def writer(out, **kwargs) -> SafeWriter:
    """A CSV writer onto ``out`` (a file or anything with ``write``) whose cells are never formulas."""
    return SafeWriter(out, **kwargs)
