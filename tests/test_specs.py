import pytest

from synthgap_tui.errors import SpecError
from synthgap_tui.specs import parse_spec

HEAD = '[experiment]\nname = "e"\n[datasets]\nreal = { path = "/data/real" }\nsynth = "/data/synth"\n'
OK_TRAIN = '[runs.base]\nkind = "train"\ntrain = "real"\neval = "real"\n'


def expand(body: str, head: str = HEAD):
    return parse_spec(head + body, source="spec.toml")


MALFORMED = [
    # (spec body, text the message must contain)
    ("[runs.a]\nkind = 'train'\ninit_from = 'x.pt'\nfreeze_layers = 4\ntrain = 'real'\neval = 'real'\n"
     "arch = 'timm:vit_tiny_patch16_224'\ntau = 0.0",
     "[runs.a] field 'freeze_layers': needs the paper's layer numbering, defined for resnet18, resnet34, resnet50; "
     "timm:vit_tiny_patch16_224 has none"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\narch = 'torchvision:vit_b_16'",
     "[runs.a] field 'tau': the cosine classifier (tau > 0) is built for resnet18"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\narch = 'vgg16'",
     "[runs.a] field 'arch': is 'vgg16'; allowed: resnet18, resnet34, resnet50, 'torchvision:NAME', 'timm:NAME' or 'clip:NAME'"),
    ("[runs.g]\nkind = 'generate'\ngpus = 2", "[runs.g] field 'gpus': is 2; a generate run uses one GPU: split "
     "the images over several runs with shard"),
    ("[runs.g]\nkind = 'generate'\nscheduler = 'fast'", "[runs.g] field 'scheduler': is 'fast'; allowed: "
     "'default', 'ddim', 'dpm-solver++', 'euler' or a diffusers scheduler class name"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nepochs = 'ten'",
     "spec.toml:10: [runs.a] field 'epochs': must be an integer, not str 'ten'"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nepoch = 10",
     "[runs.a] field 'epoch': is not a field of a train run (did you mean 'epochs'?)"),
    ("[runs.a]\nkind = 'trian'", "[runs.a] field 'kind': is 'trian' (did you mean 'train'?); allowed: 'curate', 'generate', 'retrieve', 'style-inversion', 'stylize', 'train'"),
    ("[runs.a]\ntrain = 'real'", "[runs.a] field 'kind': is missing"),
    (OK_TRAIN + "[runs.f]\nkind = 'train'\ninit_from = 'base'\ntrain = 'real'\neval = 'real'\nfreeze_layers = 18",
     "[runs.f] field 'freeze_layers': is 18; a resnet50 has 18 layers, so 0..17"),
    (OK_TRAIN + "[runs.f]\nkind = 'train'\narch = 'resnet18'\ninit_from = 'base'\ntrain = 'real'\n"
     "eval = 'real'\nfreeze_layers = 10", "a resnet18 has 10 layers, so 0..9"),
    ("[runs.f]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nfreeze_layers = 3",
     "[runs.f] field 'freeze_layers': needs init_from"),
    ("[runs.f]\nkind = 'train'\ninit_from = 'nope'\ntrain = 'real'\neval = 'real'",
     "[runs.f] field 'init_from': names 'nope', which is neither a dataset nor a run of this spec"),
    ("[runs.a]\nkind = 'train'\ntrain = 'imagenet'\neval = 'real'",
     "[runs.a] field 'train': names 'imagenet', which is neither a dataset nor a run"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nfraction = 1.5",
     "[runs.a] field 'fraction': is 1.5; must be > 0 and <= 1"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nfraction = 0",
     "field 'fraction': is 0.0; must be > 0"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'", "[runs.a]: needs eval"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\nmix = [{data = 'synth'}]\neval = 'real'",
     "needs exactly one of train, mix or stages (has train, mix)"),
    ("[runs.a]\nkind = 'train'\ninit_from = 'b'\ntrain = 'real'\neval = 'real'\n"
     "[runs.b]\nkind = 'train'\ninit_from = 'a'\ntrain = 'real'\neval = 'real'",
     "dependency cycle: a -> b -> a"),
    # A reference must name a run that produces what the field needs (the registry's artifacts).
    ("[runs.a]\nkind = 'train'\ntrain = 'b'\neval = 'real'\n[runs.b]\nkind = 'train'\ntrain = 'real'\neval = 'real'",
     "[runs.a] field 'train': names run 'b', a train run, which produces model; allowed here: a dataset"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\n[runs.a.sweep]\nfreeze_layers = []",
     "[runs.a].sweep field 'freeze_layers': must be a non-empty list"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\naugment = 'randaugment'",
     "field 'augment': is 'randaugment'; allowed: 'none', 'pytorch-example'"),
    ("[runs.g]\nkind = 'generate'\nguidance_scale = -1.0", "[runs.g] field 'guidance_scale': is -1.0; must be >= 0"),
    ("[runs.g]\nkind = 'generate'\nshard = '2/2'", "[runs.g] field 'shard': must look like 'i/n'"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\ndepends_on = ['ghost']",
     "[runs.a] field 'depends_on': names 'ghost', which is not a run of this spec"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nsmall_input = 1",
     "field 'small_input': must be true or false, not int 1"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\namp = 'yes'\n[runs.'bad name']\nkind = 'train'",
     "[runs.bad name]: run names use letters, digits"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\naugment = 'pixmix'",
     "'pixmix' needs pixmix_dir"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nslurm = { partiton = 'gpu' }",
     "[runs.a] field 'slurm': has unknown option(s) partiton; known: partition"),
    ("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\nnodes = 0", "field 'nodes': is 0; must be >= 1"),
    ("", "[runs]: needs at least one [runs.NAME] table"),
    ("[runs.a\nkind = 'train'", "spec.toml: not valid TOML"),
]


