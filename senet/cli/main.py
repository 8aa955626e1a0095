"""Entry point of the ``senet`` command: one module per subcommand in ``senet.cli``.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it imports the library inside ``run`` so that ``senet --help`` stays fast.

Every failure is one line on stderr: a user's error (:class:`~senet.errors.SenetError`, a bad
value, an operating-system error naming its path and cause, a request that does not fit in
memory) exits with 2; anything else is a bug, reported in one line with its type and exit
code 1. ``SENET_DEBUG=1`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ["train", "eval", "predict", "export", "recipes", "models", "complexity", "convert", "analyze", "ablate"]


def build_parser() -> argparse.ArgumentParser:
    from senet.version import __version__

    parser = argparse.ArgumentParser(prog="senet", description="Squeeze-and-Excitation Networks")
    parser.add_argument("--version", action="version", version=f"senet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"senet.cli.{name}_cmd")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _out_of_memory(e: BaseException) -> bool:
    """Python's MemoryError, CUDA's OutOfMemoryError, the CPU allocator's RuntimeError."""
    text = str(e)
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text))


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:  # before the commands' imports (torch)
        from senet.version import __version__

        print(f"senet {__version__}")
        return 0
    args = build_parser().parse_args(argv)
    from senet.errors import SenetError, fs_error
    from senet.utils.text import ERRORS, display

    # undecodable bytes of file names go out as \xNN escapes, never as an encoding error (senet.utils.text)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=ERRORS)

    def fail(text: str) -> None:
        print(f"senet {args.command}: {display(text)}", file=sys.stderr)

    debug = bool(os.environ.get("SENET_DEBUG"))
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except (SenetError, ValueError) as e:
        if debug:
            raise
        fail(f"error: {e}")
        return 2
    except OSError as e:  # one the library did not name itself: it still names its file
        if debug:
            raise
        fail(f"error: {fs_error(e, doing='use')}")
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback on request
        if debug:
            raise
        detail = _one_line(str(e))
        if _out_of_memory(e):  # what was asked for does not fit this machine: the user's to change
            fail(f"error: out of memory ({detail[:200] or type(e).__name__}); use a smaller --batch-size or "
                 "--input-size")
            return 2
        fail(f"unexpected error: {type(e).__name__}{': ' + detail if detail else ''} "
             "(this is a bug in senet; set SENET_DEBUG=1 for the full traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
