"""HTML pages of whole-slide QC: one report per slide and a sortable cohort index.

Both pages are single files. A slide report embeds its pictures as PNG data URIs and links the
slide's other outputs (and the cohort index one folder up) by relative path; the cohort index
links each slide's ``overlay.png``, ``report.html`` and ``blur.geojson`` the same way, so the
output folder can be moved or archived as a whole. Blurred tissue is drawn in
:data:`histoblur.io.palette.BLUR_COLOR` on every page, as in the GeoJSON QuPath imports.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from histoblur.io.palette import BLUR_COLOR, BLUR_COLOR_NAME, css_rgb
from histoblur.io.report import STYLE, colour_bar, png_data_uri

COHORT_TITLE = "Blur QC cohort"  # also how ``qc`` recognises an index.html it wrote

# statuses as a QC engineer reads them: what to act on first
STATUS_ORDER = ("error", "flagged", "no_tissue", "ok")
STATUS_STYLE = """
.error{background:#fdecea}.flagged{background:#fff4d6}.no_tissue{color:#777}
p.status{display:inline-block;padding:.3rem .7rem;border:1px solid #ccc;font-size:1.05rem}
.swatch{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;border:1px solid #888}
"""

INDEX_STYLE = (
    STATUS_STYLE
    + """
th{cursor:pointer;user-select:none}th:after{content:' \\2195';color:#aaa}
tr.error td{background:#fdecea}tr.flagged td{background:#fff4d6}tr.no_tissue td{color:#777}
td img{max-width:320px;max-height:240px;border:0}
.filters input{width:22rem}.filters label{margin-right:1.5rem}
"""
)

SLIDE_STYLE = (
    STATUS_STYLE
    + """
.links a{margin-right:1rem}
.bar{position:relative;display:inline-block;width:256px;margin-top:.3rem}
.bar img{display:block;width:256px;max-width:none;height:12px;border:1px solid #888}
.bar .ticks{display:flex;justify-content:space-between;font-size:.75rem;color:#555}
.bar .mark{position:absolute;top:-3px;height:18px;border-left:2px solid #000}
"""
)

# what a slide report links, relative to its folder (the cohort index is one folder up)
SLIDE_LINKS = (
    ("Cohort index", "../index.html"),
    ("Regions for QuPath (blur.geojson)", "blur.geojson"),
    ("Blur mask (blur_mask.png)", "blur_mask.png"),
    ("Blur probability (probability.png)", "probability.png"),
    ("Summary (summary.json)", "summary.json"),
)

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
function applyFilters() {
  var want = document.getElementById('status').value;
  var text = document.getElementById('filter').value.trim().toLowerCase();
  var shown = 0;
  document.querySelectorAll('tbody tr').forEach(function (r) {
    r.hidden = (want !== '' && r.dataset.status !== want) ||
               (text !== '' && r.textContent.toLowerCase().indexOf(text) < 0);
    if (!r.hidden) { shown += 1; }
  });
  document.getElementById('shown').textContent = shown;
}
document.getElementById('status').addEventListener('change', applyFilters);
document.getElementById('filter').addEventListener('input', applyFilters);
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


def slide_status(summary: Mapping[str, Any], flag_above: float) -> str:
    """A slide's status: ``error``, ``no_tissue``, ``flagged`` or ``ok``.

    The rule of the cohort table (:func:`histoblur.inference.cohort.status`): ``error`` when
    the row holds an error; ``no_tissue`` when no tissue was found (no window judged);
    ``flagged`` when the blurred fraction is strictly above ``flag_above``. Numbers may be
    strings (rows read back from ``cohort.csv``).

    >>> slide_status({"tissue_area_mm2": 2.0, "tiles": 9, "blurred_fraction": 0.08}, 0.05)
    'flagged'
    >>> slide_status({"tissue_area_mm2": "0.0", "tiles": "0"}, 0.05), slide_status({}, 0.05)
    ('no_tissue', 'no_tissue')
    >>> slide_status({"error": "bad"}, 0.05)
    'error'
    """
    if summary.get("error"):
        return "error"

    def number(key: str) -> float:
        try:
            return float(summary.get(key) or 0.0)
        except (TypeError, ValueError):
            return 0.0

    if number("tissue_area_mm2") <= 0 or number("tiles") <= 0:
        return "no_tissue"
    return "flagged" if number("blurred_fraction") > flag_above else "ok"


def _status_line(summary: Mapping[str, Any], status: str, flag_above: float | None) -> str:
    """The status and why, in words."""
    try:
        fraction = f"{float(summary.get('blurred_fraction') or 0.0):.1%}"
    except (TypeError, ValueError):
        fraction = "?"
    rule = f"--flag-above {flag_above:.1%}" if flag_above is not None else "--flag-above"
    why = {
        "ok": f"{fraction} of the tissue blurred, at most {rule}",
        "flagged": f"{fraction} of the tissue blurred, more than {rule}: re-scan it",
        "no_tissue": "no tissue found, so no window was judged: check the scan",
        "error": "not processed",
    }[status]
    return (
        f"<p class='status {status}' data-status='{status}'>Status: "
        f"<b>{html.escape(status.replace('_', ' '))}</b> ({html.escape(why)})</p>"
    )


def _colour_bar(threshold: Any) -> str:
    """The heatmap's colour legend, 0 to 1, with the blur threshold marked."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = None
    mark = (
        f"<span class='mark' style='left:{t:.1%}' title='threshold {t:g}'></span>"
        if t is not None and 0 <= t <= 1
        else ""
    )
    label = "blur probability" + (
        f"; the black mark is the threshold {t:g}, above which tissue counts as blurred"
        if mark
        else ""
    )
    return (
        f"<div class='bar' role='img' aria-label='colour bar: {html.escape(label)}'>"
        f"<img src='{png_data_uri(colour_bar(), 256)}' alt='colour bar 0 to 1'>{mark}"
        "<div class='ticks'><span>0</span><span>0.25</span><span>0.5</span><span>0.75</span>"
        f"<span>1</span></div></div><br><span class='note'>{html.escape(label)}</span>"
    )


def slide_report_html(
    summary: Mapping[str, Any],
    thumbnail: np.ndarray,
    overlay: np.ndarray,
    heatmap: np.ndarray,
    status: str | None = None,
    flag_above: float | None = None,
    min_region_um2: float | None = None,
) -> str:
    """One slide's report: status, links, headline numbers, thumbnail, overlay, heatmap.

    Args:
        summary: the slide's ``summary.json`` contents.
        thumbnail: the slide, RGB.
        overlay: the thumbnail with blurred tissue in :data:`~histoblur.io.palette.BLUR_COLOR`.
        heatmap: blur probability over the tissue, coloured by :func:`~histoblur.io.report.heatmap`.
        status: the slide's status; None: :func:`slide_status` under ``flag_above`` (default
            0.05, the ``QCConfig`` default).
        flag_above: the blurred fraction above which the slide is flagged, for the status.
        min_region_um2: regions smaller than this (um^2) are not in the GeoJSON; None: the
            summary's ``parameters.min_region_um2``.
    """
    stem = str(summary.get("stem", "slide"))
    rule = 0.05 if flag_above is None else flag_above
    state = status if status in STATUS_ORDER else slide_status(summary, rule)
    links = "".join(
        f"<a href='{html.escape(href)}'>{html.escape(label)}</a>" for label, href in SLIDE_LINKS
    )
    rows = f"<tr><th>Status</th><td>{html.escape(state.replace('_', ' '))}</td></tr>" + "".join(
        f"<tr><th>{html.escape(label)}</th>"
        f"<td>{html.escape(_fact(summary, label, key, fmt))}</td></tr>"
        for label, key, fmt in SLIDE_FACTS
    )
    swatch = f"<span class='swatch' style='background:{css_rgb(BLUR_COLOR)}'></span>"
    figures = (
        ("Thumbnail", "Thumbnail", thumbnail),
        (
            f"Blurred tissue ({BLUR_COLOR_NAME})",
            f"Blurred tissue ({BLUR_COLOR_NAME} {swatch}, tinted and outlined)",
            overlay,
        ),
        (
            "Blur probability over tissue",
            "Blur probability over tissue<br>" + _colour_bar(summary.get("threshold")),
            heatmap,
        ),
    )
    pictures = "".join(
        f"<figure><img style='max-width:640px' src='{png_data_uri(img, 900)}' "
        f"alt='{html.escape(alt)}'><figcaption style='max-width:640px'>{caption}"
        "</figcaption></figure>"
        for alt, caption, img in figures
    )
    limit: Any = min_region_um2
    if limit is None:
        limit = (summary.get("parameters") or {}).get("min_region_um2")
    try:
        smallest = f"{float(limit):g} um²"
    except (TypeError, ValueError):
        smallest = "the minimum area (min_region_um2)"
    body = (
        f"<p class='note'>{html.escape(str(summary.get('slide', '')))}</p>"
        f"{_status_line(summary, state, flag_above)}"
        f"<p class='links'>{links}</p>"
        f"<table>{rows}</table><h2>Pictures</h2><div>{pictures}</div>"
        f"<p class='note'>Regions are in blur.geojson (level-0 pixels, class Blur, "
        f"{BLUR_COLOR_NAME} {swatch}), each with the measurements Area um2 and Mean blur "
        f"probability; regions smaller than {html.escape(smallest)} are left out of it (the "
        "overlay and blur_mask.png show them). In QuPath, drag it onto the slide or File &gt; "
        "Import objects.</p>"
    )
    return _page(f"Blur QC: {stem}", body, SLIDE_STYLE)


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


def _mpp_cell(row: Mapping[str, Any]) -> str:
    """Level-0 microns per pixel and where they came from (metadata, csv or option)."""
    mpp, source = row.get("slide_mpp"), row.get("mpp_source")
    if mpp in (None, ""):
        return _cell(None)
    shown = html.escape(str(mpp)) + (f" ({html.escape(str(source))})" if source else "")
    return _cell(mpp, shown)


def cohort_index_html(
    rows: Sequence[Mapping[str, Any]],
    thumbnails: Mapping[str, str],
    flag_above: float | None = None,
) -> str:
    """Sortable cohort table with a text and a status filter; failed slides first, then flagged.

    Args:
        rows: one mapping per slide (the ``cohort.csv`` columns, ``status`` among them).
        thumbnails: slide stem -> picture path relative to the index.
        flag_above: the blurred fraction above which a slide is flagged (for the legend).
    """
    counts = {s: sum(1 for r in rows if _status(r) == s) for s in STATUS_ORDER}
    head = (
        "<tr><th>Slide</th><th>Status</th><th>Picture</th><th>Blurred tissue</th>"
        "<th>Blurred mm²</th><th>Tissue mm²</th><th>Regions</th><th>Slide mpp (source)</th>"
        "<th>Working mpp</th><th>Tiles</th><th>Seconds</th><th>Error</th></tr>"
    )
    body = []
    for row in _order(rows):
        stem = str(row.get("stem", ""))
        error = str(row.get("error") or "")
        state = _status(row)
        name = html.escape(stem)
        if not error:
            name = (
                f"<a href='{html.escape(stem)}/report.html'>{name}</a><br>"
                f"<a class='note' href='{html.escape(stem)}/blur.geojson'>GeoJSON</a>"
            )
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
                for k in ("blurred_area_mm2", "tissue_area_mm2", "blurred_regions")
            ),
            _mpp_cell(row),
            _cell(row.get("working_mpp")),
            *(_cell(row.get(k)) for k in ("tiles", "seconds")),
            _cell(error),
        ]
        body.append(f"<tr class='{state}' data-status='{state}'>" + "".join(cells) + "</tr>")
    rule = f" (more than {flag_above:.1%} of the tissue blurred)" if flag_above is not None else ""
    failed = counts["error"]
    intro = (
        f"<p>{len(rows)} slides, {len(rows) - failed} processed, {failed} failed: "
        f"{counts['flagged']} flagged{rule}, {counts['no_tissue']} without tissue, "
        f"{counts['ok']} ok. Failed slides first, then flagged ones and the most blurred; "
        "click a column to sort, or filter by any text in a row.</p>"
    )
    choices = "".join(
        f"<option value='{s}'>{s.replace('_', ' ')} ({counts[s]})</option>" for s in STATUS_ORDER
    )
    select = (
        "<p class='filters'><label>Filter <input id='filter' type='search' "
        "placeholder='slide name, error, status...' aria-label='filter rows by text'></label>"
        "<label>Show <select id='status'>"
        f"<option value=''>all ({len(rows)})</option>{choices}</select></label>"
        f"<span class='note'><span id='shown'>{len(rows)}</span> shown</span></p>"
    )
    table = (
        f"<div class='scroll'><table><thead>{head}</thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
    return _page(COHORT_TITLE, intro + select + table, INDEX_STYLE, SORT_SCRIPT)


def repair_report_html(
    stem: str, rows: Sequence[Mapping[str, Any]], before_um2: float, after_um2: float
) -> str:
    """The ``qc --repair`` page of one slide.

    Every region's numbers and its before / attempt picture (``REGION_pair.jpg``), and the
    blurred area flagged in the regions before and after.

    >>> page = repair_report_html("scan", [], 0.0, 0.0)
    >>> "no region large enough" in page and page.startswith("<!doctype html>")
    True
    """
    body = []
    if not rows:
        body.append("<p>QC flagged no region large enough to repair.</p>")
    else:
        body.append(
            f"<p>{len(rows)} region(s); blurred area the segmenter flags inside them: "
            f"{before_um2:,.0f} &micro;m&sup2; before repair, {after_um2:,.0f} &micro;m&sup2; "
            "after. Pixels outside the regions are unchanged.</p>"
        )
    for r in rows:
        reverted = ": kept as it was" if r["outcome"] == "reverted" else ""
        body.append(
            f"<h2>{html.escape(str(r['region']))}</h2><p>level-0 ({r['x']}, {r['y']}), "
            f"{r['width']} x {r['height']} px; {r['area_um2']:,.0f} &micro;m&sup2;; blur type "
            f"{html.escape(str(r['blur_type']))}; {r['restored_px']} px of folds/bubbles "
            f"restored; blurred {100 * r['blurred_before']:.1f} % &rarr; "
            f"{100 * r['blurred_after']:.1f} % ({r['outcome']}{reverted})</p>"
            f"<img src='{r['region']}_pair.jpg' alt='before and after' style='max-width:100%'>"
        )
    return _page(f"{stem}: repaired regions", "\n".join(body))
