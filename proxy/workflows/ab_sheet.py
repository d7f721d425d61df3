"""`contact-sheet.html`: one self-contained page to compare the grid side by side.

Rows are variations, columns are models; each cell shows its images (files beside the page)
with the prompt, the model that served it, what it cost and the cache outcome. No external
resource of any kind (a Content-Security-Policy says so to the browser too); every piece of
text is escaped. A small inline script sets `data-loaded` (images that loaded) and
`data-images` (all images) on <body> once the page has loaded, for checks in a browser.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import quote

from policies.budget import format_usd
from proxy.workflows.ab_grid import CellResult, Plan

__all__ = ["SHEET", "render_sheet"]

SHEET = "contact-sheet.html"

_CSP = (
    "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'"
)
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.meta { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 8px; vertical-align: top; background: #fff; }
th { background: #f0f0f0; text-align: left; }
th.row { max-width: 220px; font-weight: 600; }
figure { margin: 0 0 8px; }
img { display: block; max-width: 320px; max-height: 320px; height: auto; }
figcaption, .info { font-size: 12px; color: #444; max-width: 320px; overflow-wrap: anywhere; }
.failed { color: #b00020; max-width: 320px; overflow-wrap: anywhere; }
code { font-size: 11px; }
"""
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
  }
  document.body.setAttribute("data-loaded", String(loaded));
  document.body.setAttribute("data-images", String(images.length));
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_sheet(plan: Plan, results: Sequence[CellResult], gateway: str) -> str:
    """The whole page as text."""
    total = sum(r.cost_micros for r in results)
    failed = sum(1 for r in results if r.error is not None)
    images = sum(len(r.images) for r in results)
    meta = (
        f"{len(results)} cells, {images} images, {failed} failed · ${format_usd(total)} spent · "
        f"via {gateway}"
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e('A/B: ' + (plan.base or 'variations'))}</title>",
            f"<style>{_STYLE}</style>",
            f"<script>{_SCRIPT}</script>",
            "</head><body>",
            f"<h1>{_e(plan.base or 'Variations')}</h1>",
            f'<p class="meta">{_e(meta)}</p>',
            _table(plan, results),
            "</body></html>",
            "",
        ]
    )


def _table(plan: Plan, results: Sequence[CellResult]) -> str:
    by_cell = {(r.cell.row, r.cell.col): r for r in results}
    heads = "".join(f"<th>{_e(model or 'default model')}</th>" for model in plan.models)
    rows = [f"<table><thead><tr><th>variation</th>{heads}</tr></thead><tbody>"]
    for row, variation in enumerate(plan.variations or ("",)):
        cells = "".join(
            _cell(by_cell[(row, col)]) if (row, col) in by_cell else "<td></td>"
            for col in range(len(plan.models))
        )
        rows.append(f'<tr><th class="row">{_e(variation or "(base only)")}</th>{cells}</tr>')
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _cell(result: CellResult) -> str:
    parts = ["<td>"]
    for image in result.images:
        alt = image.revised_prompt or result.cell.prompt
        parts.append(
            f'<figure><img src="{_e(quote(image.file))}" alt="{_e(alt)}" loading="eager">'
            f"<figcaption><code>{_e(image.file)}</code></figcaption></figure>"
        )
    if result.error is not None:
        status = "" if result.status is None else f" (HTTP {result.status})"
        parts.append(f'<div class="failed">failed{_e(status)}: {_e(result.error)}</div>')
    info = [
        ("prompt", result.cell.prompt),
        ("model", result.served_model or result.cell.model or "default"),
        ("provider", result.provider or "?"),
        ("cost", f"${format_usd(result.cost_micros)}"),
        ("cache", result.cache or "?"),
    ]
    parts.append(
        '<div class="info">'
        + "<br>".join(f"<b>{_e(name)}</b>: {_e(value)}" for name, value in info)
        + "</div></td>"
    )
    return "".join(parts)
