"""`kinds` and `completion`: the registry and the shell."""

from __future__ import annotations

import argparse
import sys

from synthgap_tui.cli import common
from synthgap_tui.errors import UserError
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace


def cmd_kinds(args) -> int:
    """The run kinds of the registry and their fields (README's field reference)."""
    from runners import kinds

    from synthgap_tui.fieldref import kind_rows
    from synthgap_tui.specs import fields_of

    if args.schema:
        from synthgap_tui.schema import spec_schema

        common.print_json(spec_schema())
        return 0
    registry = kinds.all_kinds()
    if args.name and args.name not in registry:
        raise UserError(str(kinds.UnknownKind(args.name)))
    chosen = {args.name: registry[args.name]} if args.name else registry
    if args.json:
        common.print_json({name: {"runner": k.runner, "help": k.help, "artifacts": k.artifacts,
                            "fields": {f: {"default": k.defaults().get(f), "allowed": field.allowed(),
                                           "help": field.help} for f, field in fields_of(k).items()}}
                     for name, k in chosen.items()})
        return 0
    if not args.name:
        common.print_table(["kind", "runner", "what it does"], [[n, k.runner, k.help] for n, k in chosen.items()])
        common.console().print("[dim]`synthgap kinds NAME` lists a kind's fields.[/]")
        return 0
    for name, kind in chosen.items():
        common.console().print(f"{name}: {kind.help}\nrunner: python -m {kind.runner}; produces: "
                         + (", ".join(f"{a} ({what})" for a, what in kind.artifacts.items()) or "nothing"),
                         markup=False)
        common.print_table(["field", "default", "allowed", "help"], kind_rows(kind), keep=1)
    return 0


# Completion functions the scripts call for words only the workspace knows:
# `synthgap completion --words runs` prints them (the default workspace, or $SYNTHGAP_HOME).
_COMPLETE_PREAMBLE = {
    "bash": """
_synthgap_words() { synthgap completion --words "$1" 2>/dev/null; }
_synthgap_runs() { compgen -W "$(_synthgap_words runs)" -- "$1"; }
_synthgap_presets() { compgen -W "$(_synthgap_words presets)" -- "$1"; }
_synthgap_kinds() { compgen -W "$(_synthgap_words kinds)" -- "$1"; }
""",
    "zsh": """
_synthgap_runs() { local -a w; w=(${(f)"$(synthgap completion --words runs 2>/dev/null)"}); compadd -a w; }
_synthgap_presets() { local -a w; w=(${(f)"$(synthgap completion --words presets 2>/dev/null)"}); compadd -a w; }
_synthgap_kinds() { local -a w; w=(${(f)"$(synthgap completion --words kinds 2>/dev/null)"}); compadd -a w; }
""",
}


def _completion_words(args, what: str) -> list[str]:
    if what == "presets":
        from synthgap_tui.presets import list_presets

        return [p.name for p in list_presets()]
    if what == "kinds":
        from runners import kinds

        return list(kinds.all_kinds())
    ws = Workspace.at(args.workspace)
    if not ws.index_path.exists():
        return []
    store = RunStore(ws)
    return store.ids() + sorted(store.names())


def cmd_completion(args) -> int:
    """Print the shell completion script (or, for the scripts, the words to complete)."""
    if args.words:
        sys.stdout.write("".join(f"{w}\n" for w in _completion_words(args, args.words)))
        return 0
    install = f"# install: {COMPLETION_INSTALL[args.shell]}\n"
    if args.shell == "fish":
        from synthgap_tui.cli import build_parser

        sys.stdout.write(install + fish_completion(build_parser()))
        return 0
    import shtab

    from synthgap_tui.cli import build_parser

    script = shtab.complete(build_parser(), args.shell, preamble=_COMPLETE_PREAMBLE.get(args.shell, ""))
    if script.startswith(("#!", "#compdef")):  # zsh's #compdef line must stay first
        head, _, rest = script.partition("\n")
        script = f"{head}\n{install}{rest}"
    else:
        script = install + script
    sys.stdout.write(script)
    return 0


COMPLETION_INSTALL = {
    "bash": "synthgap completion bash > ~/.local/share/bash-completion/completions/synthgap",
    "zsh": "synthgap completion zsh > \"${fpath[1]}/_synthgap\"   # then: autoload -U compinit && compinit",
    "fish": "synthgap completion fish > ~/.config/fish/completions/synthgap.fish",
    "tcsh": "synthgap completion tcsh > ~/.synthgap.tcsh && echo 'source ~/.synthgap.tcsh' >> ~/.tcshrc",
}


def fish_completion(parser: argparse.ArgumentParser) -> str:
    """A fish script from the parser (shtab has none): subcommands with their help, their
    options, and runs, presets and kinds completed by `synthgap completion --words`."""
    def quote(text: str | None) -> str:
        return "'" + (text or "").replace("\\", "\\\\").replace("'", "\\'") + "'"

    lines = ["complete -c synthgap -f"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, command in sub.choices.items():
        lines.append(f"complete -c synthgap -n __fish_use_subcommand -a {name} -d {quote(helps.get(name))}")
        seen = f"-n '__fish_seen_subcommand_from {name}'"
        for action in command._actions:
            if action.help == argparse.SUPPRESS:
                continue
            longs = [o[2:] for o in action.option_strings if o.startswith("--")]
            shorts = [o[1:] for o in action.option_strings if len(o) == 2]
            if longs or shorts:
                flags = " ".join([f"-l {o}" for o in longs] + [f"-s {o}" for o in shorts])
                lines.append(f"complete -c synthgap {seen} {flags} -d {quote(action.help)}")
            elif getattr(action, "complete", None):
                what = action.complete["bash"].removeprefix("_synthgap_")
                lines.append(f"complete -c synthgap {seen} -a '(synthgap completion --words {what} 2>/dev/null)'")
    return "\n".join(lines) + "\n"


def register(sub) -> None:
    """The subcommands of this group, each with its arguments."""
    p = sub.add_parser("kinds", help="the run kinds and their fields")
    common.completes(p.add_argument("name", nargs="?", help="list this kind's fields"), "kinds")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--schema", action="store_true", help="print a JSON Schema of specs (for taplo / Even Better "
                   "TOML: completion and checks in the editor)")
    p.set_defaults(func=cmd_kinds)

    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, fish, tcsh)",
                       description="Completes commands, options, run ids and names, presets and kinds. "
                       "The script's first line is the command that installs it.")
    p.add_argument("shell", nargs="?", choices=tuple(COMPLETION_INSTALL), default="bash",
                   help="the shell (default: bash)")
    p.add_argument("--words", choices=("runs", "presets", "kinds"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_completion)
