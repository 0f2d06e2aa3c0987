"""Make assets/imagenet100.json from WordNet 3.0 (Debian's wordnet-base package).

    apt-get install wordnet-base
    python assets/make_imagenet100.py

For each of the 100 ImageNet-100 WordNet ids in assets/imagenet100.txt (CMC's
list, used by FITYMI and Mind the Gap): the synset's names, its definition
(gloss without example sentences) and its first hypernym's name. ImageNet's
ids are WordNet 3.0 noun offsets ("n" + offset). WordNet's licence is in
assets/LICENSES.md.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_NOUN = Path("/usr/share/wordnet/data.noun")
HERE = Path(__file__).resolve().parent


def parse_synsets(path: Path) -> dict[str, dict]:
    synsets = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # licence header
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        offset, n_words = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        pos = 4 + 2 * n_words
        n_ptrs = int(fields[pos])
        hypernyms = [fields[pos + 1 + 4 * i + 1] for i in range(n_ptrs) if fields[pos + 1 + 4 * i] == "@"]
        definition = gloss.split("; \"")[0].strip().rstrip(";").strip()
        synsets[offset] = {"words": words, "definition": definition, "hypernyms": hypernyms}
    return synsets


def main() -> None:
    if not DATA_NOUN.is_file():
        raise SystemExit(f"{DATA_NOUN} not found: apt-get install wordnet-base")
    synsets = parse_synsets(DATA_NOUN)
    wnids = [w.strip() for w in (HERE / "imagenet100.txt").read_text().split() if w.strip()]
    classes = []
    for wnid in wnids:
        s = synsets[wnid[1:]]
        hyper = synsets[s["hypernyms"][0]]["words"][0] if s["hypernyms"] else ""
        classes.append({"id": wnid, "name": s["words"][0], "names": s["words"], "definition": s["definition"],
                        "hypernym": hyper})
    out = HERE / "imagenet100.json"
    out.write_text(json.dumps({"source": "WordNet 3.0 (Princeton University), via Debian wordnet-base",
                               "classes": classes}, indent=1) + "\n")
    print(f"wrote {out}: {len(classes)} classes")


if __name__ == "__main__":
    main()
