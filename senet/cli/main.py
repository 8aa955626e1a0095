"""Entry point of the ``senet`` command: one module per subcommand in ``senet.cli``.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it imports the library inside ``run`` so that ``senet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ["train", "eval", "recipes", "models", "complexity", "convert", "analyze", "ablate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="senet", description="Squeeze-and-Excitation Networks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"senet.cli.{name}_cmd")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from senet.errors import SenetError

    try:
        return int(args._run(args) or 0)
    except (SenetError, ValueError, FileNotFoundError) as e:
        if os.environ.get("SENET_DEBUG"):
            raise
        print(f"senet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"senet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
