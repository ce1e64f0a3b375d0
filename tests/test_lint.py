"""The code passes ruff (installed with the test extra), with the rules the project keeps:
pyflakes (F: unused imports and names, undefined names, ...), pycodestyle's errors (E4/E7/E9:
imports, statements, syntax) and warnings (W: whitespace). E741 (a variable named `l`, `I`, `O`)
is off: the math in this code uses such names. Package `__init__.py` files re-export names
(F401) and tensor/__init__.py imports after tuning malloc on purpose (E402)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ["--isolated", "--select", "E4,E7,E9,F,W", "--ignore", "E741",
         "--per-file-ignores", "__init__.py:F401", "--per-file-ignores", "__init__.py:E402",
         "--line-length", "100"]


def ruff():
    beside = Path(sys.executable).parent / "ruff"
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        pytest.skip('ruff is not installed: pip install -e ".[test]"')
    return found


def test_ruff_finds_nothing():
    paths = [str(ROOT / p) for p in ("tensor", "tinygpt", "tests", "examples", "benchmarks")]
    proc = subprocess.run([ruff(), "check", *RULES, "--output-format", "concise", *paths],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_would_notice_a_problem(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    proc = subprocess.run([ruff(), "check", *RULES, str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1 and "F401" in proc.stdout
