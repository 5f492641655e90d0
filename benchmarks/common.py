"""Command-line helpers shared by the benchmark scripts (``rd``, ``speed``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable

__all__ = ["start_command", "set_threads"]


def start_command(make_parser: Callable[[str], argparse.ArgumentParser],
                  argv: list[str] | None, prog: str | None,
                  module: str) -> tuple[argparse.Namespace, str]:
    """Parse ``argv`` and print the exact command line as ``$ ...`` (every report's head).

    ``argv`` None means ``sys.argv[1:]``, shown as ``python <script>``; otherwise
    ``prog`` defaults to ``python -m <module>``.  Returns ``(args, command)``.
    """
    if argv is None:
        argv = sys.argv[1:]
        prog = prog or f"python {sys.argv[0]}"
    prog = prog or f"python -m {module}"
    args = make_parser(prog).parse_args(argv)
    command = shlex.join(prog.split() + list(argv))
    print(f"$ {command}", flush=True)
    return args, command


def set_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads when ``threads`` is given (torch is imported only then)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def finish_report(results: dict, report, json_path) -> int:
    """Every report's tail: add the environment, print the report without its command line
    (already printed by `start_command`), optionally write the JSON. Returns exit status 0."""
    import json
    from pathlib import Path

    from benchmarks.rd import _json_safe, environment

    results["environment"] = environment()
    print(report(results).split("\n", 2)[2], end="")
    if json_path:
        Path(json_path).write_text(json.dumps(_json_safe(results), indent=1) + "\n")
        print(f"\nWrote {json_path}")
    return 0
