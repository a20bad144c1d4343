"""The command line: dispatches `mupspec COMMAND` to `mupspec.commands.COMMAND`.

Each command module defines `HELP` (one line), `configure(parser)` and
`run(args) -> int`. Only the chosen command's module is imported, so
`mupspec parse`/`fmt` start without torch or sympy. This is the only place
that picks exit codes: 0 success, 1 a verdict ("not μP", "not equivalent",
"would reformat"), 2 bad input or usage (a rendered `MupError`), 70 an
internal error (any other exception: a bug in mupspec, reported as such).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback

from mupspec import __version__
from mupspec.errors import MupError, render_all

# command name -> one-line help, in `--help` order; the code is mupspec/commands/NAME.py
# (a dash in the name is an underscore in the file name).
COMMANDS: dict[str, str] = {
    "parse": "print a spec's IR (resolved) as JSON or canonical text",
    "fmt": "rewrite specs in canonical form (--check: only report)",
    "check": "verify the μP desiderata symbolically and classify the spec",
    "convert": "rewrite a spec into an equivalent table (Lemma J.1)",
    "equiv": "are two specs equivalent for every class and optimizer?",
    "table": "render a spec as a Tensor Programs V style table",
    "codegen": "emit a standalone PyTorch module applying the spec",
    "verify": "measure scaling exponents on real networks and compare with check",
    "experiment": "run the bundled experiments (grad-ratio, spiral, transformer)",
    "specs": "list the bundled specs (their names work wherever a spec file does)",
    "coord-check": "coordinate check of your own model (FILE.py:FACTORY) against a spec",
    "infer": "infer the spec your own model's code implements (init, multipliers, LRs across widths)",
}

EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): distinct from verdicts (1) and bad input (2)
ISSUES = "the mupspec issue tracker"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with a one-line hint, no traceback
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}\n  hint: run `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _available() -> dict[str, str]:
    return {name: help for name, help in COMMANDS.items()
            if importlib.util.find_spec(_module(name)) is not None}


def _module(command: str) -> str:
    return f"mupspec.commands.{command.replace('-', '_')}"


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = _Parser(prog="mupspec", description=(
                     "Declare, check, convert and compile neural-network parametrizations."))
    parser.add_argument("--version", action="version", version=f"mupspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help in _available().items():
        cmd = sub.add_parser(name, help=help, description=help)
        if name == command:
            importlib.import_module(_module(name)).configure(cmd)
            parser.set_defaults(_usage_of=cmd)  # an unknown option is reported with this command's usage
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "_usage_of", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    module = importlib.import_module(_module(args.command))
    try:
        return module.run(args)
    except MupError as err:
        print(render_all(err), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        resume = getattr(module, "on_interrupt", lambda args: "")(args)
        print("interrupted" + (f": {resume}" if resume else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # noqa: BLE001 -- the last line of defence: never exit 1 on a crash
        return internal_error(err, argv)


def internal_error(err: BaseException, argv: list[str]) -> int:
    """A crash is a bug in mupspec, whatever the input: say so, ask for a
    report with the input, and exit 70 so that CI can tell it from a verdict.
    The traceback is printed only with MUPSPEC_TRACEBACK=1."""
    print(f"mupspec: internal error: {type(err).__name__}: {str(err)[:500]}\n"
          f"  this is a bug in mupspec, not a problem with your input. Please report it in {ISSUES}\n"
          f"  with the command line (mupspec {' '.join(argv)[:300]}) and the input files; "
          "set MUPSPEC_TRACEBACK=1 to include the traceback.", file=sys.stderr)
    if os.environ.get("MUPSPEC_TRACEBACK"):
        traceback.print_exception(err, file=sys.stderr)
    return EXIT_INTERNAL
