"""The `synthgap` command line: one module per command group, each command's arguments
declared beside its code (``register``); this module puts them together and runs them."""

from __future__ import annotations

import argparse
import sys

from synthgap_tui.cli import browse, common, lifecycle, maintenance, results, shell
from synthgap_tui.errors import UsageError, UserError, problem

GROUPS = (browse, lifecycle, maintenance, results, shell)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synthgap")
    except PackageNotFoundError:
        return "(not installed)"


class _Subcommands(argparse._SubParsersAction):
    """Every subcommand also takes -w/--workspace after its name, as people type it."""

    def add_parser(self, name, **kwargs):
        parser = super().add_parser(name, **kwargs)
        # SUPPRESS: when not given here, the value given before the command stands.
        parser.add_argument("--workspace", "-w", metavar="DIR", default=argparse.SUPPRESS,
                            help="workspace folder (default: $SYNTHGAP_HOME or ~/.synthgap)")
        return parser


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors (exit 2) as JSON when the command line asks for JSON."""

    json_errors = False

    def error(self, message: str):
        if self.json_errors:
            common.print_json({"error": f"{self.prog}: {message}"})
            sys.exit(2)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="synthgap",
        description="Compose, run and compare synthetic-vs-real training experiments.",
        epilog="Exit codes: 0 ok, 1 the command failed (no such run, a bad spec, ...), 2 usage error.",
    )
    parser.add_argument("--workspace", "-w", metavar="DIR",
                        help="workspace folder (default: $SYNTHGAP_HOME or ~/.synthgap)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.set_defaults(func=results.cmd_tui)
    parser.register("action", "parsers", _Subcommands)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", parser_class=_Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    usage = args.check(args) if getattr(args, "check", None) else None
    if usage:
        if getattr(args, "json", False):
            common.print_json({"error": usage})
        else:
            print(f"synthgap {args.command}: error: {usage}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (UserError, OSError) as e:
        message = problem(e)  # a full disk or an unwritable folder is one line too
        code = 2 if isinstance(e, UsageError) else 1
        try:
            if getattr(args, "json", False):
                common.print_json({"error": message})
            else:
                print(f"synthgap: {message}", file=sys.stderr)
        except OSError:
            pass  # stdout itself is gone (a closed pipe): the exit code still says it
        return code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
