"""In CI (CI=true), a test marked as needing a real model, dask or transformers may not
skip: the rule in conftest.py turns its skip into a failure. Run on a small test file
with a copy of the conftest, in a fresh pytest process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = """
import pytest

@pytest.mark.model
def test_marked_model():
    pytest.skip("the model package is not installed")

@pytest.mark.dask
def test_marked_dask():
    pytest.importorskip("a_module_that_does_not_exist")

@pytest.fixture
def smollm2():
    pytest.skip("the model package is not installed")

def test_using_a_model_fixture(smollm2):
    pass

def test_unmarked():
    pytest.skip("optional")

@pytest.mark.transformers
@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

@pytest.mark.transformers
def test_passes():
    pass
"""


def _run(folder, ci):
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    if ci:
        env["CI"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout


@pytest.fixture
def folder(tmp_path):
    conftest = Path(__file__).with_name("conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    model\n    dask\n    transformers\n"
    )
    (tmp_path / "test_needs.py").write_text(TESTS)
    return tmp_path


def test_locally_a_missing_part_skips(folder):
    status, out = _run(folder, ci=False)
    assert status == 0, out
    assert "1 passed, 4 skipped, 1 xfailed" in out


def test_in_ci_a_marked_test_that_skips_fails_the_run(folder):
    status, out = _run(folder, ci=True)
    assert status == 1, out
    # A skip in a test fails it; a skip while setting up its fixtures is an error.
    assert "2 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in out
    for name in ("test_marked_model", "test_marked_dask"):
        assert f"FAILED test_needs.py::{name}" in out
    assert "ERROR test_needs.py::test_using_a_model_fixture" in out
    assert "skipped in CI (CI=true), but marked model" in out
    assert "a_module_that_does_not_exist" in out  # the reason of the skip is kept


def test_in_ci_a_module_skipped_whole_fails_the_run(folder):
    (folder / "test_needs.py").write_text(
        'import pytest\npytest.importorskip("a_module_that_does_not_exist")\n'
    )
    (folder / "test_other.py").write_text("def test_passes():\n    pass\n")
    assert _run(folder, ci=False)[0] == 0
    status, out = _run(folder, ci=True)
    assert status != 0, out
    assert "test_needs.py was skipped whole in CI" in out
