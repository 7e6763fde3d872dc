"""deploy/jetson/install.sh: the dry run prints every step and changes nothing; a run into a
`--prefix` root installs the files, and running it again changes nothing (idempotent)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "jetson" / "install.sh"
STEPS = [
    "host",
    "apt packages",
    "service user",
    "code in",
    "venv",
    "config in",
    "systemd units",
    "logs",
    "GigE Vision",
    "Jetson clocks",
    "config check and doctor",
    "service",
    "done",
]


def install(*args: str, src: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    script = src / "deploy" / "jetson" / "install.sh"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON",)}
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=timeout, env=env)


def headers(out: str) -> list[str]:
    return [line[4:] for line in out.splitlines() if line.startswith("==> ")]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = install("--dry-run", "--prefix", str(root), "--gige-nic", "eth9", "--clocks")
    assert proc.returncode == 0, proc.stderr
    got = headers(proc.stdout)
    assert len(got) == len(STEPS) and all(h.startswith(s) for h, s in zip(got, STEPS, strict=True)), got
    commands = [line for line in proc.stdout.splitlines() if line.startswith("  + ")]
    text = "\n".join(commands)
    for expected in (
        "venv --system-site-packages",
        "pip install -q -e",
        "edge-inspect.service",
        "60-edge-inspect.conf",
        "logrotate.d/edge-inspect",
        "60-edge-inspect-gige.conf",
        "sysctl -p",
        "71-edge-inspect-gige-mtu.rules",
        "ip link set dev eth9 mtu 9000",
        "systemctl enable --now edge-inspect-clocks.service",
        "systemctl enable --now edge-inspect",
    ):
        assert expected in text, f"dry run does not show {expected!r}:\n{proc.stdout}"
    assert files_under(root) == [], "the dry run wrote files"


def test_dry_run_of_the_real_install_touches_nothing() -> None:
    before = {p: p.exists() for p in (Path("/opt/edge-inspect"), Path("/etc/edge-inspect"))}
    proc = install("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run: nothing below is changed" in proc.stdout
    assert {p: p.exists() for p in before} == before


def test_usage_errors_exit_2() -> None:
    proc = install("--no-such-option")
    assert proc.returncode == 2 and "unknown option --no-such-option" in proc.stderr


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A small checkout: the deploy folder as it is, a stand-in payload (the installer copies it
    as files; what they contain does not matter to it)."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "deploy", src / "deploy")
    (src / "pyproject.toml").write_text('[project]\nname = "edge-inspect"\n')
    (src / "README.md").write_text("readme\n")
    for pkg in ("edge", "cameras", "plc"):
        (src / pkg).mkdir()
        (src / pkg / "__init__.py").write_text("")
        (src / pkg / "__pycache__").mkdir()
        (src / pkg / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (src / "models").mkdir()
    (src / "models" / "m.onnx").write_bytes(b"onnx")
    (src / "models" / "m.pt").write_bytes(b"torch weights stay behind")
    (src / "tests").mkdir()
    (src / "tests" / "t.py").write_text("")
    return src


SKIP = "apt,user,venv,check"  # no packages, users or pip in a test; the rest runs for real


def test_prefix_install_then_again_is_idempotent(checkout: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = install("--prefix", str(root), "--skip", SKIP, "--gige-nic", "eth9", src=checkout)
    assert first.returncode == 0, first.stderr + first.stdout
    opt, etc = root / "opt" / "edge-inspect", root / "etc"
    assert (opt / "edge" / "__init__.py").is_file() and (opt / "models" / "m.onnx").is_file()
    assert not (opt / "models" / "m.pt").exists() and not (opt / "tests").exists()
    assert not list(opt.rglob("__pycache__"))
    unit = etc / "systemd" / "system" / "edge-inspect.service"
    assert unit.read_text() == (REPO / "deploy" / "jetson" / "systemd" / "edge-inspect.service").read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert (etc / "systemd" / "system" / "edge-inspect-clocks.service").is_file()
    assert "rmem_max = 33554432" in (etc / "sysctl.d" / "60-edge-inspect-gige.conf").read_text()
    assert "Storage=persistent" in (etc / "systemd" / "journald.conf.d" / "60-edge-inspect.conf").read_text()
    assert "copytruncate" in (etc / "logrotate.d" / "edge-inspect").read_text()
    assert 'KERNEL=="eth9"' in (etc / "udev" / "rules.d" / "71-edge-inspect-gige-mtu.rules").read_text()
    station = etc / "edge-inspect" / "station.yaml"
    assert stat.S_IMODE(station.stat().st_mode) == 0o640
    assert (root / "var" / "lib" / "edge-inspect").is_dir()
    # nothing outside the prefix was run: system commands are only shown
    assert re.search(r"systemctl daemon-reload\s+\(not run: --prefix\)", first.stdout)

    station.write_text(station.read_text() + "# edited by the line engineer\n")
    snapshot = {p: p.read_bytes() for p in files_under(root)}
    second = install("--prefix", str(root), "--skip", SKIP, "--gige-nic", "eth9", src=checkout)
    assert second.returncode == 0, second.stderr
    changed = [line for line in second.stdout.splitlines() if line.startswith("  + ") and "(not run" not in line]
    assert changed == [], "a second run changed files:\n" + "\n".join(changed)
    assert "no daemon-reload needed" in second.stdout and "unchanged (payload" in second.stdout
    assert {p: p.read_bytes() for p in files_under(root)} == snapshot, "the config or a file was rewritten"

    (checkout / "edge" / "new_module.py").write_text("x = 1\n")
    (checkout / "cameras" / "__init__.py").unlink()
    third = install("--prefix", str(root), "--skip", SKIP, src=checkout)
    assert third.returncode == 0, third.stderr
    assert (opt / "edge" / "new_module.py").is_file() and not (opt / "cameras" / "__init__.py").exists()
    assert station.read_text().endswith("# edited by the line engineer\n")
