"""`lmforge` entry point. Each module in lmforge.cli that defines `register(subparsers)` adds a verb.

A verb module's `register` adds its parser and sets `func=run` (a function of the parsed args and the
list of unparsed `--section.field value` overrides, returning an exit code). Errors derived from
LmforgeError are printed as one message, without a traceback: exit 2 for config/usage errors, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from lmforge.errors import LmforgeError

EPILOG = """examples:
  lmforge quickstart                       train a small GPT on the Python standard library (~2 min on CPU)
  lmforge info --preset gpt2               parameter counts, shapes and FLOPs of a preset
  lmforge convert from-hf HF_DIR OUT_DIR   import a Hugging Face BERT / GPT-2 checkpoint
  lmforge VERB --help                      help and examples for one command
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Transformer language models from BERT to GPT-3: tokenize, pretrain, fine-tune, "
        "generate, evaluate, convert, serve.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lmforge {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import lmforge.cli as cli_pkg

    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"lmforge.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lmforge")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if argv else 0
    accepts_overrides = getattr(args, "accepts_overrides", False)
    if extra and not accepts_overrides:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")  # exits 2
    try:
        return int(args.func(args, extra) or 0)
    except LmforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmforge ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
