"""docs/embedding.md stays true: every ```python block runs as a program, with real clients
(libnfs's nfs-cat, our RpcClient), and prints exactly the ```text block that follows it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "embedding.md"
_EXAMPLE = re.compile(r"```python\n(.*?)```\s*\nprints:\s*\n\s*```text\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    found = _EXAMPLE.findall(GUIDE.read_text())
    assert found, "no examples found in docs/embedding.md"
    return found


def test_every_python_block_of_the_guide_has_its_expected_output():
    """A block without a 'prints:' block would go untested."""
    assert GUIDE.read_text().count("```python") == len(examples())


@pytest.mark.parametrize("index", range(len(examples())))
def test_guide_example_runs_and_prints_what_the_guide_says(index: int, tmp_path: Path):
    code, expected = examples()[index]
    script = tmp_path / f"example_{index}.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected, done.stderr
