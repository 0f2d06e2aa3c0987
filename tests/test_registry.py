"""The registry of run kinds is the one room a kind lives in."""

import asyncio
import json
import re
import subprocess

from conftest import PYTHON, REPO, subprocess_env
from runners import kinds
from supervised import wait_for
from synthgap_tui import fieldref
from synthgap_tui.store import RunStore

TOY_SPEC = """
[experiment]
name = "toys"

[runs.first]
kind = "toy"
words = 2
word = "alpha"

[runs.second]
kind = "toy"
after = "first"
word = "beta"
"""


def toy_env(**extra):
    env = subprocess_env(SYNTHGAP_KINDS="toy_kind", **extra)
    env["PYTHONPATH"] = f"{REPO / 'tests'}:{env['PYTHONPATH']}"
    return env


def synthgap(ws, *args, env):
    return subprocess.run([PYTHON, "-m", "synthgap_tui.cli", *args, "-w", str(ws)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_kind_added_through_the_registry_alone_runs_end_to_end(tmp_path, monkeypatch):
    ws, env = tmp_path / "ws", toy_env()
    spec = tmp_path / "toys.toml"
    spec.write_text(TOY_SPEC)

    listed = json.loads(synthgap(ws, "kinds", "--json", env=env).stdout)
    assert listed["toy"]["runner"] == "toy_runner"
    assert listed["toy"]["fields"]["words"]["default"] == 3 and "how many words" in listed["toy"]["fields"]["words"]["help"]

    plan = json.loads(synthgap(ws, "submit", str(spec), "--dry-run", "--json", env=env).stdout)
    assert [(r["name"], r["depends_on"]) for r in plan["runs"]] == [("first", []), ("second", ["first"])]
    bad = tmp_path / "bad.toml"
    bad.write_text(TOY_SPEC.replace("words = 2", "words = 0").replace('word = "beta"', 'word = "b c"'))
    refused = synthgap(ws, "submit", str(bad), env=env)
    assert refused.returncode == 1
    assert "[runs.first] field 'words': is 0; must be >= 1 and <= 100" in refused.stderr  # the field's range
    assert "[runs.second] field 'word': must not contain spaces" in refused.stderr  # the kind's own check

    assert synthgap(ws, "submit", str(spec), env=env).returncode == 0
    store = RunStore(ws)
    wait_for(lambda: {r["state"] for r in store.list()} == {"finished"}, timeout=60, what="both toys finished")
    runs = {r["name"]: r for r in store.list()}
    first_out = ws / "runs" / runs["first"]["id"] / "out.txt"
    second = ws / "runs" / runs["second"]["id"]
    assert json.loads((second / "spec.json").read_text())["after_path"] == str(first_out)  # from the artifact event
    assert (second / "out.txt").read_text() == "alpha alpha beta beta beta"
    assert runs["second"]["summary"]["words"] == 5

    listing = synthgap(ws, "ls", env=env).stdout
    assert re.search(r"second\s+finished\s+-\s+100%\s+toy", listing)
    table = synthgap(ws, "export", "-e", "toys", "--out", str(tmp_path / "out"), env=env).stdout
    assert re.search(r"second\s+5", table) and "Words" in table  # the kind's metric

    # The app: the runs table and the composer's form know the toy kind too.
    monkeypatch.setenv("SYNTHGAP_KINDS", "toy_kind")
    from fakes import FakeNvml
    from synthgap_tui.app import create_app
    from synthgap_tui.gpu import NvmlMonitor
    from synthgap_tui.workspace import Workspace
    from test_tui import wait_until

    async def go():
        app = create_app(Workspace(ws), gpu_monitor=NvmlMonitor(FakeNvml(count=0)), start_supervisor=False)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one("#runs")
            await wait_until(pilot, lambda: table.row_count == 2, what="two runs listed")
            assert "toy" in [str(c) for c in table.get_row(runs["second"]["id"])]
            await pilot.press("c")
            compose = app.screen
            compose.query_one("#compose-editor").load_text(TOY_SPEC)
            await wait_until(pilot, lambda: compose.exp is not None and not compose.problems, what="valid")
            compose.query_one("#compose-runs").focus()
            await wait_until(pilot, lambda: compose.query("#field-words"), what="the form mounted")
            # The form of [runs.first]: its values, the kind's defaults and help.
            assert compose.query_one("#field-words").value == "2"
            assert compose.query_one("#field-after").placeholder == "(not set)"
            assert compose.query_one("#field-word").value == '"alpha"'
            labels = {str(label.render()): label.tooltip for label in compose.query(".form-label")}
            assert labels["words"].startswith("how many words to write")
    asyncio.run(go())


def test_no_kind_branch_outside_the_registry():
    """What a kind means is declared in runners/kinds/, never tested for elsewhere."""
    pattern = re.compile(r"""kind["')\]]*\s*(==|!=|\bin\b)\s*[("']""")
    hits = []
    for path in [*(REPO / "synthgap_tui").rglob("*.py"), *(REPO / "runners").rglob("*.py")]:
        if "kinds" in path.relative_to(REPO).parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "e[\"type\"]" not in line:
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_runner_choices_are_the_registry_s():
    """Runners map the registry's names to what they run; nothing is copied by hand."""
    code = ("from runners import generate, augment; from runners.kinds import generate as g, train as t; "
            "print(sorted(generate.SCHEDULERS) == sorted(set(g.SCHEDULERS) - {'default'}), "
            "augment.PRESETS == t.AUGMENTS)")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True)
    assert out.stdout.split() == ["True", "True"]


def test_readme_field_reference_is_the_registry_s():
    text = (REPO / "README.md").read_text()
    section = fieldref.readme_section(text)
    assert section is not None, "README lost its field reference section"
    assert section == fieldref.markdown(), "README's field reference is stale: python -m synthgap_tui.fieldref --write"
    for name, kind in kinds.all_kinds().items():  # the code map names each kind's two files
        assert f"runners/kinds/{kind.runner.split('.')[-1]}.py" in text and f"{kind.runner.replace('.', '/')}.py" in text

