"""The live view's ETA span: "no ETA yet" is asked again soon, a real ETA every ETA_EVERY s.

A short run's first ETA exists a moment after it starts (the quick estimate, or a run old
enough to be worth one); caching the empty answer for the full ETA_EVERY seconds made the
widget show its first ETA only when such a run was nearly over."""

from __future__ import annotations

from typing import Any

import pytest

import nbflow.predict.eta as eta_mod
from nbflow.predict import timeline


class _Run:
    status = "running"


def test_no_eta_yet_is_asked_again_soon_and_an_eta_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    answers: list[Any] = [None, "ETA 1.0 s (80%: 0.9 s–1.2 s)", "ETA 0.5 s (80%: 0.4 s–0.6 s)"]
    asked: list[int] = []

    def fake_text(run: Any, patient: bool = False) -> Any:
        asked.append(1)
        return answers[min(len(asked) - 1, len(answers) - 1)]

    monkeypatch.setattr(eta_mod, "run_eta_text", fake_text)
    monkeypatch.setattr(timeline.time, "monotonic", lambda: clock[0])
    run = _Run()
    assert timeline.eta_html(run) == ""  # nothing yet
    clock[0] += timeline.ETA_RETRY + 0.01  # well before ETA_EVERY: asked again
    assert "ETA 1.0 s" in timeline.eta_html(run)
    clock[0] += timeline.ETA_RETRY + 0.01  # an ETA is kept for ETA_EVERY seconds
    assert "ETA 1.0 s" in timeline.eta_html(run)
    assert len(asked) == 2
    clock[0] += timeline.ETA_EVERY
    assert "ETA 0.5 s" in timeline.eta_html(run)
