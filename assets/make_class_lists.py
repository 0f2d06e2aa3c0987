"""Write ``class-lists/*.json``: The Unmet Promise's per-dataset class names, retrieval
queries and templates, as data, from a checkout of the authors' repository.

    python assets/make_class_lists.py /path/to/unmet-promise

Sources in that repository (MIT): ``data_sourcing/retrieval/retrieval_templates/``
(class names, ``class_map`` queries and kNN templates), ``data_sourcing/filtering/
filtering_templates/`` (curation templates), ``adapt/src/datasets/classnames.py``
and ``adapt/src/templates/vtab_templates.py`` (the zero-shot head's names and
templates). ImageNet's names and 80 templates are not written: open_clip ships
them (``open_clip.zero_shot_metadata``), so ``imagenet.json`` holds only what
open_clip lacks.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("class-lists")
DATASETS = {  # our name: (retrieval module, filtering folder, zero-shot template list)
    "imagenet": ("ImageNet", "imagenet", None),
    "aircraft": ("FGVCAircraft", "aircraft", "aircraft_template"),
    "cars": ("StanfordCars", "cars", "stanfordcars_template"),
    "dtd": ("DTD", "dtd", "dtd_template"),
    "flowers102": ("Flowers102", "flowers", "flowers_template"),
}
ZEROSHOT_NAMES = {"cars": "CARS_CLASSNAMES", "flowers102": "FLOWERS_CLASSNAMES"}
# The adapt code's renames from folder-safe retrieval names to the evaluation names.
AIRCRAFT_RENAMES = {"F-16A_B": "F-16A/B", "F_A-18": "F/A-18"}


def module_values(path: Path, names: tuple[str, ...]) -> dict:
    """Module-level assignments of a data module, run without importing the package
    around it (the modules are plain lists, dicts and a loop)."""
    src = path.read_text()
    src = re.sub(r"^from \..*$", "", src, flags=re.M)  # classnames.py's relative import
    ns: dict = {"get_classnames": lambda *_: []}
    exec(compile(src, str(path), "exec"), ns)  # noqa: S102 - the authors' data files, run by hand
    return {n: ns[n] for n in names if n in ns}


def lambda_templates(path: Path, name: str) -> list[str]:
    """A list of ``lambda c: f'...'`` as templates: ``{name}``, and ``{a_name}`` where
    the authors call append_proper_article."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:
            out = []
            for lam in node.value.elts:
                text = ""
                for part in lam.body.values:
                    if isinstance(part, ast.Constant):
                        text += part.value
                    else:
                        call = part.value
                        text += "{a_name}" if isinstance(call, ast.Call) else "{name}"
                out.append(text)
            return out
    raise SystemExit(f"{path}: no {name}")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")


def braces(templates: list[str]) -> list[str]:
    return [t.replace("{}", "{name}") for t in templates]


def main(repo: Path) -> None:
    retrieval = repo / "data_sourcing/retrieval/retrieval_templates"
    filtering = repo / "data_sourcing/filtering/filtering_templates"
    classnames = module_values(repo / "adapt/src/datasets/classnames.py", tuple(ZEROSHOT_NAMES.values()))
    OUT.mkdir(exist_ok=True)
    for ours, (module, folder, zs) in DATASETS.items():
        data = module_values(retrieval / f"{module}.py", ("classes", "class_map", "templates"))
        class_map = data.get("class_map", {})
        doc = {"source": f"unmet-promise (MIT): retrieval_templates/{module}.py, filtering_templates/{folder}/",
               "retrieval_templates": braces(data["templates"])}
        subset = filtering / folder / f"{folder}_templates_subset.json"
        doc["filtering_templates"] = braces(json.loads((subset if subset.exists() else
                                                        filtering / folder / f"{folder}_templates.json").read_text()))
        if ours == "imagenet":
            # Names and ids come from open_clip and timm at load time; only the queries here.
            doc["queries"] = class_map
        else:
            names = classnames.get(ZEROSHOT_NAMES.get(ours)) or [AIRCRAFT_RENAMES.get(c, c) for c in data["classes"]]
            assert len(names) == len(data["classes"]), ours
            doc["zeroshot_templates"] = lambda_templates(repo / "adapt/src/templates/vtab_templates.py", zs)
            doc["classes"] = []
            for name, retrieval_name in zip(names, data["classes"]):
                c = {"id": slug(name), "name": name}
                query = class_map.get(retrieval_name, retrieval_name)
                if query != name:
                    c["query"] = query
                doc["classes"].append(c)
        (OUT / f"{ours}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        print(f"{ours}: {len(doc.get('classes') or class_map)} entries")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
