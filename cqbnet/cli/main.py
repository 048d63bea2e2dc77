"""``cqbnet``: the command line of the toolkit.

Every sub-command turns bad input into one line on stderr naming the file or
id at fault, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from cqbnet.cli import data, evaluation, labels, planning, training
from cqbnet.errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line and exit code 2, as every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cqbnet", description="Label-efficient panoptic segmentation.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (data, labels, planning, training, evaluation):
        group.add_commands(sub)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as the command line shows them: one line, no source location."""
    return f"cqbnet: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # --help, or a bad argument (one line, code 2)
        return int(e.code or 0)
    if extra:  # overrides of `train` may come after its options
        if getattr(args, "command", None) not in ("train", "pilot", "fit") or any(
            a.startswith("-") or "=" not in a for a in extra
        ):
            print(f"cqbnet: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
            return 2
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except InputError as e:
        print(f"cqbnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "cqbnet: interrupted; outputs are whole or absent (training resumes from its last checkpoint)",
            file=sys.stderr,
        )
        return 130
    except RuntimeError as e:
        from cqbnet.engine.trainer import TrainingDiverged
        from cqbnet.sweep.runner import SweepFailed

        if not isinstance(e, (TrainingDiverged, SweepFailed)):
            raise
        print(f"cqbnet: error: {e}", file=sys.stderr)
        return 3
    except json.JSONDecodeError as e:  # pragma: no cover - readers turn these into InputError
        print(f"cqbnet: error: malformed JSON: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system that refuses a write the checks could not foresee (/proc, a full disk)
        where = f"{e.filename}: " if e.filename else ""
        print(f"cqbnet: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
