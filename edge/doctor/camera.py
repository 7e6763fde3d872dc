"""Camera checks: GenTL producers found (GENICAM_GENTL64_PATH, the bundled simulator) and devices."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge.doctor.findings import Finding

GENTL_ENV = "GENICAM_GENTL64_PATH"


def producers_on_path(env: Mapping[str, str]) -> list[Path]:
    """The .cti files in the folders GENICAM_GENTL64_PATH lists (where vendor SDKs register)."""
    found: list[Path] = []
    for folder in (env.get(GENTL_ENV) or "").split(os.pathsep):
        if folder and Path(folder).is_dir():
            found.extend(sorted(Path(folder).glob("*.cti")))
    return found


def bundled_producer() -> Path | None:
    try:
        from cameras.gentl import bundled_cti

        return bundled_cti()
    except Exception:  # genicam missing or its wheel without a simulator
        return None


def _info(device_info: Any, attr: str) -> str | None:
    try:
        value = getattr(device_info, attr)
    except Exception:  # genicam raises for fields a producer does not fill
        return None
    return None if value is None else str(value)


def describe(device_info: Any) -> str:
    label = _info(device_info, "display_name") or _info(device_info, "id_") or "device"
    serial = _info(device_info, "serial_number")
    return f"{label} (serial {serial})" if serial else label


def matches(device_info: Any, index: int, want: str | int | None) -> bool:
    if want is None:
        return True
    if isinstance(want, int):
        return index == want
    return want in (
        _info(device_info, "serial_number"),
        _info(device_info, "id_"),
        _info(device_info, "user_defined_name"),
    )


def list_devices(cti: Path) -> list[Any]:
    """The devices a producer enumerates now (loads it through harvesters, then lets it go)."""
    from cameras.gentl import GenTLProducer

    producer = GenTLProducer.acquire(cti)
    try:
        return list(producer.harvester.device_info_list)
    finally:
        producer.release()


def check_producers(env: Mapping[str, str]) -> list[Finding]:
    on_path = producers_on_path(env)
    bundled = bundled_producer()
    out = []
    if on_path:
        out.append(Finding("camera", "ok", f"GenTL producers on {GENTL_ENV}: " + ", ".join(str(p) for p in on_path)))
    else:
        out.append(
            Finding(
                "camera",
                "ok",
                f"no GenTL producer registered on {GENTL_ENV} "
                "(set by a camera vendor's SDK; a camera's cti: may name one directly)",
            )
        )
    if bundled is not None:
        out.append(Finding("camera", "ok", f"GenTL simulator bundled with genicam: {bundled}"))
    return out


def check_cameras(cameras: Sequence[Any], base_dir: Path, env: Mapping[str, str], quick: bool) -> list[Finding]:
    """Each configured camera: its source exists, and (unless quick) its device answers now."""
    out: list[Finding] = []
    for cam in cameras:
        if cam is None:
            continue
        kind = getattr(cam, "type", "?")
        name = getattr(cam, "name", "?")
        if kind == "replay":
            path = Path(cam.path).expanduser()
            path = path if path.is_absolute() else base_dir / path
            if path.exists():
                out.append(Finding("camera", "ok", f"camera {name}: replay source {path} exists"))
            else:
                out.append(
                    Finding(
                        "camera",
                        "error",
                        f"camera {name}: replay source {path} does not exist",
                        "fix cameras[].path (relative paths are relative to the config file)",
                    )
                )
            continue
        if kind != "genicam":
            out.append(Finding("camera", "ok", f"camera {name}: type {kind} (not checked here)"))
            continue
        if cam.cti is None:
            cti = bundled_producer()
            if cti is None:
                out.append(
                    Finding(
                        "camera",
                        "error",
                        f"camera {name}: no cti: given and genicam bundles no simulator",
                        f"set cti: to your vendor's producer (see {GENTL_ENV})",
                    )
                )
                continue
        else:
            cti = Path(cam.cti).expanduser()
            cti = cti if cti.is_absolute() else base_dir / cti
            if not cti.is_file():
                known = ", ".join(str(p) for p in producers_on_path(env)) or "none registered"
                out.append(
                    Finding(
                        "camera",
                        "error",
                        f"camera {name}: GenTL producer {cti} does not exist",
                        f"install the camera vendor's GenTL producer, or point cti: at one ({known})",
                    )
                )
                continue
        if quick:
            out.append(Finding("camera", "ok", f"camera {name}: producer {cti} present (devices not probed: --quick)"))
            continue
        try:
            devices = list_devices(cti)
        except Exception as exc:
            out.append(
                Finding(
                    "camera",
                    "error",
                    f"camera {name}: cannot load GenTL producer {cti}: {exc}",
                    "check the producer matches this CPU architecture and its SDK is installed",
                )
            )
            continue
        want = cam.device
        hit = [describe(d) for i, d in enumerate(devices) if matches(d, i, want)]
        listing = "; ".join(f"[{i}] {describe(d)}" for i, d in enumerate(devices)) or "none"
        if hit:
            out.append(Finding("camera", "ok", f"camera {name}: {hit[0]} reachable via {cti.name}"))
        else:
            target = "any device" if want is None else f"device {want!r}"
            out.append(
                Finding(
                    "camera",
                    "error",
                    f"camera {name}: {target} not found via {cti.name} (devices: {listing})",
                    "check cabling/power and the camera's IP subnet (GigE: same subnet as the NIC), or fix "
                    "cameras[].device (serial, id, user-defined name or index)",
                )
            )
    return out


def gige_configured(cameras: Sequence[Any]) -> bool:
    """Any genicam camera over a producer other than the bundled simulator (likely GigE/USB3)."""
    return any(getattr(c, "type", None) == "genicam" and getattr(c, "cti", None) for c in cameras if c is not None)
