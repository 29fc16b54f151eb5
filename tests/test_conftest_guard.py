"""The suite's own guard: a test that leaves a store outside its tmp folder fails.

A CI run once left ``/tmp/.nbflow`` behind (a process that ran in ``/tmp`` without the
test's ``NBFLOW_HOME``); later tests, and the developer's own projects, would find runs in
it.  ``tests/conftest.py`` looks for new stores above the test's tmp folder, in the folder
pytest started in, and in ``$HOME``, and fails the test that made one.  Here a small suite
with this conftest runs in a pytest of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


def test_a_store_made_above_the_tests_folder_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner="""
        import os
        from pathlib import Path

        def test_stray(tmp_path):
            # what a process running one level up without NBFLOW_HOME would do
            (tmp_path.parent / ".nbflow").mkdir()

        def test_own(tmp_path):
            Path(os.environ["NBFLOW_HOME"]).mkdir()  # the test's own store is fine
    """)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=2, errors=1)
    res.stdout.fnmatch_lines(["*the test made a store outside its tmp folder: *.nbflow*"])
    assert "test_stray" in "\n".join(line for line in res.outlines if "ERROR" in line)


@pytest.mark.timeout(300)
def test_a_session_cluster_worker_signing_with_its_own_key_fails_the_test(pytester: pytest.Pytester) -> None:
    """The session's Dask cluster starts before a test's own NBFLOW_KEY_FILE is set: a
    worker that signs without the key the test's process passed it would sign with the key
    it inherited (the developer's own); its workers get a key place of their own instead,
    and a key made there fails the test that made it."""
    pytest.importorskip("distributed")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner="""
        import os
        import distributed
        from nbflow.store import signing

        def _sign(key_file=None):
            if key_file is None:
                return signing.mac(b"x").hex()  # (the worker's own key)
            with signing.signing_as(key_file):
                return signing.mac(b"x").hex()

        def test_given_key(dask_cluster):
            with distributed.Client(dask_cluster.scheduler_address, set_as_default=False) as c:
                c.submit(_sign, os.environ["NBFLOW_KEY_FILE"], pure=False).result(timeout=120)

        def test_own_key(dask_cluster):
            with distributed.Client(dask_cluster.scheduler_address, set_as_default=False) as c:
                c.submit(_sign, pure=False).result(timeout=120)
    """)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=2, errors=1)
    res.stdout.fnmatch_lines(["*a worker of the session's Dask cluster used its own store or key*"])
    assert "test_own_key" in "\n".join(line for line in res.outlines if "ERROR" in line)


def test_no_test_is_placed_by_durations_an_earlier_test_measured(pytester: pytest.Pytester) -> None:
    pytest.importorskip("distributed")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner="""
        from nbflow.locality import agent

        def test_first():  # (what a Dask run of workflow "sums" leaves in the process)
            agent._compute[("sums", "add-0")] = 5.0

        def test_second():
            assert ("sums", "add-0") not in agent._compute
    """)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=2)


def test_the_places_looked_at(tmp_path: Path) -> None:
    import conftest

    places = conftest.stray_store_places(tmp_path)
    assert tmp_path.parent / ".nbflow" in places
    assert Path("/tmp/.nbflow") in places or not tmp_path.is_relative_to("/tmp")
    assert Path.home() / ".nbflow" in places
    assert Path.cwd() / ".nbflow" in places or Path.cwd() != conftest._SESSION_CWD
    assert tmp_path / ".nbflow" not in places  # the test's own store


def test_a_store_search_stops_at_the_tests_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbflow.store import store_home

    monkeypatch.delenv("NBFLOW_HOME")
    monkeypatch.chdir(tmp_path)
    marker = tmp_path.parent / "pyproject.toml"  # a project root just above the test's folder
    assert not marker.exists()
    marker.write_text("")
    try:
        assert store_home() == tmp_path / ".nbflow"  # not the folder above
    finally:
        marker.unlink()
