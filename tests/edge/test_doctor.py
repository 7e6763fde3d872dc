"""`edge-inspect doctor` on this host (no GPU, no camera): findings and exit codes.

The CLI runs in-process (`edge.cli.main`); a prepared /sys and /proc tree stands in for a
station's NIC settings and a Jetson's release file, everything else is this host as it is.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import main
from edge.doctor import Host, run_doctor
from edge.doctor.host import check_jetson, nvidia_gpus
from edge.doctor.network import GIGE_MTU, RMEM_WANT, check_network


def write_config(tmp_path: Path, model: Path, images: Path, **over: Any) -> Path:
    data: dict[str, Any] = {
        "cameras": [{"type": "replay", "name": "top", "path": str(images)}],
        "engine": {"type": "onnxruntime", "model": str(model)},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out" / "verdicts.jsonl")}],
        "metrics": {"port": 0},
        "state_dir": str(tmp_path / "state"),
    }
    data.update(over)
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    rc = main(["doctor", "--json", *args])
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == rc
    return rc, report


def by(report: dict[str, Any], check: str, level: str | None = None) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check and (level is None or f["level"] == level)]


def test_a_good_station_config_passes_with_every_area_reported(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, model_path, demo_images)
    rc, report = doctor(capsys, "-c", str(cfg))
    errors = [f for f in report["findings"] if f["level"] == "error"]
    assert rc == 0 and not errors, errors
    checks = {f["check"] for f in report["findings"]}
    assert {"python", "packages", "config", "gpu", "jetson", "camera", "engine", "network", "disk"} <= checks
    assert any("onnxruntime" in f["what"] for f in by(report, "packages", "ok"))
    assert any(str(demo_images) in f["what"] for f in by(report, "camera", "ok"))
    disk = " | ".join(f["what"] for f in by(report, "disk", "ok"))
    assert "state_dir" in disk and "sinks[0].path" in disk and f"GiB free at {tmp_path}" in disk
    if not nvidia_gpus(Host()):  # this host: the GPU finding says the CPU engines run, and is no error
        (gpu,) = by(report, "gpu")
        assert gpu["level"] == "ok" and "no NVIDIA GPU" in gpu["what"]


def test_text_report_ends_with_the_verdict(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, model_path, demo_images, engine={"type": "onnxruntime", "model": "missing.onnx"})
    assert main(["doctor", "-c", str(cfg), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] engine" in out and f"model {tmp_path / 'missing.onnx'} not found" in out
    assert "fix: copy the model there" in out
    assert out.rstrip().splitlines()[-1].endswith("error(s): something blocks a run")


def test_missing_model_is_an_error(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, model_path, demo_images, engine={"type": "auto", "model": "models/none.onnx"})
    rc, report = doctor(capsys, "-c", str(cfg))
    assert rc == 1
    (err,) = by(report, "engine", "error")
    assert "models/none.onnx" in err["what"] and err["fix"]


def test_a_busy_port_is_an_error(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path, model_path, demo_images, metrics={"host": "127.0.0.1", "port": port})
        rc, report = doctor(capsys, "-c", str(cfg), "--quick")
    assert rc == 1
    (err,) = by(report, "ports", "error")
    assert f"127.0.0.1:{port}" in err["what"] and "in use" in err["what"] and f":{port}" in err["fix"]
    # the same config with the port free again passes
    rc, report = doctor(capsys, "-c", str(cfg), "--quick")
    assert rc == 0 and by(report, "ports", "ok")


def test_an_invalid_config_is_an_error_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "cameras:\n  - type: replay\n    name: a\n    path: x\n    rate_pmm: 5\nengine: {type: onnxruntime}\n"
    )
    rc, report = doctor(capsys, "-c", str(cfg))
    assert rc == 1
    (err,) = by(report, "config", "error")
    assert "rate_pmm" in err["what"] and f"{cfg}:5" in err["what"] and "config check" in err["fix"]
    rc, report = doctor(capsys, "-c", str(tmp_path / "absent.yaml"))
    assert rc == 1 and "cannot read config" in by(report, "config", "error")[0]["what"]


def test_what_run_would_refuse_is_an_error(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cams = [{"type": "genicam", "name": "sim", "num_buffers": 4}]  # fewer buffers than the ring's 8 slots
    cfg = write_config(tmp_path, model_path, demo_images, cameras=cams)
    rc, report = doctor(capsys, "-c", str(cfg), "--quick")
    assert rc == 1
    assert any("num_buffers" in f["what"] for f in by(report, "config", "error")), by(report, "config")


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--no-such-flag"])
    assert exc.value.code == 2


def test_genicam_simulator_is_reached_and_a_missing_producer_is_an_error(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cams = [
        {"type": "genicam", "name": "sim"},
        {"type": "genicam", "name": "gige", "cti": "/opt/vendor/lib/ProducerGEV.cti"},
        {"type": "genicam", "name": "gone", "device": "no-such-serial"},
    ]
    cfg = write_config(tmp_path, model_path, demo_images, cameras=cams)
    rc, report = doctor(capsys, "-c", str(cfg))
    assert rc == 1
    ok = " | ".join(f["what"] for f in by(report, "camera", "ok"))
    errors = " | ".join(f["what"] for f in by(report, "camera", "error"))
    assert "camera sim:" in ok and "reachable via viky.cti" in ok
    assert "camera gige: GenTL producer /opt/vendor/lib/ProducerGEV.cti does not exist" in errors
    assert "camera gone: device 'no-such-serial' not found via viky.cti (devices: [0]" in errors


def fake_host(tmp_path: Path, mtu: int, rmem: int, jetson: str | None = None) -> Host:
    sys_root, proc_root, etc_root = tmp_path / "sys", tmp_path / "proc", tmp_path / "etc"
    nic = sys_root / "class" / "net" / "enP8p1s0"
    (nic / "device").mkdir(parents=True)
    (nic / "mtu").write_text(f"{mtu}\n")
    (nic / "operstate").write_text("up\n")
    lo = sys_root / "class" / "net" / "lo"  # virtual: no device, never judged
    lo.mkdir(parents=True)
    (lo / "mtu").write_text("65536\n")
    (lo / "operstate").write_text("unknown\n")
    core = proc_root / "sys" / "net" / "core"
    core.mkdir(parents=True)
    (core / "rmem_max").write_text(f"{rmem}\n")
    (core / "rmem_default").write_text(f"{rmem}\n")
    etc_root.mkdir()
    if jetson:
        (etc_root / "nv_tegra_release").write_text(jetson)
        (proc_root / "device-tree").mkdir()
        (proc_root / "device-tree" / "model").write_text("NVIDIA Jetson Orin Nano Developer Kit\0")
    return Host(sys_root, proc_root, etc_root, {})


def test_gige_host_settings(tmp_path: Path) -> None:
    low = check_network(fake_host(tmp_path / "a", 1500, 212992), gige=True)
    warns = [f for f in low if f.level == "warn"]
    assert len(warns) == 3  # MTU, rmem_max, rmem_default
    assert "enP8p1s0: MTU 1500, below 9000" in warns[0].what and "mtu 9000" in (warns[0].fix or "")
    assert not any(f.what.startswith("lo:") for f in low)
    assert "sysctl -w net.core.rmem_max=33554432" in (warns[1].fix or "")
    good = check_network(fake_host(tmp_path / "b", GIGE_MTU, RMEM_WANT), gige=True)
    assert [f.level for f in good] == ["ok", "ok", "ok"]
    # without GigE cameras the same low settings are notes, not warnings
    assert {f.level for f in check_network(fake_host(tmp_path / "c", 1500, 212992), gige=False)} == {"ok"}


def test_jetson_power_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_host(tmp_path, 9000, RMEM_WANT, jetson="# R36 (release), REVISION: 4.0, GCID: 1\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvpmodel"  # stands in for L4T's tool: prints what `nvpmodel -q` prints
    tool.write_text("#!/bin/sh\necho 'NV Power Mode: 15W'\necho 1\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    found = check_jetson(host)
    assert found[0].level == "ok" and "Jetson Orin Nano" in found[0].what and "R36" in found[0].what
    assert found[-1].level == "warn" and "power mode 15W" in found[-1].what
    assert "nvpmodel -m 0" in (found[-1].fix or "")
    tool.write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    assert check_jetson(host)[-1].level == "ok"
    assert check_jetson(Host(tmp_path / "sys", tmp_path / "proc", tmp_path / "nowhere", {}))[0].what.startswith(
        "not a Jetson"
    )
    assert nvidia_gpus(host) == ["NVIDIA Jetson Orin Nano Developer Kit"]


def test_tensorrt_asked_for_on_a_host_without_a_gpu_is_an_error(
    tmp_path: Path, model_path: Path, demo_images: Path
) -> None:
    if nvidia_gpus(Host()):
        pytest.skip("this host has an NVIDIA GPU")
    cfg = write_config(tmp_path, model_path, demo_images, engine={"type": "tensorrt", "model": str(model_path)})
    findings = run_doctor(cfg, quick=True, host=Host(env={}))
    errs = [f for f in findings if f.level == "error"]
    assert errs and any(f.check in ("gpu", "engine") for f in errs)


def test_cached_tensorrt_plan_is_judged_against_the_installed_tensorrt(
    tmp_path: Path, model_path: Path, demo_images: Path
) -> None:
    from edge.config import load_config
    from edge.doctor.station import _tensorrt_cache
    from edge.engines.model import model_id_of
    from edge.engines.tensorrt import plan_file_name

    cache = tmp_path / "plans"
    cfg = load_config(
        write_config(
            tmp_path,
            model_path,
            demo_images,
            engine={"type": "tensorrt", "model": str(model_path), "engine_cache_dir": str(cache)},
        )
    )
    model_id = model_id_of(model_path)
    none = _tensorrt_cache(cfg, model_path, "10.3.0")
    assert none.level == "warn" and "first start builds one" in none.what
    cache.mkdir()
    (cache / plan_file_name(model_id, "8.6.2", "Orin", True, 1, pixels=True)).write_bytes(b"old")
    (cache / plan_file_name("0123456789abcdef", "10.3.0", "Orin", True, 1)).write_bytes(b"other model")
    stale = _tensorrt_cache(cfg, model_path, "10.3.0")
    assert stale.level == "warn" and "another TensorRT" in stale.what and "trt8.6.2" in stale.what
    (cache / plan_file_name(model_id, "10.3.0", "Orin", True, 1, pixels=True)).write_bytes(b"plan")
    fits = _tensorrt_cache(cfg, model_path, "10.3.0")
    assert fits.level == "ok" and "fits TensorRT 10.3.0" in fits.what
    assert _tensorrt_cache(cfg, model_path, None).level == "error"


def test_an_opcua_server_sink_on_a_busy_port_is_an_error(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        sink = {
            "type": "opcua-server",
            "port": port,
            "certificate": str(pki / "cert.der"),
            "private_key": str(pki / "key.pem"),
            "trusted_dir": str(pki / "trusted"),
        }
        cfg = write_config(tmp_path, model_path, demo_images, sinks=[sink])
        rc, report = doctor(capsys, "-c", str(cfg), "--quick")
    assert rc == 1
    (err,) = by(report, "ports", "error")
    assert err["what"].startswith(f"sinks[0] (opcua-server): cannot listen on 127.0.0.1:{port}")
    # its endpoint path ("edge-inspect") is a name, not a folder to check for space
    assert not any("sinks[0].path" in f["what"] for f in by(report, "disk"))


def test_ports_held_by_the_running_service_itself_do_not_block(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """doctor on a live station: the metrics port is taken, by edge-inspect itself."""
    from edge.app import build_service
    from edge.config import load_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg_path = write_config(tmp_path, model_path, demo_images, metrics={"host": "127.0.0.1", "port": port})
    cfg = load_config(cfg_path)
    service = build_service(cfg)
    service.start(serve_metrics=True, config=cfg)
    try:
        rc, report = doctor(capsys, "-c", str(cfg_path), "--quick")
    finally:
        service.stop()
    assert rc == 0, [f for f in report["findings"] if f["level"] == "error"]
    (held,) = [f for f in by(report, "ports", "ok") if f"127.0.0.1:{port}" in f["what"]]
    assert "held by a running edge-inspect" in held["what"]


def test_what_waits_in_the_outbox_is_reported_per_sink(
    tmp_path: Path, model_path: Path, demo_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.errors import TransientSinkError
    from edge.sinks.durable import DurableSink, JournalConfig
    from edge.sinks.journal import JournalEntry
    from edge.sinks.outbox import Outbox
    from tests.edge.test_sinks_durable import verdict

    class Down(DurableSink):  # a far side that never answers: everything stays in the outbox
        def __init__(self, name: str) -> None:
            super().__init__(name, JournalConfig(retry_initial_s=0.01, retry_max_s=0.05), None)

        def deliver(self, entries: list[JournalEntry]) -> int | None:
            raise TransientSinkError("down")

    cfg = write_config(tmp_path, model_path, demo_images)
    rc, report = doctor(capsys, "-c", str(cfg))
    assert [f["level"] for f in by(report, "outbox")] == ["ok"] and "no outbox yet" in by(report, "outbox")[0]["what"]
    members = [Down("jsonl"), Down("retired")]  # "retired": a sink the config no longer names
    outbox = Outbox(members, tmp_path / "state" / "journal" / "outbox.sqlite")
    outbox.start()
    for m in members:
        m.start()
    for i in range(3):
        outbox.submit(verdict(i))
    outbox.close(5)
    for m in members:
        m.close(0.2)
    rc, report = doctor(capsys, "-c", str(cfg))
    found = {f["what"]: f for f in by(report, "outbox", "warn")}
    assert any(w.startswith("3 verdict(s) wait in the outbox for sink jsonl") for w in found), found
    retired = [f for w, f in found.items() if "sink retired" in w and "no longer names" in w]
    assert retired and "dropped at the next start" in retired[0]["fix"]
    assert rc == 0  # a backlog does not block a run: the run delivers it
