"""The toy kind's runner: ``python -m toy_runner --run-dir DIR``."""

import sys
from pathlib import Path

from runners import protocol
from runners.runtime import run_main, runner_args_parser
from toy_kind import KIND


def run(ctx, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    ctx.emit(protocol.START, config=cfg)
    before = Path(cfg["after_path"]).read_text().split() if cfg.get("after_path") else []
    words = before + [cfg["word"]] * cfg["words"]
    for i in range(cfg["words"]):
        ctx.emit(protocol.PROGRESS, done=i + 1, total=cfg["words"], unit="word")
    out = ctx.run_dir / "out.txt"
    protocol.write_text_atomic(out, " ".join(words))
    ctx.emit(protocol.ARTIFACT, path=str(out), kind="text")
    return {"words": len(words)}


if __name__ == "__main__":
    sys.exit(run_main(runner_args_parser("toy runner").parse_args(), run))
