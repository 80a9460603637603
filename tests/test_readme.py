"""Every ```python block of the README and of the docs pages listed here runs: the blocks of one file in order,
in one namespace (a later block may use an earlier one's names), in a temporary working directory."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "docs/cli.md", "docs/rules.md", "docs/splitting.md", "docs/presets.md", "docs/metrics.md",
             "docs/paths.md", "docs/datasets.md", "docs/integrations.md", "docs/transformers.md",
             "docs/modalities.md", "docs/views.md", "docs/text.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_block_extraction():
    text = "intro\n```python\na = 1\n```\n```bash\nls\n```\n\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (10, "b = a + 1\n")]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_python_blocks_run(document, tmp_path, monkeypatch):
    path = ROOT / document
    assert path.is_file(), f"{document} is missing"
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{document} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"doc_{path.stem}"}
    for line, code in blocks:
        exec(compile(code, f"{document}:{line}", "exec"), namespace)
