"""A self-contained HTML report: one file, its pictures embedded as data URIs, its numbers tagged for checking.

Every number that comes from a metrics file carries a ``data-metric`` attribute naming its key path in that file
(e.g. ``modes.argmax.things.pq``), so that a test (or a reader's script) can compare the page with the JSON it was
made from.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from cqbnet.io import atomic_path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.headline { font-size: 1.3em; background: #f3f6fa; padding: 0.6em 1em; border-radius: 6px; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
"""


def data_uri(path: Path) -> str:
    """A picture file as a data URI (PNG or JPEG by its suffix)."""
    kind = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class HtmlReport:
    """Builds the page section by section; :meth:`write` puts it on disk atomically."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str | None = None) -> None:
        """A paragraph of HTML (escape text with :func:`html.escape`; numbers from metrics via :meth:`metric`)."""
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{text}</p>")

    @staticmethod
    def metric(key: str, value: float, digits: int = 1) -> str:
        """A number as an HTML span tagged with its metrics key (``value`` already in the unit shown)."""
        return f'<span data-metric="{html.escape(key)}">{value:.{digits}f}</span>'

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        """A table whose cells are HTML already (escape text with :func:`html.escape`, numbers via :meth:`metric`)."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def figure(self, path: Path, caption: str) -> None:
        """An embedded picture with its caption."""
        alt = html.escape(caption)
        self.parts.append(f'<figure><img src="{data_uri(path)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>')

    def render(self) -> str:
        title = html.escape(self.title)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body><h1>{title}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )

    def write(self, path: Path) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(self.render(), encoding="utf-8")
        return path


def quality_rows(metrics: dict[str, Any], modes: list[str], prefix: str = "modes") -> list[list[str]]:
    """Rows of PQ / SQ / RQ (percent) for All, Things and Stuff, one column group per inference mode."""
    rows = []
    for group, name in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        row = [name]
        for m in modes:
            for k in ("pq", "sq", "rq"):
                key = f"{prefix}.{m}.{group}.{k}"
                row.append(HtmlReport.metric(key, 100 * metrics[prefix][m][group][k]))
        rows.append(row)
    return rows


def per_class_rows(metrics: dict[str, Any], modes: list[str], prefix: str = "modes") -> list[list[str]]:
    """One row per class: its name, thing or stuff, then PQ / SQ / RQ (percent) per inference mode."""
    first = metrics[prefix][modes[0]]["per_class"]
    rows = []
    for cid, c in first.items():
        row = [html.escape(c["name"]), "thing" if c["isthing"] else "stuff"]
        for m in modes:
            for k in ("pq", "sq", "rq"):
                row.append(
                    HtmlReport.metric(
                        f"{prefix}.{m}.per_class.{cid}.{k}", 100 * metrics[prefix][m]["per_class"][cid][k]
                    )
                )
        rows.append(row)
    return rows
