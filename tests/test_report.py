"""lrpc report: the job's page opened in a real headless browser (Debian's chromium).

The page must load with no console message at all (no script error, no failed resource), show every explained
image with its heatmap, run its inline sorting script (``#sort=-probability`` sorts the table on load), and show
the concept atlas with each channel's reference crops. CI installs chromium (.ci/run).
"""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import lrpc
from lrpc.report import write_report

from test_dataset import write_scenes

pytest.importorskip("zarr")
pq = pytest.importorskip("pyarrow.parquet")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N_SCENES, TOP, ATLAS = 7, 3, 4


class Page(HTMLParser):
    """The images by class, the table's rows (their cells' data-sort values) and its header keys."""

    def __init__(self):
        super().__init__()
        self.images: dict[str, list[dict]] = {}
        self.keys: list[str] = []
        self.rows: list[list[str]] = []
        self._table = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.setdefault(attrs.get("class"), []).append(attrs)
        elif tag == "table":
            self._table = attrs.get("id")
        elif self._table == "images" and tag == "th":
            self.keys.append(attrs["data-key"])
        elif self._table == "images" and tag == "tr" and self.keys:
            self.rows.append([])
        elif self._table == "images" and tag == "td":
            self.rows[-1].append(attrs.get("data-sort"))

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def open_in_chromium(page: Path, tmp_path: Path, fragment: str = "") -> tuple[Page, list[str]]:
    """The DOM after the page's scripts ran, and every console message chromium logged."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri() + fragment]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = Page()
    parsed.feed(result.stdout)
    return parsed, [line for line in result.stderr.splitlines() if "CONSOLE" in line]


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, N_SCENES)
    (root / "disc" / "broken.png").write_text("not an image\n")
    job = tmp_path_factory.mktemp("jobs") / "job"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lrpc.explain_dataset(root, job, model="groundtruth", unit=4, progress=False, concepts="layer2", top=TOP)
    finally:
        torch.set_num_threads(threads)
    return job


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get install chromium (CI's .ci/run does)")
def test_page_loads_without_console_messages_and_shows_every_image(job, tmp_path):
    page = write_report(job, tmp_path / "report.html", atlas_channels=ATLAS)
    dom, console = open_in_chromium(page, tmp_path, "#sort=-probability")
    assert console == []
    table = pq.read_table(job / "table.parquet").to_pydict()
    explained = sum(error is None for error in table["error"])
    assert explained == N_SCENES
    assert len(dom.images["input"]) == len(dom.images["heatmap"]) == explained
    assert all(image["src"].startswith("data:image/png;base64,") for kind in dom.images.values() for image in kind)
    assert len(dom.rows) == len(table["index"]) == N_SCENES + 1
    # the inline script sorted the table by probability, largest first, the failed image (no value) last
    column = dom.keys.index("probability")
    values = [row[column] for row in dom.rows]
    assert values[-1] == "" and [float(v) for v in values[:-1]] == sorted(
        (p for p in table["probability"] if p is not None), reverse=True)
    assert len(dom.images["crop"]) == ATLAS * TOP

    unsorted, console = open_in_chromium(page, tmp_path)
    assert console == [] and [row[dom.keys.index("index")] for row in unsorted.rows] == [
        str(i) for i in range(N_SCENES + 1)]


def test_cli_writes_the_page_and_refuses_an_unfinished_job(job, tmp_path, capsys):
    from lrpc.cli import main

    assert main(["report", str(job), "--max-images", "2", "--atlas-channels", "1"]) == 0
    html = (job / "report.html").read_text()
    assert html.count('class="input"') == 2 and html.count('class="crop"') == TOP
    assert "2 of 8 images" in html and "<script src" not in html and "http" not in html.split("<body>")[1]
    unfinished = tmp_path / "unfinished"
    shutil.copytree(job, unfinished)
    (unfinished / "_SUCCESS").unlink()
    assert main(["report", str(unfinished)]) == 1
    assert "not a finished explain-dataset job" in capsys.readouterr().err
