"""The `dsd` command line: the same plain functions as the studio, for scripts and other tools.

One module per command group (`generate` with `studio`, `wheel`, `mini`, `train`, `eval`); this one
assembles the parser and runs the command.

Exit codes: 0 success; 2 bad input (one line on stderr, no traceback); 1 a provider or other
runtime failure (one line).
"""

import argparse
import os
import sys

from pipeline.errors import UserInputError
from studio.cli import eval as evaluation
from studio.cli import generate, mini, train, wheel


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, like every other bad input here."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def shared_flags() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The flags every command takes (`--home`), and those plus the hidden `--job` of a stage the studio
    may start as a job."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's own --home default must not hide one given before the subcommand.
    common.add_argument("--home", default=argparse.SUPPRESS,
                        help="data folder for the database, pictures and runs (env DSD_HOME, default ./dsd-data)")
    job = argparse.ArgumentParser(add_help=False, parents=[common])
    job.add_argument("--job", type=int, help=argparse.SUPPRESS)  # set by the studio's job launcher
    return common, job


def build_parser() -> argparse.ArgumentParser:
    common, job = shared_flags()
    parser = OneLineParser(prog="dsd", description="DSD Studio: zero-shot identity-preserving generation.", parents=[common])
    # Nested subcommands take their parent's parser class, so every level is a OneLineParser.
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    generate.add_commands(commands, common)
    wheel.add_commands(commands, common, job)
    mini.add_commands(commands, common)
    train.add_commands(commands, common)
    evaluation.add_commands(commands, common, job)
    return parser


def quiet_libraries() -> None:
    """Library progress bars and warnings are not for CLI users; our own notices say what matters.
    Environment variables, read when those libraries load: importing them here would slow every command."""
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


COMMANDS = {"generate": generate.run_generate, "studio": generate.run_studio, "wheel": wheel.run_wheel,
            "train": train.run_train, "eval": evaluation.run_eval, "mini": mini.run_mini}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except UserInputError as error:
        print(f"dsd: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        from pipeline.providers import ProviderError

        if not isinstance(error, ProviderError):
            raise
        print(f"dsd: error: {error}", file=sys.stderr)
        return 1
