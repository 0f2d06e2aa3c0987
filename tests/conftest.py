import os
import sys
from pathlib import Path

# Tiny models: one thread is faster than two (no barrier waits between
# microsecond-sized ops) and keeps runs comparable; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Runners must use diffusers' current keywords: runner subprocesses inherit this, and
# pyproject's filterwarnings says the same for the tests' own process.
DEPRECATED = "error:`torch_dtype` is deprecated:FutureWarning"
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), DEPRECATED]))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty workspace; SYNTHGAP_HOME points at it for subprocesses too."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("SYNTHGAP_HOME", str(ws))
    return ws


def subprocess_env(**extra):
    env = dict(os.environ)
    for key in ("COLUMNS", "LINES"):  # a CLI test sees a pipe unless it sets a width (xdist workers set one)
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


PYTHON = sys.executable
