"""Fixtures of the reliability suite: a private signing key per test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_key(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_KEY_FILE", str(tmp_path / "keys" / "key"))
    yield
