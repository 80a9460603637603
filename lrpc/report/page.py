"""``lrpc report JOB``: one static HTML page for a finished ``explain-dataset`` job.

The page holds the job's settings, the summary (mean ± standard error of every per-image number), the table of
images (sortable by any column: click its header, or open ``report.html#sort=-probability``), each image with
its heatmap, and, when the job recorded concepts, the concept atlas: each layer's most relevant channels over the
dataset (the mean of their relevance R_c over the images) with their reference crops. Pictures are PNG data URIs
and the script is inline, so the page is one file that opens offline, with no server and no external asset.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import numpy as np

from ..data.folder import preprocess_image
from ..optional import require
from ..dataset_jobs.store import decode
from ..errors import LrpcError
from .pictures import heatmap_uri, png_uri

__all__ = ["write_report"]

# table columns shown, in this order, where the job has them (metric columns are added after conservation_error)
COLUMNS = ("index", "path", "label", "target", "predicted", "probability", "start", "relevance_sum", "absorbed",
           "conservation_error")
TRAILING = ("error", "rank", "seconds")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; vertical-align: middle; }
td.text { text-align: left; }
table.sortable th { cursor: pointer; background: #f2f2f2; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
img { display: block; }
img.crop { display: inline-block; margin: 1px; width: 64px; height: 64px; object-fit: contain; background: #eee; }
.concept { display: flex; align-items: center; gap: 0.6em; margin: 4px 0; }
.concept .label { width: 11em; font-size: 0.85em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; } dt { font-weight: bold; }
"""

SCRIPT = """
(function () {
  function key(cell) { return cell.getAttribute("data-sort"); }
  function sortBy(table, column, ascending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      if (x === "" || y === "") { return (x === "") - (y === ""); }   /* empty cells last either way */
      var nx = Number(x), ny = Number(y);
      var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : (x < y ? -1 : (x > y ? 1 : 0));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, k) {
      if (k === column) { th.setAttribute("aria-sort", ascending ? "ascending" : "descending"); }
      else { th.removeAttribute("aria-sort"); }
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.addEventListener("click", function () {
        sortBy(table, column, th.getAttribute("aria-sort") !== "ascending");
      });
    });
  });
  var wanted = /^#sort=(-?)([A-Za-z_]+)$/.exec(window.location.hash);
  var table = document.getElementById("images");
  if (wanted && table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      if (th.getAttribute("data-key") === wanted[2]) { sortBy(table, column, wanted[1] !== "-"); }
    });
  }
})();
"""


def write_report(job: str | os.PathLike, output: str | os.PathLike | None = None, *, max_images: int | None = 500,
                 thumbnail: int = 128, atlas_channels: int = 12, root: str | os.PathLike | None = None) -> Path:
    """Write the page of the finished job ``job`` to ``output`` (default ``JOB/report.html``); returns its path.

    ``max_images`` rows of the table get their image and heatmap (the first ones by index; ``None``: all),
    ``thumbnail`` is their side in pixels, ``atlas_channels`` the channels per concept layer in the atlas.
    ``root`` is the dataset folder when it moved since the job ran.
    """
    job = Path(job)
    if not (job / "_SUCCESS").is_file():
        raise LrpcError(f"{job} is not a finished explain-dataset job (no _SUCCESS): run or rerun explain-dataset")
    for name, value in (("thumbnail", thumbnail), ("atlas_channels", atlas_channels)):
        if not isinstance(value, int) or value < 1:
            raise LrpcError(f"{name} must be a positive integer, got {value!r}")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 0):
        raise LrpcError(f"max_images must be a non-negative integer or None, got {max_images!r}")
    description = json.loads((job / "job.json").read_text())
    summary = json.loads((job / "summary.json").read_text())
    table = require("pyarrow.parquet").read_table(job / "table.parquet").to_pydict()
    zarr = require("zarr")
    store = zarr.open_group(str(job / "maps.zarr"), mode="r")
    images = _Images(Path(root if root is not None else description["root"]), description["config"])

    shown = len(table["index"]) if max_images is None else min(max_images, len(table["index"]))
    sections = [_settings(job, description), _summary(summary),
                _image_table(table, store, images, shown, thumbnail)]
    if (job / "concepts.parquet").is_file():
        sections.append(_atlas(job, description, store, images, atlas_channels))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>lrpc report: {html.escape(job.resolve().name)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(sections) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
    output = Path(output) if output is not None else job / "report.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output


class _Images:
    """The job's images as its model saw them (resized, centre-cropped, not normalised), read once each."""

    def __init__(self, root: Path, config: dict):
        self.root, self.resize, self.size = root, config["resize"], config["input_size"]
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, path: str) -> np.ndarray:
        if path not in self._cache:
            from PIL import Image

            try:
                with Image.open(self.root / path) as image:
                    pixels = preprocess_image(image.convert("RGB"), self.resize, self.size, (0, 0, 0), (1, 1, 1))
            except OSError as exc:
                raise LrpcError(f"cannot read {self.root / path} ({exc}); pass the dataset folder as root "
                                "(--root) if it moved") from exc
            self._cache[path] = pixels.permute(1, 2, 0).numpy()
        return self._cache[path]


