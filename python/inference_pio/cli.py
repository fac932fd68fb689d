"""The ``pio`` command line. For now: ``pio doctor``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pio", description="inference-pio: fast LLM inference from Python")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="print the version and which backends this installation can run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "doctor":
        from .doctor import main as doctor

        return doctor()
    parser.error(f"unknown command {args.command}")
    return 2
