"""Tables as self-contained HTML pages, for the report's frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

TABLE_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
"""


def save_table_html(table: pd.DataFrame, path, title: str = "", digits: int = 4) -> Path:
    """Write ``table`` as a self-contained HTML page (the report shows it in a frame).

    An empty table still gets a page that says so, so a report section is never blank."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if table.empty:
        body = f"<p>No rows{': ' + ', '.join(map(str, table.columns)) if len(table.columns) else ''}.</p>"
    else:
        body = table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.{digits}g}", border=0)
    heading = f"<h3>{title}</h3>" if title else ""
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{TABLE_STYLE}</style></head><body>{heading}{body}</body></html>\n"
    )
    return path
