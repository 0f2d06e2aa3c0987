"""A regular (non-editable) install carries everything the tool reads at run time."""

import shutil
import subprocess
import zipfile

from conftest import PYTHON, REPO, subprocess_env

SHIPPED = ["synthgap_tui/app.tcss", "synthgap_tui/demo/demo.toml", "synthgap_tui/presets/mtg-baselines.toml",
           "synthgap_assets/imagenet100.json", "synthgap_assets/fashion-mnist-demo.npz",
           "synthgap_assets/demo-generator/synthgap_generator.json",
           "synthgap_assets/demo-generator/diffusion_pytorch_model.safetensors", "runners/kinds/train.py",
           "synthgap_tui/launchers/local.py"]


def test_the_wheel_holds_the_package_data_and_runs_from_its_own_files(tmp_path):
    # Built from a copy: setuptools leaves build/ behind in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__",
                                                                ".pytest_cache"))
    build = subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("synthgap-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [f for f in SHIPPED if f not in names]
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # From the unpacked wheel, far from the source tree: the demo's files, the
    # presets and the ImageNet-100 classes are found through the package.
    code = ("import synthgap_tui, synthgap_assets\n"
            "from synthgap_tui import demo\nfrom synthgap_tui.presets import list_presets\n"
            "from runners.classes import load_classes\n"
            "assert synthgap_tui.__file__.startswith(%r), synthgap_tui.__file__\n"
            "assert demo.DEMO_DATA.is_file() and (demo.GENERATOR / 'synthgap_generator.json').is_file()\n"
            "assert demo.SPEC_TEMPLATE.is_file() and len(list_presets()) >= 8\n"
            "print(len(load_classes('imagenet100')))\n") % str(site)
    env = subprocess_env()
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "100"
