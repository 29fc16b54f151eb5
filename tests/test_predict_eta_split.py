"""``nbflow.predict.eta`` is split into modules with one job each, and keeps its names.

Code and notebooks import the ETA's names from ``nbflow.predict.eta``; after the split each
name must still be there, and be the very object its own module defines (a copy would
drift: a setting changed on one would not reach the other).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import nbflow.predict.eta as eta

# name -> the module that now owns it
OWNERS = {
    "Eta": "eta_types", "Forecast": "eta_types", "ForecastError": "eta_types",
    "RunSnapshot": "inflight", "snapshot": "inflight", "eta_of": "inflight", "run_pace": "inflight",
    "DEFAULT_SAMPLES": "inflight",
    "forecast": "forecasting",
    "default_predictor": "fitting", "recent_history": "fitting", "shared_predictor": "fitting",
    "live_predictor": "fitting", "fit_in_process": "fitting", "fit_pids": "fitting",
    "drop_fit_pool": "fitting", "SYNC_FIT_ROWS": "fitting",
    "LiveEta": "live", "live_eta": "live", "run_eta_text": "live", "quick_of": "live",
    "FIT_WORTH_S": "live", "ETA_BUDGET": "live",
}


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_every_name_is_still_importable_from_eta_and_is_its_owners_object(name: str) -> None:
    owner = importlib.import_module(f"nbflow.predict.{OWNERS[name]}")
    assert getattr(eta, name) is getattr(owner, name)


def test_the_old_public_list_is_still_exported() -> None:
    old = ["Eta", "Forecast", "ForecastError", "RunSnapshot", "eta_of", "forecast", "run_eta", "snapshot"]
    assert set(old) <= set(eta.__all__)
    assert all(hasattr(eta, n) for n in eta.__all__)


def test_each_part_is_a_short_module() -> None:
    here = Path(eta.__file__).parent
    for part in ("eta", "eta_types", "inflight", "forecasting", "fitting", "live"):
        lines = (here / f"{part}.py").read_text().count("\n")
        assert lines < 420, f"{part}.py has {lines} lines"


def test_a_setting_changed_on_eta_reaches_the_module_that_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbflow.predict import fitting, live

    monkeypatch.setattr(eta, "FIT_WORTH_S", 0.0)  # as the README and benchmarks/widget.py do
    monkeypatch.setattr(eta, "FIT_IN_PROCESS", False)
    assert live.FIT_WORTH_S == 0.0 and fitting.FIT_IN_PROCESS is False
    assert eta.FIT_WORTH_S == 0.0
