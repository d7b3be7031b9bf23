"""flows/versioning.py: `dvc push` after a run (the success path is in tests/test_deploy.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from flows import versioning
from tests.conftest import VENV_BIN


@pytest.fixture
def dvc_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{VENV_BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, check=True, capture_output=True)
    (tmp_path / "data.txt").write_text("x\n")
    subprocess.run(["dvc", "add", "-q", "data.txt"], check=True, capture_output=True)
    return tmp_path


def test_without_a_default_remote_nothing_is_pushed(dvc_repo):
    assert versioning.default_remote() is None
    assert versioning.push([]).startswith("no default DVC remote")


def test_push_stores_the_cache_in_the_default_remote(dvc_repo):
    subprocess.run(["dvc", "remote", "add", "-d", "store", str(dvc_repo / "store")], check=True)
    assert versioning.default_remote() == ("store", str(dvc_repo / "store"))
    message = versioning.push([])
    assert message.startswith(f"pushed to DVC remote 'store' ({dvc_repo / 'store'})") and "1 file pushed" in message
    assert any((dvc_repo / "store").rglob("*"))


def test_an_unreachable_remote_fails_with_the_remote_named_and_what_to_do(dvc_repo):
    (dvc_repo / "blocker").write_text("a file where the remote's directory should be\n")
    subprocess.run(["dvc", "remote", "add", "-d", "gone", str(dvc_repo / "blocker" / "store")], check=True)
    with pytest.raises(RuntimeError, match=r"dvc push to the default remote 'gone' \(.*blocker/store\) failed: .*"
                                           r"run `dvc push` once the remote is reachable"):
        versioning.push([])
