"""What `edge-inspect doctor` reports: findings (level, what, how to fix) and the host it looks at."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Level = Literal["ok", "warn", "error"]
LEVELS: tuple[Level, ...] = ("ok", "warn", "error")


@dataclass(frozen=True)
class Finding:
    """One thing the doctor checked: `error` blocks a run, `warn` hurts it, `ok` is fine."""

    check: str  # the area: python, packages, gpu, tensorrt, camera, network, jetson, disk, outbox, ports, config
    level: Level
    what: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Host:
    """Where the doctor reads the host from (overridable so tests can point at a prepared tree)."""

    sys_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    etc_root: Path = Path("/etc")
    env: Mapping[str, str] = field(default_factory=dict)


def blocks(findings: Iterable[Finding]) -> bool:
    return any(f.level == "error" for f in findings)


def exit_code(findings: Iterable[Finding]) -> int:
    """0: nothing blocks a run; 1: something does."""
    return 1 if blocks(findings) else 0


_MARK = {"ok": "ok  ", "warn": "WARN", "error": "FAIL"}


def format_text(findings: list[Finding]) -> str:
    width = max((len(f.check) for f in findings), default=0)
    lines = []
    for f in findings:
        lines.append(f"[{_MARK[f.level]}] {f.check.ljust(width)}  {f.what}")
        if f.fix and f.level != "ok":
            lines.append(f"       {' ' * width}  fix: {f.fix}")
    counts = {lvl: sum(1 for f in findings if f.level == lvl) for lvl in LEVELS}
    verdict = "something blocks a run" if counts["error"] else "nothing blocks a run"
    lines.append(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['error']} error(s): {verdict}")
    return "\n".join(lines)


def format_json(findings: list[Finding]) -> str:
    return json.dumps(
        {
            "ok": not blocks(findings),
            "exit_code": exit_code(findings),
            "counts": {lvl: sum(1 for f in findings if f.level == lvl) for lvl in LEVELS},
            "findings": [f.to_dict() for f in findings],
        },
        indent=2,
    )