@pytest.mark.parametrize("body, expected", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_spec_gives_clear_message(body, expected):
    with pytest.raises(SpecError) as err:
        expand(body)
    assert expected in str(err.value)


def test_the_launcher_table_of_config_toml_is_checked_like_a_spec_s(tmp_path):
    from synthgap_tui.supervisor import Config
    from synthgap_tui.workspace import Workspace

    ws = Workspace(tmp_path).ensure()
    ws.config_path.write_text('[supervisor]\nlauncher = "slurm"\n[slurm]\npartition = "gpu"\ntime = "1:00:00"\n')
    assert Config.load(ws).launcher_options == {"partition": "gpu", "time": "1:00:00"}
    ws.config_path.write_text('[supervisor]\nlauncher = "slurm"\n[slurm]\nqueue = "gpu"\n')
    with pytest.raises(SystemExit, match=r"\[slurm\] has unknown option\(s\) queue"):
        Config.load(ws)


def test_missing_experiment_name_and_unknown_tables():
    with pytest.raises(SpecError) as err:
        parse_spec("[experimnt]\nname='x'\n" + OK_TRAIN, source="s.toml")
    assert "unknown table(s) ['experimnt']" in str(err.value)
    assert "[experiment]: needs name" in str(err.value)


def test_sweep_expands_and_dependencies_order_runs():
    exp = expand(
        "[runs.pre]\nkind = 'train'\ntrain = 'real'\neval = 'real'\n"
        "[runs.freeze]\nkind = 'train'\ninit_from = 'pre'\ntrain = 'synth'\neval = 'real'\n"
        "[runs.freeze.sweep]\nfreeze_layers = [1, 2, 17]\nseed = [0, 1]\n"
        "[runs.gen]\nkind = 'generate'\nguidance_scale = 2\n"
        "[runs.syn]\nkind = 'train'\ntrain = 'gen'\neval = 'real'\n")
    names = [r.name for r in exp.runs]
    assert len(names) == 1 + 6 + 2
    assert "freeze@freeze_layers=17,seed=1" in names
    assert names.index("pre") < names.index("freeze@freeze_layers=1,seed=0")
    assert names.index("gen") < names.index("syn")
    run = exp.run("freeze@freeze_layers=2,seed=1")
    assert run.params["freeze_layers"] == 2 and run.deps == ["pre"]
    assert run.refs["train"] == ("dataset", "synth") and run.refs["init_from"] == ("run", "pre")
    assert exp.run("gen").params["guidance_scale"] == 2


def test_an_explicit_depends_on_becomes_run_ids_in_spec_json(tmp_path):
    from synthgap_tui.runs import plan
    from synthgap_tui.workspace import Workspace

    exp = expand("[runs.a]\nkind = 'train'\ntrain = 'real'\neval = 'real'\n"
                 "[runs.b]\nkind = 'train'\ntrain = 'real'\neval = 'real'\ndepends_on = ['a']\n")
    specs, _ = plan(exp, Workspace(tmp_path))
    assert specs["b"]["depends_on"] == [specs["a"]["id"]]


def test_swept_dependency_matches_by_shared_sweep_values():
    exp = expand(
        "[runs.pre]\nkind = 'train'\ntrain = 'synth'\neval = 'real'\n[runs.pre.sweep]\nseed = [0, 1]\n"
        "[runs.ft]\nkind = 'train'\ninit_from = 'pre'\nfreeze_layers = 16\ntrain = 'real'\neval = 'real'\n"
        "[runs.ft.sweep]\nseed = [0, 1]\n")
    assert exp.run("ft@seed=1").deps == ["pre@seed=1"]
    with pytest.raises(SpecError, match=r"\[runs.ft@seed=2\].*a sweep of 2 runs, and none"):  # no pre@seed=2
        expand("[runs.pre]\nkind = 'train'\ntrain = 'synth'\neval = 'real'\n[runs.pre.sweep]\nseed = [0, 1]\n"
               "[runs.ft]\nkind = 'train'\ninit_from = 'pre'\ntrain = 'real'\neval = 'real'\n"
               "[runs.ft.sweep]\nseed = [0, 1, 2]\n")


def test_a_run_naming_a_sweep_it_does_not_share_runs_once_per_member():
    """The guidance ablation: one training run per guidance scale, and what builds on those follows."""
    exp = expand("[runs.gen]\nkind = 'generate'\n[runs.gen.sweep]\nguidance_scale = [1.0, 2.0, 4.0]\n"
                 "[runs.student]\nkind = 'train'\ntrain = 'gen'\neval = 'real'\n[runs.student.sweep]\nseed = [0, 1]\n"
                 "[runs.probe]\nkind = 'train'\ninit_from = 'student'\nfreeze_layers = 17\ntrain = 'real'\n"
                 "eval = 'real'\n")
    names = [r.name for r in exp.runs]
    assert "student@seed=1,guidance_scale=4.0" in names and len([n for n in names if n.startswith("student")]) == 6
    run = exp.run("student@seed=0,guidance_scale=2.0")
    assert run.deps == ["gen@guidance_scale=2.0"] and run.sweep_values == {"seed": 0, "guidance_scale": 2.0}
    assert "guidance_scale" not in run.params  # a train run has no such field; it is how the run is named
    probe = exp.run("probe@seed=0,guidance_scale=2.0")
    assert probe.deps == ["student@seed=0,guidance_scale=2.0"] and len([n for n in names if n.startswith("probe")]) == 6


def test_defaults_apply_where_the_field_exists():
    exp = expand("[defaults]\nepochs = 7\nsteps = 20\n" + OK_TRAIN + "[runs.g]\nkind = 'generate'\n")
    assert exp.run("base").params["epochs"] == 7 and "steps" not in exp.run("base").params
    assert exp.run("g").params["steps"] == 20
    with pytest.raises(SpecError, match=r"\[defaults\] field 'epoks'"):
        expand("[defaults]\nepoks = 7\n" + OK_TRAIN)


def test_every_preset_expands_and_dry_run_warns_about_placeholder_folders(tmp_path):
    from synthgap_tui import runs
    from synthgap_tui.presets import list_presets
    from synthgap_tui.specs import load_spec
    from synthgap_tui.store import RunStore
    from synthgap_tui.workspace import Workspace

    presets = {p.name: p for p in list_presets()}
    assert {"mtg-baselines", "mtg-freeze-real-to-synth", "mtg-freeze-synth-to-real", "mtg-data-reduction",
            "mtg-normalization", "mtg-augmentation", "mtg-unclip", "mtg-stylized", "bridged-transfer",
            "generation", "dsi", "unmet-promise-scaling", "unmet-promise-perturb"} <= set(presets)
    ws = Workspace(tmp_path)
    for preset in presets.values():
        exp = load_spec(preset.path)
        specs, missing = runs.plan(exp, ws)
        assert missing, preset.name  # placeholders like /data/imagenet100 are reported
        with pytest.raises(SpecError, match="does not exist"):
            runs.submit(exp, RunStore(ws))
    assert RunStore(ws).list() == []  # a refused submit records nothing
    freeze = load_spec(presets["mtg-freeze-real-to-synth"].path)
    assert sorted(r.params["freeze_layers"] for r in freeze.runs if r.base == "freeze") == list(range(1, 18))
    reduction = load_spec(presets["mtg-data-reduction"].path)
    assert {r.params.get("fraction") for r in reduction.runs if r.base == "reduced"} == \
        {1.0, 0.5, 0.25, 0.125, 0.0625}
    # Swept synthetic sets feed one student each: the guidance ablation, the gamma sweep, the volume study.
    generation = load_spec(presets["generation"].path)
    assert {r.sweep_values["guidance_scale"]: r.deps for r in generation.runs if r.base == "student-guidance"} == \
        {g: [f"guidance@guidance_scale={g}"] for g in (1.0, 2.0, 3.0, 5.0, 7.5)}
    assert len([r for r in generation.runs if r.base == "student-img2img"]) == 4
    bridged = load_spec(presets["bridged-transfer"].path)
    assert sorted(r.sweep_values["images_per_class"] for r in bridged.runs if r.base == "bridged-aircraft-volume") \
        == [100, 500, 1000, 2000, 3000]
    assert {r.params["recipe"] for r in bridged.runs if r.kind == "train"} == {"finetune"}
    assert {r.base for r in bridged.runs if r.kind == "train"} >= {"vanilla-aircraft", "vanilla-cars"}
    mixed = next(r for r in bridged.runs if r.name == "mixed-aircraft")  # the paper's naive mixing: the union
    assert mixed.params.get("mix_sampling", "union") == "union" and all("weight" not in m for m in mixed.params["mix"])
    # Table 3: each stylized set is made from its unstylized one and feeds one student.
    stylized = {r.name: r for r in load_spec(presets["mtg-stylized"].path).runs}
    assert stylized["stylized-synth-data"].deps == ["gen-sd14"] and stylized["stylized-real-data"].deps == []
    assert stylized["stylized-synth"].deps == ["stylized-synth-data"]
    assert stylized["stylized-real-data"].params["alpha"] == 1.0
    assert {"vgg", "decoder", "styles"} <= set(stylized["stylized-real-data"].params)
    assert "vgg" not in stylized["real-only"].params  # [defaults] apply to the kinds that have the field
    dsi = {r.name: r for r in load_spec(presets["dsi"].path).runs}
    assert dsi["gen-dsi"].deps == ["style"] and dsi["gen-dsi"].refs["style_from"] == ("run", "style")
    assert "style_from" not in dsi["gen-template"].params
    assert len([r for r in dsi.values() if r.base == "bridged-dsi-volume"]) == 5  # 100 ... 3,000 per class
    # The Unmet Promise, Fig. 2: five targets; retrieved vs synthetic, both curated alike, at several sizes
    # (the synthetic arm past the largest retrieved one) x 3 seeds; one off-the-shelf evaluation per target.
    scaling = {r.name: r for r in load_spec(presets["unmet-promise-scaling"].path).runs}
    targets = ("aircraft", "cars", "dtd", "flowers102", "imagenet")
    for d in targets:
        for arm, fractions in (("retrieved", (0.1, 0.25, 0.5, 1.0)), ("synthetic", (0.05, 0.125, 0.25, 0.5, 1.0))):
            arm_runs = [r for r in scaling.values() if r.base == f"adapt-{arm}-{d}"]
            assert sorted((r.params["fraction"], r.params["seed"]) for r in arm_runs) == \
                [(f, s) for f in fractions for s in (0, 1, 2)]
            assert {tuple(r.deps) for r in arm_runs} == {(f"{arm}-{d}",)}
            curate = scaling[f"{arm}-{d}"]
            assert curate.kind == "curate" and curate.deps == [f"{arm}-raw-{d}"]
            assert curate.refs["dedup_against"] == ("dataset", d) and curate.params["keep_fraction"] == 0.3
        assert scaling[f"synthetic-raw-{d}"].params["prompts"].endswith(f"{d}.txt")
        assert scaling[f"retrieved-raw-{d}"].params["classes"] == d
        assert scaling[f"off-the-shelf-{d}"].params["epochs"] == 0 and scaling[f"off-the-shelf-{d}"].deps == []
    assert {r.params["recipe"] for r in scaling.values() if r.kind == "train"} == {"unmet-promise"}
    perturb = {r.name: r for r in load_spec(presets["unmet-promise-perturb"].path).runs}
    assert sorted((r.deps[0], r.params["seed"]) for r in perturb.values() if r.base == "adapt-perturbed") == \
        [(f"perturbed@strength={g}", s) for g in (0.2, 0.4, 0.6, 0.8) for s in (0, 1, 2)]
    assert perturb["retrieved"].kind == "curate" and perturb["retrieved"].refs["dedup_against"] == ("dataset", "target")
    assert all(perturb[f"perturbed@strength={g}"].params["width"] == 512 for g in (0.2, 0.8))
    table4 = load_spec(presets["mtg-unclip"].path)
    assert {r.deps[0] for r in table4.runs if r.kind == "train"} == \
        {"gen-unclip", "gen-sd21", "gen-sd14"}


def test_submitted_spec_is_kept_with_absolute_dataset_paths(tmp_path, monkeypatch):
    from runners import protocol
    from synthgap_tui import runs
    from synthgap_tui.specs import load_spec
    from synthgap_tui.store import RunStore
    from synthgap_tui.workspace import Workspace

    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    spec = tmp_path / "exp.toml"
    spec.write_text('[experiment]\nname = "e"\n[datasets]\nreal = "data"\n' + OK_TRAIN)
    ws = Workspace(tmp_path / "ws")
    ids = runs.submit(load_spec(spec), RunStore(ws), spec_text=spec.read_text())
    copy = protocol.read_json(ws.run_file(ids[0], "spec.json"))["spec_file"]
    monkeypatch.chdir(tmp_path / "ws")
    again = load_spec(copy)  # parsed from elsewhere, it still names the same folder
    assert again.datasets["real"]["path"] == str(tmp_path / "data")


@pytest.mark.parametrize("value, minutes", [(90, 90), ("90", 90), ("30:30", 31), ("1:00:00", 60), ("2-0", 2880),
                                            ("1-2:30", 1590), ("1-00:00:01", 1441)])
def test_slurm_times_in_every_sbatch_form_become_minutes(value, minutes):
    from synthgap_tui.launchers.slurm import _minutes

    assert _minutes(value) == minutes


def test_slurm_options_become_sbatch_parameters_and_a_run_s_gpus_its_request(tmp_path):
    from synthgap_tui.launchers import Launch
    from synthgap_tui.launchers.slurm import executor_for

    def params(options, gpus):
        launch = Launch(run_id="x", command=["python"], nproc=max(1, gpus), env={}, run_dir=tmp_path, devices=[],
                        options=options, gpus=gpus)
        return executor_for(launch)[0].parameters

    two = params({"partition": "gpu", "time": "1-00:00:00", "sbatch": {"mail-type": "FAIL"}}, gpus=2)
    assert two["gpus_per_node"] == 2 and two["partition"] == "gpu" and two["time"] == 1440
    assert two["additional_parameters"] == {"mail-type": "FAIL"} and two["job_name"] == "sg-x"
    assert "gpus_per_node" not in params({}, gpus=0)  # a CPU run asks for no GPU
    assert params({"gpus_per_node": 4}, gpus=1)["gpus_per_node"] == 4  # the options win


def test_relative_file_and_folder_fields_are_relative_to_the_spec_file(tmp_path, monkeypatch):
    """A runner works in its run directory: what a spec names must reach it as absolute paths."""
    from synthgap_tui.specs import load_spec

    (tmp_path / "exp").mkdir()
    spec = tmp_path / "exp" / "e.toml"
    spec.write_text('[experiment]\nname = "e"\n[datasets]\nreal = "data"\n'
                    '[runs.r]\nkind = "retrieve"\npool = "pools/laion"\nclasses = "./classes.json"\n'
                    '[runs.t]\nkind = "train"\ntrain = "r"\neval = "real"\ninit_from = "teacher.pt"\n'
                    '[runs.z]\nkind = "retrieve"\npool = "/abs/pool"\nclasses = "imagenet100"\n'
                    '[runs.g]\nkind = "generate"\nmodel = "./models/sd"\n'
                    '[runs.h]\nkind = "generate"\nmodel = "org/model"\n')
    monkeypatch.chdir(tmp_path)  # not where the spec is
    runs = {r.name: r for r in load_spec(spec).runs}
    assert runs["r"].params["pool"] == str(tmp_path / "exp" / "pools" / "laion")
    assert runs["r"].params["classes"] == str(tmp_path / "exp" / "classes.json")
    assert runs["t"].params["init_from"] == str(tmp_path / "exp" / "teacher.pt")
    assert runs["t"].refs["init_from"] == ("path", str(tmp_path / "exp" / "teacher.pt"))
    assert runs["z"].params["pool"] == "/abs/pool" and runs["z"].params["classes"] == "imagenet100"
    # A hub id or a local folder: only what is written as a path is one.
    assert runs["g"].params["model"] == str(tmp_path / "exp" / "models" / "sd")
    assert runs["h"].params["model"] == "org/model"
    from synthgap_tui.runs import plan
    from synthgap_tui.workspace import Workspace

    _, missing = plan(load_spec(spec), Workspace(tmp_path / "ws"))
    assert f"path {tmp_path / 'exp' / 'models' / 'sd'} does not exist (needed by g)" in missing
    assert not any("org/model" in m for m in missing)


def test_the_kept_copy_of_a_spec_names_the_same_files(tmp_path):
    from synthgap_tui import runs
    from synthgap_tui.specs import load_spec
    from synthgap_tui.store import RunStore
    from synthgap_tui.workspace import Workspace

    (tmp_path / "exp" / "pools" / "p").mkdir(parents=True)
    (tmp_path / "exp" / "c.json").write_text("[]")
    spec = tmp_path / "exp" / "e.toml"
    spec.write_text('[experiment]\nname = "e"\n[defaults]\nclasses = "./c.json"  # kept comment\n'
                    '[runs.r]\nkind = "retrieve"\npool = "pools/p"\n')
    ws = Workspace(tmp_path / "ws")
    runs.submit(load_spec(spec), RunStore(ws), spec_text=spec.read_text())
    copy = next(ws.specs_dir.glob("*.toml"))
    assert "# kept comment" in copy.read_text()
    again = load_spec(copy).runs[0].params
    assert again["pool"] == str(tmp_path / "exp" / "pools" / "p") and again["classes"] == str(tmp_path / "exp" / "c.json")


def test_every_problem_is_reported_at_once_with_its_line(tmp_path):
    text = """[experiment]
name = "bad"

[datasets]
real = { path = "/tmp" }

[defaults]
epochs = -3

[runs.a]
kind = "train"
train = "reel"
eval = "real"
augment = "dinoo"
[runs.a.sweep]
seed = [0, 1, 2]

[runs.b]
kind = "generat"

[runs.c]
kind = "train"
train = "real"
eval = "real"
[runs.c.sweep]
freeze_layers = [4, 8]
"""
    with pytest.raises(SpecError) as err:
        parse_spec(text, source="bad.toml")
    problems = err.value.problems
    expected = ["bad.toml:8: [defaults] field 'epochs': is -3",  # once, not once per run it reaches
                "bad.toml:14: [runs.a] field 'augment': is 'dinoo' (did you mean 'dino'?)",
                "bad.toml:12: [runs.a] field 'train': names 'reel'",
                "(did you mean 'real'?)",
                "bad.toml:19: [runs.b] field 'kind': is 'generat' (did you mean 'generate'?)",
                "bad.toml:26: [runs.c] field 'freeze_layers': needs init_from"]  # once for the sweep
    for e in expected:
        assert any(e in p for p in problems), (e, problems)
    assert len(problems) == 5, problems


def test_the_spec_schema_accepts_every_preset_and_refuses_what_validation_refuses():
    import tomllib

    import jsonschema

    from synthgap_tui.presets import list_presets
    from synthgap_tui.schema import spec_schema

    schema = spec_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    for preset in list_presets():
        jsonschema.validate(tomllib.loads(preset.path.read_text()), schema)  # raises if not
    bad = tomllib.loads('[experiment]\nname = "x"\n[runs.a]\nkind = "train"\naugment = "dinoo"\nlrr = 0.1\n')
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(bad))
    assert errors  # an unknown choice and an unknown field
    assert schema["properties"]["defaults"]["properties"]["augment"]["enum"][0] == "none"
