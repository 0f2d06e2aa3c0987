import json
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, subprocess_env
from synthgap_tui.cli import main
from synthgap_tui.doctor import run_checks
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace, resolve_workspace


def run_cli(*args, ws=None, env=None):
    cmd = [PYTHON, "-m", "synthgap_tui.cli"] + (["-w", str(ws)] if ws else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(**(env or {})))


def test_workspace_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHGAP_HOME", str(tmp_path / "env"))
    assert resolve_workspace(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_workspace() == tmp_path / "env"
    monkeypatch.delenv("SYNTHGAP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_workspace() == tmp_path / "home" / ".synthgap"


def test_ls_json_filters_and_show(tmp_path, capsys):
    ws = tmp_path / "ws"
    store = RunStore(ws)
    a = store.create({"name": "gen", "kind": "generate", "state": "finished"})
    store.create({"name": "train", "kind": "train", "state": "queued"})
    out = run_cli("ls", "--json", "--kind", "generate", ws=ws)
    assert out.returncode == 0
    assert [r["id"] for r in json.loads(out.stdout)] == [a]
    assert json.loads(run_cli("ls", "--json", "--status", "queued", ws=ws).stdout)[0]["name"] == "train"
    human = run_cli("ls", ws=ws)
    assert "gen" in human.stdout and "train" in human.stdout
    shown = json.loads(run_cli("show", "gen", "--json", ws=ws).stdout)
    assert shown["record"]["id"] == a and shown["paths"]["run_dir"].endswith(a)
    missing = run_cli("show", "nope", ws=ws)
    assert missing.returncode == 1 and "No run matches" in missing.stderr


def test_a_missing_workspace_is_an_error_and_only_writers_create_one(tmp_path):
    out = run_cli("ls", "--json", env={"SYNTHGAP_HOME": tmp_path / "h"})
    assert out.returncode == 1 and "no workspace at" in json.loads(out.stdout)["error"]
    assert not (tmp_path / "h").exists()  # a mistyped path is not created
    spec = tmp_path / "s.toml"
    spec.write_text('[experiment]\nname = "x"\n[runs.g]\nkind = "generate"\nmodel = "org/model"\n')
    made = run_cli("submit", str(spec), env={"SYNTHGAP_HOME": tmp_path / "h", "PATH": "/usr/bin:/bin"})
    assert f"created the workspace {tmp_path / 'h'}" in made.stderr and (tmp_path / "h" / "runs").is_dir()
    assert json.loads(run_cli("ls", "--json", env={"SYNTHGAP_HOME": tmp_path / "h"}).stdout)[0]["name"] == "g"
    nothing = run_cli("ls", "--status", "failed", env={"SYNTHGAP_HOME": tmp_path / "h"})
    assert nothing.returncode == 0 and "No run matches --state failed." in nothing.stdout


def test_exit_codes_json_errors_version_and_escaped_text(tmp_path):
    ws = tmp_path / "ws"
    RunStore(ws).create({"name": "a", "kind": "train", "state": "finished"})
    missing = run_cli("show", "nope", "--json", ws=ws)
    assert missing.returncode == 1 and "No run matches" in json.loads(missing.stdout)["error"]
    assert run_cli("frobnicate", ws=ws).returncode == 2  # usage
    assert run_cli("ls", "--status", "nonsense", ws=ws).returncode == 2
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("synthgap ")
    out = run_cli("presets", "mtg-baselines", "--out", str(tmp_path / "p.toml"), ws=ws)
    assert "edit its [datasets] paths" in out.stdout  # not swallowed as rich markup


class BrokenNvml:
    def nvmlInit(self):
        raise RuntimeError("Driver Not Loaded")


def test_doctor_reports_each_check_without_traceback(tmp_path):
    checks = list(run_checks(Workspace(tmp_path), monitor=__import__(
        "synthgap_tui.gpu", fromlist=["NvmlMonitor"]).NvmlMonitor(BrokenNvml())))
    names = [c.name for c in checks]
    assert names == ["python", "torch", "torchvision", "diffusers", "transformers", "trackers", "nvml", "disk", "index"]
    nvml = checks[names.index("nvml")]
    assert nvml.level == "WARN" and "Driver Not Loaded" in nvml.message
    out = run_cli("doctor", ws=tmp_path)
    assert "Traceback" not in out.stderr + out.stdout
    assert "torch" in out.stdout and "disk" in out.stdout


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    (tmp_path / "runs.json").write_text("{")
    assert main(["-w", str(tmp_path), "ls"]) == 1
    assert "db rebuild" in capsys.readouterr().err


def test_export_writes_tables_and_figures(tmp_path):
    from tui_fixtures import build_workspace

    ws = build_workspace(tmp_path / "ws")
    out = tmp_path / "out"
    res = run_cli("export", "--experiment", "layer-freeze", "--out", str(out), "--json", ws=ws.root)
    assert res.returncode == 0, res.stderr
    written = {p.split("/")[-1] for p in json.loads(res.stdout)}
    assert {"results.csv", "results.md", "epochs.csv", "curves.png", "curves.svg", "sweep.png", "sweep.svg"} <= written
    md = (out / "results.md").read_text()
    assert "| real-only | 0000000006 | 86.5 ± 1.5 |" in md and "freeze@freeze_layers=17" in md
    assert run_cli("export", ws=ws.root).returncode == 1


def test_ls_and_show_as_people_read_them(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    store = RunStore(ws)
    long_name = "synth-to-real@freeze_layers=16,fraction=0.125"
    ids = [store.create({"name": long_name, "kind": "train", "state": "finished", "experiment": "mind-the-gap"}),
           store.create({"name": "gen-sd14", "kind": "generate", "state": "queued", "experiment": "mind-the-gap"})]
    # -w after the command, as people type it; in a pipe: plain text, nothing cut.
    piped = run_cli("ls", "-w", str(ws))
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert lines[0].split()[:4] == ["#", "id", "name", "state"]  # ids short, as git's
    assert lines[1].split()[:3] == ["1", ids[0][:6], long_name] and ids[1][:6] in piped.stdout
    assert "\x1b[" not in piped.stdout and "…" not in piped.stdout
    # On an 80-column terminal the ids and names stay whole too.
    from rich.console import Console

    from synthgap_tui.cli import common

    console = Console(width=80, force_terminal=True, record=True)
    monkeypatch.setattr(common, "console", lambda stderr=False: console)
    monkeypatch.setattr(common.sys.stdout, "isatty", lambda: True)
    assert main(["ls", "-w", str(ws)]) == 0
    text = console.export_text()
    assert ids[0][:6] in text and long_name in text and ids[1][:6] in text
    shown = run_cli("show", "gen-sd14", "--all", "--workspace", str(ws))
    assert shown.returncode == 0
    assert 'name = "gen-sd14"' in shown.stdout and "True" not in shown.stdout and "'" not in shown.stdout


def test_diff_prints_the_fields_two_runs_differ_in_and_show_has_provenance(tmp_path):
    from runners import protocol

    ws = tmp_path / "ws"
    store = RunStore(ws)
    ids = [store.create({"name": n, "kind": "train", "state": "finished"}) for n in ("a", "b")]
    for run_id, (name, lr, seed, torch_version) in zip(ids, [("a", 0.1, 0, "2.14.1"), ("b", 0.2, 0, "2.14.0")]):
        spec = {"id": run_id, "name": name, "kind": "train", "created": 1.0 + len(name), "lr": lr, "seed": seed,
                "train_dir": "/data/train"}
        (ws / "runs" / run_id).mkdir(parents=True)
        protocol.write_json_atomic(ws / "runs" / run_id / "spec.json", spec)
        protocol.write_json_atomic(ws / "runs" / run_id / "provenance.json",
                                   {"python": "3.11.7", "libraries": {"torch": torch_version}, "seed": seed,
                                    "command": ["python", "-m", "runners.train", "--run-dir", run_id], "spec": spec})
    out = run_cli("diff", "a", "b", "--json", ws=ws)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["differences"] == {"provenance.libraries.torch": ["2.14.1", "2.14.0"],
                                                     "spec.lr": [0.1, 0.2], "spec.name": ["a", "b"]}
    text = run_cli("diff", "a", "b", ws=ws).stdout
    assert "spec.lr" in text and "0.2" in text and "spec.train_dir" not in text
    shown = run_cli("show", "a", "--json", ws=ws)
    assert json.loads(shown.stdout)["provenance"]["libraries"]["torch"] == "2.14.1"
    assert 'libraries.torch = "2.14.1"' in run_cli("show", "a", "--all", ws=ws).stdout


def test_tags_and_notes_survive_a_rebuild_and_reach_ls_and_exports(tmp_path):
    import csv

    from tui_fixtures import build_workspace

    ws = build_workspace(tmp_path / "ws")
    out = run_cli("tag", "real-only", "synth-only", "+baseline", "+sd14", ws=ws.root)
    assert out.returncode == 0 and out.stdout.count("tags: baseline sd14") == 2
    assert run_cli("tag", "synth-only", "-sd14", "nope", ws=ws.root).returncode == 1  # nope: no such run
    assert run_cli("note", "real-only", "the reference [ImageNet-100] run", ws=ws.root).returncode == 0
    tagged = json.loads(run_cli("ls", "--tag", "baseline", "--json", ws=ws.root).stdout)
    assert sorted(r["name"] for r in tagged) == ["real-only", "synth-only"]
    assert json.loads(run_cli("ls", "--tag", "sd14", "--json", ws=ws.root).stdout)[0]["name"] == "real-only"
    assert run_cli("db", "rebuild", ws=ws.root).returncode == 0  # the run folders keep them
    shown = json.loads(run_cli("show", "real-only", "--json", ws=ws.root).stdout)["record"]
    assert shown["tags"] == ["baseline", "sd14"] and shown["note"] == "the reference [ImageNet-100] run"
    assert run_cli("export", "-e", "layer-freeze", "--out", str(tmp_path / "out"), ws=ws.root).returncode == 0
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open())}
    assert rows["real-only"]["tags"] == "baseline sd14" and rows["real-only"]["note"].startswith("the reference")
    assert run_cli("tag", "real-only", ws=ws.root).returncode == 2  # no +tag or -tag: a usage error


def test_the_unmet_promise_presets_curate_both_arms_in_the_dry_run(tmp_path):
    """Every adaptation run trains on a curate run's output, retrieved and synthetic alike."""
    from synthgap_tui.presets import list_presets

    presets = {p.name: p for p in list_presets()}
    for name in ("unmet-promise-scaling", "unmet-promise-perturb"):
        out = run_cli("submit", "--dry-run", "--json", str(presets[name].path), ws=tmp_path / "ws")
        assert out.returncode == 0, out.stderr
        runs = {r["name"]: r for r in json.loads(out.stdout)["runs"]}
        adapt = [r for r in runs.values() if r["name"].startswith("adapt-")]
        assert adapt and all(runs[d]["kind"] in ("curate", "generate") for r in adapt for d in r["depends_on"])
        sources = {d for r in adapt for d in r["depends_on"]}
        upstream = {d for s in sources for d in [s, *runs[s]["depends_on"]]}
        assert any(runs[s]["kind"] == "curate" and "retrieved" in s for s in upstream)
        if name == "unmet-promise-scaling":
            assert {runs[s]["kind"] for s in sources} == {"curate"}
            assert {runs[s]["depends_on"][0].split("-raw-")[0] for s in sources} == {"retrieved", "synthetic"}


def test_ids_of_one_submission_differ_in_their_first_six_characters(tmp_path):
    from synthgap_tui.specs import parse_spec

    ws = Workspace(tmp_path / "ws").ensure()
    store = RunStore(ws)
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    exp = parse_spec(f"""
[experiment]
name = "many"
[datasets]
real = {{ path = "{tmp_path / 'data'}" }}
[runs.r]
kind = "train"
train = "real"
eval = "real"
[runs.r.sweep]
seed = {list(range(50))}
""")
    from synthgap_tui import runs as lifecycle

    ids = lifecycle.submit(exp, store)
    assert len(ids) == 50 and len({i[:6] for i in ids}) == 50
    assert [r["name"] for r in store.list()] == [f"r@seed={s}" for s in range(50)]  # submission order kept
    assert store.resolve(ids[7][:6]) == ids[7]


def test_runs_are_referred_to_as_people_type_them(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    store = RunStore(ws)
    a = store.create({"name": "base", "experiment": "first", "state": "finished"})
    b = store.create({"name": "base", "experiment": "second", "state": "finished"})
    c = store.create({"name": "other", "experiment": "second", "state": "queued"})
    assert store.resolve("@last") == c and store.resolve("@last~2") == a
    assert store.resolve("first/base") == a and store.resolve("second/base") == b
    out = run_cli("show", "base", ws=ws.root)  # two runs of that name: the error says how to pick
    assert out.returncode == 1 and "EXPERIMENT/NAME" in out.stderr
    listed = run_cli("ls", "--sort=-created", ws=ws.root)
    assert listed.returncode == 0
    assert store.resolve("1") == c and store.resolve("3") == a  # the rows `ls` printed
    for ref, run_id in (("@last", c), ("second/base", b), ("2", b), (a[:6], a)):
        shown = run_cli("show", ref, "--json", ws=ws.root)
        assert shown.returncode == 0 and json.loads(shown.stdout)["record"]["id"] == run_id, (ref, shown.stderr)


def test_ls_fits_80_columns_without_splitting_a_word_and_takes_options(tmp_path):
    from tui_fixtures import build_workspace

    ws = build_workspace(tmp_path / "ws")
    store = RunStore(ws)
    store.update(store.list()[0]["id"], name="a-rather-long-run-name-for-a-sweep-member[freeze_layers=4,seed=0,"
                                             "lr=0.1,augment=dino,mixup=0.2]",
                 experiment="an experiment with a long name")
    out = run_cli("ls", ws=ws.root, env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    header = lines[0].split()
    assert header[:4] == ["#", "id", "name", "state"] and "experiment" not in header  # dropped by priority
    words = {w for r in store.list() for w in (r["state"], r.get("kind", ""))}
    for line in lines[1:-1]:
        assert line.split()[3] in words  # each row whole: no state or kind broken over two lines
    assert "…" in out.stdout  # the long name shortened, not wrapped
    wide = run_cli("ls", ws=ws.root, env={"COLUMNS": "200"})
    assert "experiment" in wide.stdout.splitlines()[0]
    quiet = run_cli("ls", "-q", "-n", "3", ws=ws.root)
    assert quiet.stdout.split() == [r["id"] for r in store.list()][-3:]
    top = run_cli("ls", "--sort=-top1", "--columns", "name,top1", "-n", "1", ws=ws.root)
    assert top.stdout.splitlines()[1].split()[0] == "real-only"  # the best top-1 first
    bad = run_cli("ls", "--columns", "name,colour", ws=ws.root)
    assert bad.returncode == 2 and "unknown column(s) colour" in bad.stderr


def test_show_is_short_in_local_time_with_the_values_the_run_used(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    store = RunStore(ws)
    run_id = store.create({"name": "adapt", "kind": "train", "state": "finished", "started": 1_796_000_000.0,
                           "ended": 1_796_000_960.0, "summary": {"top1_mean": 61.25, "top1_std": 0.5, "last_n": 5}})
    d = ws.run_dir(run_id)
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps({"id": run_id, "name": "adapt", "kind": "train",
                                             "recipe": "unmet-promise", "lr": 3e-5}))
    out = run_cli("show", "@last", ws=ws.root)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert len(text.splitlines()) < 40 and "1796000000" not in text  # no unix time
    from datetime import datetime

    assert datetime.fromtimestamp(1_796_000_000).strftime("%Y-%m-%d %H:%M:%S") in text and "(16m00s)" in text
    assert "lr = 3e-05" in text and "betas = [0.9, 0.95]" in text  # what the recipe set, not only the spec
    assert "momentum" not in text  # a default it did not change
    assert "Top-1 Acc. (%): 61.2 ± 0.5 (last 5 epochs)" in text
    full = run_cli("show", run_id, "--all", ws=ws.root)
    assert "[provenance]" in full.stdout or "[spec]" in full.stdout


def test_diff_compares_the_values_used_and_usage_errors_exit_2(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    store = RunStore(ws)
    ids = []
    for name, spec in (("fitymi", {}), ("plain", {"recipe": "plain"})):
        run_id = store.create({"name": name, "kind": "train", "state": "finished"})
        ws.run_dir(run_id).mkdir(parents=True)
        (ws.run_dir(run_id) / "spec.json").write_text(json.dumps({"id": run_id, "name": name, "kind": "train", **spec}))
        ids.append(run_id)
    out = run_cli("diff", *ids, "--json", ws=ws.root)
    differences = json.loads(out.stdout)["differences"]
    assert differences["spec.epochs"] == [100, 90] and differences["spec.tau"] == [0.1, 0.0]  # the recipes' values
    one = run_cli("diff", ids[0], ws=ws.root)
    assert one.returncode == 2 and "give two or more" in one.stderr
    no_change = run_cli("tag", ids[0], "--json", ws=ws.root)
    assert no_change.returncode == 2 and "error" in json.loads(no_change.stdout)
    unknown = run_cli("ls", "--bogus", "--json", ws=ws.root)  # argparse's own usage errors too
    assert unknown.returncode == 2 and "unrecognized arguments: --bogus" in json.loads(unknown.stdout)["error"]
    store.update(ids[0], note="first line\nsecond")
    note = run_cli("note", ids[0], ws=ws.root)  # not a terminal: print it, open nothing
    assert note.returncode == 0 and note.stdout == "first line\nsecond\n"
    assert json.loads(run_cli("note", ids[0], "--json", ws=ws.root).stdout)["note"] == "first line\nsecond"


def one_run_spec(tmp_path, monkeypatch, run: str = "[runs.a]") -> Path:
    """A spec of one train run on an empty dataset, submitted with no supervisor started."""
    import synthgap_tui.supervisor

    monkeypatch.setattr(synthgap_tui.supervisor, "ensure_supervisor", lambda ws: False)
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    spec = tmp_path / "exp.toml"
    spec.write_text(f'[experiment]\nname = "study"\n[datasets]\nreal = "{tmp_path / "data"}"\n'
                    f'{run}\nkind = "train"\ntrain = "real"\neval = "real"\n')
    return spec


def test_submitting_an_existing_experiment_numbers_it_or_takes_as(tmp_path, monkeypatch, capsys):
    spec = one_run_spec(tmp_path, monkeypatch)
    ws = tmp_path / "ws"
    assert main(["submit", str(spec), "-w", str(ws), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experiment"] == "study"
    assert main(["submit", str(spec), "-w", str(ws)]) == 0
    assert "'study' has runs already: these are study-2" in capsys.readouterr().out
    assert main(["submit", str(spec), "-w", str(ws), "--as", "ablation"]) == 0
    assert main(["submit", str(spec), "-w", str(ws), "--as", "ablation"]) == 1
    assert "--as takes a new name" in capsys.readouterr().err
    assert sorted(r["experiment"] for r in RunStore(ws).list()) == ["ablation", "study", "study-2"]


def test_doctor_says_when_the_trackers_extra_is_missing(tmp_path, monkeypatch):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find(name, *a))
    checks = {c.name: c for c in run_checks(Workspace(tmp_path / "ws"))}
    assert checks["trackers"].level == "WARN" and "synthgap[trackers]" in checks["trackers"].message


def test_every_command_and_argument_has_help_and_completion_installs_in_four_shells():
    import argparse

    from synthgap_tui.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(path + [name])
                    walk(sub, path + [name])
            elif not action.help:
                missing.append(path + [action.dest])

    walk(build_parser(), [])
    assert missing == []
    for shell in ("bash", "zsh", "fish", "tcsh"):
        out = run_cli("completion", shell)
        assert out.returncode == 0 and f"# install: synthgap completion {shell} > " in out.stdout
    fish = run_cli("completion", "fish").stdout
    assert "-n __fish_use_subcommand -a show -d" in fish
    assert "'__fish_seen_subcommand_from show' -a '(synthgap completion --words runs 2>/dev/null)'" in fish


def test_slow_commands_show_a_spinner_at_a_terminal_and_nothing_in_a_pipe(tmp_path):
    import shutil

    from tui_fixtures import build_workspace

    ws = build_workspace(tmp_path / "ws")
    piped = run_cli("db", "rebuild", ws=ws.root)
    assert piped.returncode == 0 and "Rebuilding" not in piped.stdout + piped.stderr
    if not shutil.which("script"):
        pytest.skip("util-linux's script (a pseudo-terminal) is not installed")
    at_terminal = subprocess.run(["script", "-qec", f"{PYTHON} -m synthgap_tui.cli -w {ws.root} db rebuild",
                                  "/dev/null"], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert at_terminal.returncode == 0 and "Rebuilding" in at_terminal.stdout and "Rebuilt" in at_terminal.stdout


def test_a_dry_run_says_when_training_and_evaluation_classes_disagree(tmp_path):
    for split, classes in (("train", ["cat", "dog"]), ("val", ["cat", "fox"])):
        for c in classes:
            (tmp_path / "data" / split / c).mkdir(parents=True)
    spec = tmp_path / "exp.toml"
    spec.write_text(f'[experiment]\nname = "e"\n[datasets]\nreal = "{tmp_path / "data"}"\n'
                    '[runs.a]\nkind = "train"\ntrain = "real"\neval = "real"\n')
    out = run_cli("submit", "--dry-run", "--json", str(spec), ws=tmp_path / "ws")
    warnings = json.loads(out.stdout)["warnings"]
    assert any("class folders of" in w and "only in training: dog" in w and "only in evaluation: fox" in w
               for w in warnings), warnings


def test_set_overrides_a_spec_at_submit_and_a_field_at_retry(tmp_path, monkeypatch, capsys):
    spec = one_run_spec(tmp_path, monkeypatch, "[runs.base]  # the reference")
    ws = tmp_path / "ws"
    assert main(["submit", str(spec), "-w", str(ws), "--set", "runs.base.lr=0.05", "--set", "defaults.epochs=10",
                 "--set", "runs.base.augment=pytorch-example", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["runs"][0]
    store = RunStore(ws)
    used = json.loads((store.workspace.run_dir(run_id) / "spec.json").read_text())
    assert (used["lr"], used["epochs"], used["augment"]) == (0.05, 10, "pytorch-example")
    kept = Path(used["spec_file"]).read_text()
    assert "lr = 0.05" in kept and "epochs = 10" in kept and "# the reference" in kept  # comments survive
    assert main(["submit", str(spec), "-w", str(ws), "--set", "runs.base.lr"]) == 1
    assert "write PATH=VALUE" in capsys.readouterr().err

    store.update(run_id, state="finished")
    assert main(["retry", run_id, "-w", str(ws), "--set", "lr=0.01", "--set", "mixup=0.2"]) == 0
    used = json.loads((store.workspace.run_dir(run_id) / "spec.json").read_text())
    assert used["lr"] == 0.01 and used["retried_with"] == {"lr": [0.05, 0.01], "mixup": [None, 0.2]}
    assert store.get(run_id)["retried_with"]["lr"] == [0.05, 0.01] and store.get(run_id)["state"] == "queued"
    store.update(run_id, state="finished")
    capsys.readouterr()
    assert main(["retry", run_id, "-w", str(ws), "--set", "lrr=1"]) == 1
    assert "lrr: is not a field of a train run" in capsys.readouterr().err
    assert store.get(run_id)["state"] == "finished" and store.get(run_id)["attempt"] == 2  # nothing moved


def test_retry_failed_requeues_only_the_failed_runs_of_an_experiment(tmp_path, capsys, monkeypatch):
    from tui_fixtures import build_workspace

    monkeypatch.setattr("synthgap_tui.supervisor.ensure_supervisor", lambda ws: None)
    ws = build_workspace(tmp_path / "ws")
    store = RunStore(ws)
    other = next(r["id"] for r in store.list() if r["name"] == "synth-only")
    store.update(other, state="failed")  # failed, but in another experiment
    failed = [r["id"] for r in store.list(experiment="data reduction", state="failed")]
    assert len(failed) == 1
    assert main(["retry", "--failed", "data reduction", "-w", str(ws.root), "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == failed
    assert store.get(failed[0])["state"] == "queued" and store.get(other)["state"] == "failed"
    assert main(["retry", "--failed", "data reduction", "-w", str(ws.root)]) == 1  # none left
    assert "has no failed runs" in capsys.readouterr().err
    assert main(["retry", "--failed", "nope", "-w", str(ws.root)]) == 1
    assert "no such experiment" in capsys.readouterr().err
    assert main(["retry", "-w", str(ws.root)]) == 2
    assert "--failed EXPERIMENT" in capsys.readouterr().err


def test_gc_removes_job_array_folders_only_when_all_their_runs_are_gone(tmp_path):
    from runners import protocol

    ws = tmp_path / "ws"
    store = RunStore(ws)
    kept, gone = store.create({"name": "kept", "state": "finished"}), store.create({"name": "gone"})
    store.delete_many([gone])
    for key, members in (("live", [kept, gone]), ("dead", [gone])):
        (ws / "slurm-arrays" / key).mkdir(parents=True)
        protocol.write_json_atomic(ws / "slurm-arrays" / key / "members.json", members)
        (ws / "slurm-arrays" / key / "1_0_0_log.out").write_text("task output\n")
    out = run_cli("gc", "--yes", "--json", ws=ws)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["slurm_arrays"] == [str(ws / "slurm-arrays" / "dead")]
    assert not (ws / "slurm-arrays" / "dead").exists() and (ws / "slurm-arrays" / "live" / "1_0_0_log.out").exists()
