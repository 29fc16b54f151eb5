"""The README's first example is real: run it as a script and check what its comments claim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_readme_first_example_runs_as_documented(tmp_path):
    text = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 parts, sum 11310 3 parts, sum 11310")
    assert "describe-0" in out.stdout
