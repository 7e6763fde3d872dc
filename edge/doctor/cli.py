"""The `edge-inspect doctor` subcommand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge.doctor import default_config, exit_code, format_json, format_text, run_doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    config = args.config if args.config is not None else default_config()
    findings = run_doctor(config, quick=args.quick)
    print(format_json(findings) if args.json else format_text(findings))
    return exit_code(findings)


def add_doctor_command(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this host and the station config; print what to fix (exit 1 if something blocks a run)",
    )
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="station config (default: $EDGE_INSPECT_CONFIG or /etc/edge-inspect/station.yaml)",
    )
    p.add_argument("--json", action="store_true", help="findings as JSON")
    p.add_argument(
        "--quick", action="store_true", help="skip slow checks (camera enumeration, model hashing, peer connections)"
    )
    p.set_defaults(func=cmd_doctor)
