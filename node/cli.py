"""`alpr-node`: the node's command line (run, check-config, recognize, eval, aim)."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

# Sub-command modules are imported lazily by name so that a command that needs LiteRT or
# OpenCV never slows or breaks one that does not.
COMMANDS: tuple[str, ...] = ("run", "check_config", "recognize", "evaluate", "aim", "outbox")

log = logging.getLogger("alpr-node")

# exit status when stdout's reader closed the pipe: what a shell reports for a process that
# SIGPIPE ended (128 + 13), so `set -o pipefail` scripts see the output was cut short
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command that could be imported."""
    parser = argparse.ArgumentParser(prog="alpr-node", description="ALPR camera node runtime")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"node.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"node.commands.{name}":
                continue  # a command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the sub-command, map our errors to `alpr-node: error: ...`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`alpr-node recognize ... | head`): stop quietly, as a tool
        # killed by SIGPIPE does, instead of an error line and a traceback at exit
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (OSError, ValueError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"alpr-node: error: {exc}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush of what is still buffered
    at exit does not fail on the closed pipe again ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (a test's capture): nothing will flush it at exit


if __name__ == "__main__":
    sys.exit(main())
