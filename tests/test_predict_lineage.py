"""New tasks fall back sensibly and say so: code lineage, similar name, global prior."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.predict import Predictor


def _obs(name: str, code: str, seconds: float, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(len(name))
    return pd.DataFrame({
        "instance": [f"run{i % 3}" for i in range(n)], "task": name, "code": code,
        "input_bytes": 1e6, "duration_s": seconds * np.exp(rng.normal(0, 0.05, n)),
    })


def test_renamed_task_with_the_same_code_uses_its_history() -> None:
    p = Predictor().fit(pd.concat([_obs("align", "c-align", 10.0), _obs("plot", "c-plot", 0.1)],
                                  ignore_index=True))
    rows = pd.DataFrame({
        "task": ["map_reads", "align", "align_v2", "zzz"],
        "code": ["c-align", "c-align-edited", None, "c-new"],
        "input_bytes": 1e6,
    })
    out = p.predict(rows)
    # A dissimilar new name running align's unchanged code: align's history.
    assert out.loc[0, "source"] == "code lineage: align"
    assert out.loc[0, "duration_s"] == pytest.approx(10.0, rel=0.1)
    # The same name with edited code: its earlier versions, flagged.
    assert out.loc[1, "source"] == "history (code changed)"
    assert out.loc[1, "duration_s"] == pytest.approx(10.0, rel=0.1)
    # No code known: the name decides; nothing matches: the global prior.
    assert out.loc[2, "source"] == "similar name: align"
    assert out.loc[3, "source"] == "global prior"
    # Without a code column nothing changes: the name is all there is.
    plain = p.predict(rows.drop(columns="code"))
    assert plain["source"].tolist() == ["global prior", "history", "similar name: align", "global prior"]


def test_forecast_lists_the_fallback_of_each_new_task_from_the_store() -> None:
    def first(x: int) -> int:
        return x * 2 + 1

    def second(x: int) -> int:
        return x * 2 + 1  # (the code of `first`, renamed: function and task)

    def edited(x: int) -> int:
        return x * 3 + 1

    prepare = nf.task(name="prepare")(first)
    with nf.Workflow("lineage") as wf:
        prepare(1)
        prepare(2)
    assert wf.run().status == "completed"
    h = nf.history(task="prepare")
    assert h["code"].notna().all() and h["code"].nunique() == 1

    renamed = nf.task(name="stage_one")(second)
    changed = nf.task(name="prepare")(edited)
    fresh = nf.task(name="zzz_unrelated")(edited)
    with nf.Workflow("lineage") as wf2:
        renamed(3)
        changed(4)
        fresh(5)
    fc = nf.forecast(wf2, workers=[1, 2])
    assert fc.fallbacks == {
        "prepare": "history (code changed)",
        "stage_one": "code lineage: prepare",
        "zzz_unrelated": "global prior",
    }
    assert fc.no_history == ["stage_one", "zzz_unrelated"]
    text = str(fc)
    assert "stage_one (code lineage: prepare)" in text and "code changed" in text
    assert "code lineage: prepare" in fc._repr_html_()
