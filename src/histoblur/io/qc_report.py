"""HTML pages of whole-slide QC: one report per slide and a sortable cohort index.

Both pages are single files. A slide report embeds its pictures as PNG data URIs; the cohort
index links each slide's ``overlay.png`` and ``report.html`` by relative path, so the output folder
can be moved or archived as a whole.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from histoblur.io.report import STYLE, png_data_uri

COHORT_TITLE = "Blur QC cohort"  # also how ``qc`` recognises an index.html it wrote

INDEX_STYLE = """
th{cursor:pointer;user-select:none}th:after{content:' \\2195';color:#aaa}
tr.error td{background:#fdecea}tr.flagged td{background:#fff4d6}tr.no_tissue td{color:#777}
td img{max-width:160px;max-height:120px;border:0}
"""

# statuses as a QC engineer reads them: what to act on first
STATUS_ORDER = ("error", "flagged", "no_tissue", "ok")

SORT_SCRIPT = """
document.querySelectorAll('th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = th.dataset.dir !== 'down';
    th.dataset.dir = down ? 'down' : 'up';
    function key(row) {
      var cell = row.cells[col];
      var v = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent;
      var n = parseFloat(v);
      return isNaN(n) ? v.toLowerCase() : n;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                      : (typeof x === 'number' ? -1 : 1);
      return down ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.getElementById('status').addEventListener('change', function (e) {
  var want = e.target.value;
  document.querySelectorAll('tbody tr').forEach(function (r) {
    r.hidden = want !== '' && r.dataset.status !== want;
  });
});
"""

SLIDE_FACTS = (
    ("Blurred tissue", "blurred_fraction", "{:.1%}"),
    ("Blurred area (mm²)", "blurred_area_mm2", "{:.3f}"),
    ("Tissue area (mm²)", "tissue_area_mm2", "{:.3f}"),
    ("Blurred regions", "blurred_regions", "{}"),
    ("Tiles", "tiles", "{}"),
    ("Warnings", None, None),
    ("Seconds (read / compute)", None, None),
    ("Slide mpp (source)", None, None),
    ("Working mpp / level", None, None),
    ("Model / threshold", None, None),
    ("Reader", "reader", "{}"),
    ("histoblur", "histoblur_version", "{}"),
)


def _page(title: str, body: str, style: str = "", script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}{style}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}{tail}</body></html>\n"
    )


def _fact(summary: Mapping[str, Any], label: str, key: str | None, fmt: str | None) -> str:
    s = summary
    derived = {
        "Seconds (read / compute)": lambda: (
            f"{s.get('seconds', '?')} ({s.get('read_seconds', '?')} / "
            f"{s.get('compute_seconds', '?')})"
        ),
        "Slide mpp (source)": lambda: f"{s.get('slide_mpp', '?')} ({s.get('mpp_source', '?')})",
        "Working mpp / level": lambda: f"{s.get('working_mpp', '?')} / {s.get('level', '?')}",
        "Model / threshold": lambda: f"{s.get('model', '?')} / {s.get('threshold', '?')}",
        "Warnings": lambda: " ".join(s.get("warnings") or []) or "none",
    }
    if key is None:
        return derived[label]()
    value = s.get(key)
    if value is None:
        return "?"
    try:
        return fmt.format(value) if fmt else str(value)
    except (TypeError, ValueError):
        return str(value)


def slide_report_html(
    summary: Mapping[str, Any],
    thumbnail: np.ndarray,
    overlay: np.ndarray,
    heatmap: np.ndarray,
) -> str:
    """One slide's report: headline numbers, thumbnail, blur overlay, probability heatmap."""
    stem = str(summary.get("stem", "slide"))
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        f"<td>{html.escape(_fact(summary, label, key, fmt))}</td></tr>"
        for label, key, fmt in SLIDE_FACTS
    )
    pictures = "".join(
        f"<figure><img style='max-width:640px' src='{png_data_uri(img, 900)}' "
        f"alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, img in (
            ("Thumbnail", thumbnail),
            ("Blurred tissue (amber)", overlay),
            ("Blur probability over tissue", heatmap),
        )
    )
    body = (
        f"<p class='note'>{html.escape(str(summary.get('slide', '')))}</p>"
        f"<table>{rows}</table><h2>Pictures</h2><div>{pictures}</div>"
        "<p class='note'>Regions are in blur.geojson (level-0 pixels, class Blur): "
        "in QuPath, File &gt; Import objects.</p>"
    )
    return _page(f"Blur QC: {stem}", body)


def _status(row: Mapping[str, Any]) -> str:
    """The row's ``status``; rows without one: ``error`` when they hold an error, else ``ok``."""
    given = str(row.get("status") or "")
    if given in STATUS_ORDER:
        return given
    return "error" if row.get("error") else "ok"


def _order(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Failed slides first, then flagged, without tissue and ok; the most blurred first."""

    def key(row: Mapping[str, Any]) -> tuple[int, float, str]:
        try:
            fraction = float(row.get("blurred_fraction") or 0.0)
        except (TypeError, ValueError):
            fraction = 0.0
        return (STATUS_ORDER.index(_status(row)), -fraction, str(row.get("stem", "")))

    return sorted(rows, key=key)


def _cell(value: Any, shown: str | None = None) -> str:
    """A sortable table cell; a missing value is empty, a zero reads 0."""
    raw = "" if value is None else str(value)
    text = html.escape(raw) if shown is None else shown
    return f"<td data-value='{html.escape(raw)}'>{text}</td>"


def cohort_index_html(
    rows: Sequence[Mapping[str, Any]],
    thumbnails: Mapping[str, str],
    flag_above: float | None = None,
) -> str:
    """Sortable cohort table with a status filter; failed slides first, then flagged ones.

    Args:
        rows: one mapping per slide (the ``cohort.csv`` columns, ``status`` among them).
        thumbnails: slide stem -> picture path relative to the index.
        flag_above: the blurred fraction above which a slide is flagged (for the legend).
    """
    counts = {s: sum(1 for r in rows if _status(r) == s) for s in STATUS_ORDER}
    head = (
        "<tr><th>Slide</th><th>Status</th><th>Picture</th><th>Blurred tissue</th>"
        "<th>Blurred mm²</th><th>Tissue mm²</th><th>Regions</th><th>Tiles</th><th>Seconds</th>"
        "<th>Error</th></tr>"
    )
    body = []
    for row in _order(rows):
        stem = str(row.get("stem", ""))
        error = str(row.get("error") or "")
        state = _status(row)
        name = html.escape(stem)
        if not error:
            name = f"<a href='{html.escape(stem)}/report.html'>{name}</a>"
        thumb = thumbnails.get(stem)
        picture = (
            f"<a href='{html.escape(stem)}/report.html'><img src='{html.escape(thumb)}' "
            f"alt='{html.escape(stem)}' loading='lazy'></a>"
            if thumb
            else ""
        )
        fraction = row.get("blurred_fraction")
        try:
            shown = f"{float(fraction):.1%}" if fraction not in (None, "") else ""
        except (TypeError, ValueError):
            shown = html.escape(str(fraction))
        cells = [
            f"<td data-value='{html.escape(stem)}'>{name}</td>",
            _cell(state, html.escape(state.replace("_", " "))),
            f"<td data-value='{html.escape(stem)}'>{picture}</td>",
            _cell(fraction, shown),
            *(
                _cell(row.get(k))
                for k in (
                    "blurred_area_mm2",
                    "tissue_area_mm2",
                    "blurred_regions",
                    "tiles",
                    "seconds",
                )
            ),
            _cell(error),
        ]
        body.append(f"<tr class='{state}' data-status='{state}'>" + "".join(cells) + "</tr>")
    rule = f" (more than {flag_above:.1%} of the tissue blurred)" if flag_above is not None else ""
    failed = counts["error"]
    intro = (
        f"<p>{len(rows)} slides, {len(rows) - failed} processed, {failed} failed: "
        f"{counts['flagged']} flagged{rule}, {counts['no_tissue']} without tissue, "
        f"{counts['ok']} ok. Failed slides first, then flagged ones and the most blurred; "
        "click a column to sort.</p>"
    )
    choices = "".join(
        f"<option value='{s}'>{s.replace('_', ' ')} ({counts[s]})</option>" for s in STATUS_ORDER
    )
    select = (
        "<p><label>Show <select id='status'>"
        f"<option value=''>all ({len(rows)})</option>{choices}</select></label></p>"
    )
    table = (
        f"<div class='scroll'><table><thead>{head}</thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
    return _page(COHORT_TITLE, intro + select + table, INDEX_STYLE, SORT_SCRIPT)
