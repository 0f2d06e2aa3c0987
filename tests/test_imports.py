"""Start-up stays light: the app and `synthgap ls` never load the ML stack."""

import json
import subprocess

from conftest import PYTHON, subprocess_env

HEAVY = ["torch", "torchvision", "diffusers", "transformers", "matplotlib", "cv2"]


def _loaded_after(code: str, tmp_path) -> set[str]:
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, check=True,
                         env=subprocess_env(SYNTHGAP_HOME=tmp_path / "ws"))
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_app_and_ls_do_not_import_the_ml_stack(tmp_path):
    loaded = _loaded_after(
        "import synthgap_tui.app\n"
        "from synthgap_tui.cli import main\n"
        "main(['ls'])\nmain(['ls', '--json'])\n", tmp_path)
    assert "synthgap_tui.app" in loaded and "tinydb" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_protocol_and_the_registry_import_neither_textual_nor_tinydb(tmp_path):
    loaded = _loaded_after("import runners.protocol\nfrom runners import kinds\nkinds.all_kinds()", tmp_path)
    assert "runners.protocol" in loaded and "runners.kinds.train" in loaded
    assert "textual" not in loaded and "tinydb" not in loaded and "torch" not in loaded
