import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty workspace; SYNTHGAP_HOME points at it for subprocesses too."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("SYNTHGAP_HOME", str(ws))
    return ws


def subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


PYTHON = sys.executable