def _settings(job: Path, description: dict) -> str:
    config = description["config"]
    items = [("job", str(job.resolve())), ("dataset", description.get("root", "")), ("model", config["model"]),
             ("rules", config["rules"]), ("target", config["target"]), ("images", config["images"]),
             ("input", f"{config['input_size']} px (resized to {config['resize']}, centre crop)"),
             ("metrics", ", ".join(config["metrics"]) + (f" ({config['protocol']})" if config["metrics"] else "")
              or "none"),
             ("concepts", ", ".join(config.get("concepts", [])) or "none"),
             ("created", description.get("created", "")), ("lrpc", description.get("lrpc", ""))]
    rows = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(str(value))}</dd>" for name, value in items)
    return f"<h1>lrpc report: {html.escape(job.resolve().name)}</h1>\n<dl>{rows}</dl>"


def _number(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _summary(summary: dict) -> str:
    rows = [f"<tr><td class=\"text\">{html.escape(name)}</td><td>{_number(stat['mean'])}</td>"
            f"<td>{_number(stat['se'])}</td><td>{stat['n']}</td></tr>" for name, stat in summary["statistics"].items()]
    parts = [f"<h2>Summary</h2>\n<p id=\"counts\">{summary['images']} images, {summary['explained']} explained, "
             f"{summary['failed']} failed.</p>",
             "<table id=\"summary\"><thead><tr><th>quantity</th><th>mean</th><th>± s.e.</th><th>n</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>"]
    if summary["failures"]:
        items = "".join(f"<li>{html.escape(f['path'])}: {html.escape(f['error'])}</li>" for f in summary["failures"])
        parts.append(f"<p>Failed images:</p><ul id=\"failures\">{items}</ul>")
    return "\n".join(parts)


def _heatmaps(store, rows: list[int]) -> np.ndarray:
    if not rows:
        return np.empty((0, 0, 0), np.float32)
    values = store["heatmap"].get_orthogonal_selection((np.array(rows),))
    scale = store["heatmap_scale"].get_orthogonal_selection((np.array(rows),)) if "heatmap_scale" in store else None
    return decode(values, scale)


def _image_table(table: dict, store, images: _Images, shown: int, thumbnail: int) -> str:
    columns = [name for name in COLUMNS if name in table]
    columns += [name for name in table if name not in COLUMNS and name not in TRAILING]   # the metrics
    columns += [name for name in TRAILING if name in table]
    good = [i for i in range(shown) if table["error"][i] is None]
    heat = dict(zip(good, _heatmaps(store, good)))
    header = "<th data-key=\"image\">image</th><th data-key=\"heatmap\">heatmap</th>" + "".join(
        f"<th data-key=\"{name}\">{html.escape(name)}</th>" for name in columns)
    body = []
    for i in range(shown):
        if i in heat:
            pictures = (f"<td data-sort=\"\"><img class=\"input\" alt=\"image {i}\" "
                        f"src=\"{png_uri(images(table['path'][i]), thumbnail)}\"></td>"
                        f"<td data-sort=\"\"><img class=\"heatmap\" alt=\"heatmap {i}\" "
                        f"src=\"{heatmap_uri(heat[i], thumbnail)}\"></td>")
        else:
            pictures = "<td data-sort=\"\"></td><td data-sort=\"\"></td>"
        cells = []
        for name in columns:
            value = table[name][i]
            text = isinstance(value, str)
            sort = "" if value is None else (value if text else repr(value))
            kind = ' class="text"' if text else ""
            shown_value = html.escape(value) if text else _number(value)
            cells.append(f"<td{kind} data-sort=\"{html.escape(str(sort))}\">{shown_value}</td>")
        body.append(f"<tr>{pictures}{''.join(cells)}</tr>")
    total = len(table["index"])
    note = f"{shown} of {total} images" + ("" if shown == total else f" (the first {shown} by index; "
                                                                     "the table.parquet has all)")
    return (f"<h2>Images</h2>\n<p id=\"shown\">{note}. Click a column to sort.</p>\n"
            f"<table id=\"images\" class=\"sortable\"><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _mean_over_images(array) -> np.ndarray:
    """[C]: the mean of an [N, C] array's finite rows (failed images are NaN), read one chunk of rows at a time."""
    total, count = np.zeros(array.shape[1]), 0
    for start in range(0, array.shape[0], array.chunks[0]):
        rows = np.asarray(array[start:start + array.chunks[0]], np.float64)
        rows = rows[np.isfinite(rows).all(1)]
        total += rows.sum(0)
        count += len(rows)
    return total / max(count, 1)


def _atlas(job: Path, description: dict, store, images: _Images, atlas_channels: int) -> str:
    pq = require("pyarrow.parquet")
    references = pq.read_table(job / "concepts.parquet", filters=[("mode", "==", "relevance"),
                                                                  ("statistic", "==", "sum")]).to_pydict()
    by_channel: dict[tuple[str, int], list[int]] = {}
    for k, (layer, channel) in enumerate(zip(references["layer"], references["channel"])):
        by_channel.setdefault((layer, channel), []).append(k)
    parts = ["<h2>Concept atlas</h2>\n<p>Per layer, the channels with the largest mean relevance R<sub>c</sub> "
             "(the relevance at the layer's output summed over a channel's positions) over the job's images, each "
             "with the images where that channel is most relevant (relevance maximisation), cut to the receptive "
             "field of its most relevant position.</p>"]
    for layer, about in description["concepts"].items():
        mean = _mean_over_images(store[f"concepts/{layer}/relevance_sum"])
        ranked = np.argsort(-mean, kind="stable")[:atlas_channels]
        rows = []
        for channel in ranked.tolist():
            crops = []
            for k in sorted(by_channel.get((layer, channel), []), key=lambda k: references["rank"][k]):
                top, left = references["top"][k], references["left"][k]
                crop = images(references["path"][k])[top:references["bottom"][k], left:references["right"][k]]
                crops.append(f"<img class=\"crop\" alt=\"{html.escape(references['path'][k])}\" "
                             f"title=\"{html.escape(references['path'][k])}: R = {references['score'][k]:.4g}\" "
                             f"src=\"{png_uri(crop, 64)}\">")
            rows.append(f"<div class=\"concept\"><span class=\"label\">channel {channel}<br>mean R<sub>c</sub> = "
                        f"{mean[channel]:.4g}</span><span>{''.join(crops)}</span></div>")
        parts.append(f"<h3>{html.escape(layer)} <small>(node {html.escape(about['node'])}, {about['channels']} "
                     f"channels)</small></h3>\n<div class=\"layer\" data-layer=\"{html.escape(layer)}\">"
                     + "".join(rows) + "</div>")
    return "\n".join(parts)
