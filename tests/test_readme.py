"""The README's first example is real: run it and check what its comments claim."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path


def test_readme_first_example_runs_as_documented():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    out = io.StringIO()
    namespace: dict = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)  # the documented code, as written
    assert out.getvalue().startswith("3 parts, sum 11310 3 parts, sum 11310")
    assert namespace["run"].status == "completed"
