"""`edge-inspect` command line: run, demo, config check, and the model tools."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from edge.errors import ConfigError, EdgeInspectError

log = logging.getLogger("edge")


class StatusLine:
    """One live status line (fps, verdict counts, p99) instead of a log flood."""

    def __init__(self, line: Any, stream: TextIO, interval_s: float | None = None) -> None:
        self._line = line
        self._stream = stream
        self._tty = stream.isatty()
        self._interval = interval_s if interval_s is not None else (0.5 if self._tty else 5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-line", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _emit(self, final: bool = False) -> None:
        text = self._line()
        if self._tty:
            self._stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._emit(final=True)


# libraries that log every request, notification or reconnect attempt at INFO (asyncua: each
# publish with its whole payload); at the service's INFO they say only warnings and errors
CHATTY_LIBRARIES = ("asyncua",)


def _level(name: str) -> int:
    return int(getattr(logging, name))


def _setup_logging(level: str, quiet_status: bool, redactor: Any = None) -> None:
    from edge.redact import Redactor, install_logging

    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_logging(redactor or Redactor())  # every log line: env secrets, URL passwords, secret keys
    for name in CHATTY_LIBRARIES:  # their INFO is a line per request or notification: ours is DEBUG
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else max(logging.WARNING, _level(level)))
    if quiet_status:
        logging.getLogger("edge.verdicts").setLevel(logging.WARNING)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value}); leave --frames out to run until stopped")
    return value


def _preflight(cfg: Any) -> None:
    """Refuse, before the model loads, what `config check` refuses (same messages)."""
    from edge.preflight import preflight

    problems = preflight(cfg)
    where = cfg.path if cfg.path is not None else "config"
    if len(problems) == 1:  # one clear line (a port in use, a missing model)
        raise ConfigError(f"{where}: {problems[0]}")
    if problems:
        raise ConfigError(f"{where}: {len(problems)} error(s)\n  " + "\n  ".join(problems), problems)


def _run_service(
    cfg: Any,
    max_frames: int | None,
    summary_json: Path | None,
    show_status: bool,
    serve_after: bool = False,
    extra_summary: Any = None,
    before_cameras: Any = None,
) -> int:
    from edge.app import build_service
    from edge.sdnotify import ServiceWatchdog

    watchdog = ServiceWatchdog()  # under systemd (Type=notify): READY, STATUS, WATCHDOG; else a no-op
    from edge.redact import Redactor

    redactor = Redactor(getattr(cfg, "secrets", ()))
    _preflight(cfg)
    watchdog.status("loading the model, opening the cameras")
    service = build_service(cfg, max_frames=max_frames)
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # SIGHUP (terminal closed, `systemctl kill -s HUP`) drains like SIGTERM: no verdict is cut off
    stops = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, on_signal) for s in stops}
    status = StatusLine(service.pipeline.stats.status_line, sys.stderr) if show_status else None
    try:
        service.start(serve_metrics=True, config=cfg, before_cameras=before_cameras)
        watchdog.start(service.snapshot)
        if status:
            status.start()
        url = next((c.url for c in service.components if getattr(c, "url", None)), None)
        if url:
            print(f"edge-inspect: status page {url}", file=sys.stderr, flush=True)
        while not stop_requested.is_set() and not service.pipeline.wait(0.2):
            pass
        if serve_after and url and not stop_requested.is_set():  # the frames ended: keep the page up
            print(f"edge-inspect: frames done; still serving {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            stop_requested.wait()
    finally:
        watchdog.stop()
        summary = service.stop()
        if extra_summary is not None:  # the demo's own PLC subscribers (plc.demo_harness)
            summary.update(extra_summary(summary))
        if status:
            status.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    summary["config_version"] = cfg.config_version
    warnings, lost = _sink_warnings(summary.get("sinks") or [])
    if warnings:
        summary["warnings"] = warnings
    if lost:
        summary.setdefault("errors", []).extend(lost)
    summary = redactor.redact_obj(summary)
    text = json.dumps(summary, indent=2)
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(text + "\n")
        log.info("summary written to %s", summary_json)
    else:
        print(text)
    for w in summary.get("warnings", []):
        print(f"edge-inspect: warning: {w}", file=sys.stderr)
    if summary.get("errors"):
        for e in summary["errors"]:
            print(f"edge-inspect: {e}", file=sys.stderr)
        return 1
    return 0


def _sink_warnings(sinks: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """What the sinks' counters say a user must know at exit: (warnings, verdicts lost for good).

    A best-effort sink's drops are a warning; verdicts still waiting in a durable sink's journal
    (delivered at the next start) are a warning; verdicts a durable sink dropped are an error."""
    warnings: list[str] = []
    lost: list[str] = []
    for s in sinks:
        name, kind = s.get("name", "?"), s.get("kind", "")
        if kind == "outbox":  # what it dropped, each member counted and reports
            continue
        dropped, backlog, errors = int(s.get("dropped") or 0), int(s.get("backlog") or 0), int(s.get("errors") or 0)
        why = f" (last error: {s['last_error']})" if s.get("last_error") else ""
        written = f"{s.get('written', 0)} of {s.get('submitted', 0)} verdict(s) written"
        if dropped and kind == "durable":
            lost.append(f"sink {name}: {dropped} verdict(s) dropped, {written}{why}")
        elif dropped:
            warnings.append(f"sink {name}: {dropped} verdict(s) dropped (best effort), {written}{why}")
        if backlog:
            warnings.append(f"sink {name}: {backlog} verdict(s) not yet delivered, kept for the next start{why}")
        elif errors and not dropped:
            warnings.append(f"sink {name}: {errors} write error(s), recovered; {written}{why}")
    return warnings, lost


def cmd_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.redact import Redactor

    cfg = load_config(args.config)
    args.redactor = Redactor(cfg.secrets)
    _setup_logging(args.log_level or cfg.app.log_level, quiet_status=False, redactor=args.redactor)
    return _run_service(cfg, args.frames, args.summary_json, show_status=not args.no_status)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import demo_config
    from plc.demo_harness import PlcDemo

    _setup_logging(args.log_level or "INFO", quiet_status=True)
    plc = PlcDemo(args.out).start()  # local mosquitto + the demo's own MQTT and OPC UA subscribers
    try:
        cfg = demo_config(
            out_dir=args.out,
            engine=args.engine,
            model=args.model,
            rate_ppm=args.rate_ppm,
            metrics_port=args.metrics_port,
            web_port=None if args.no_web else args.web_port,
            extra_sinks=plc.sinks(),
        )
        log.info("demo: %s frames from the bundled PCB images, verdicts in %s", args.frames or "unlimited", args.out)
        return _run_service(
            cfg,
            args.frames,
            args.summary_json,
            show_status=True,
            serve_after=args.serve_after,
            extra_summary=lambda s: {"plc": plc.summary(s)},
            before_cameras=plc.wait_subscribed,
        )
    finally:
        plc.stop()


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.preflight import preflight
    from edge.redact import Redactor

    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"{args.file}: {len(exc.errors)} error(s)", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return 2
    # everything `run` checks before opening the cameras and loading the runtime, same messages
    problems = [Redactor(cfg.secrets).redact(p) for p in preflight(cfg)]
    if problems:
        print(f"{args.file}: {len(problems)} error(s)", file=sys.stderr)
        for e in problems:
            print(f"  {e}", file=sys.stderr)
        return 2
    print(
        f"{args.file}: OK ({len(cfg.cameras)} camera(s), engine {cfg.engine.type}, "
        f"{len(cfg.sinks)} sink(s), config version {cfg.config_version})"
    )
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from edge.config_docs import reference

    text = reference()
    if args.out is not None:
        args.out.write_text(text)
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-inspect", description="Real-time inline inspection service.")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service from a config file")
    run.add_argument("-c", "--config", type=Path, required=True)
    run.add_argument("--frames", type=_positive_int, default=None, help="stop after N frames (N >= 1)")
    run.add_argument("--summary-json", type=Path, default=None)
    run.add_argument("--no-status", action="store_true", help="no live status line")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run the whole pipeline on bundled PCB images and the shipped model")
    demo.add_argument("--frames", type=_positive_int, default=None, help="stop after N frames (default: until Ctrl-C)")
    demo.add_argument("--summary-json", type=Path, default=None)
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for verdicts.jsonl")
    demo.add_argument("--engine", default="auto", help="engine type (auto, onnxruntime, openvino, ...)")
    demo.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    demo.add_argument("--rate-ppm", type=float, default=1200.0, help="line rate in parts per minute")
    demo.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on 127.0.0.1:PORT")
    demo.add_argument("--web-port", type=int, default=8080, help="status page on 127.0.0.1:PORT (0: any free port)")
    demo.add_argument("--no-web", action="store_true", help="no status page")
    demo.add_argument(
        "--serve-after", action="store_true", help="keep serving the status page after the frames end (Ctrl-C stops)"
    )
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="configuration tools")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a config file and print every error with its path")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)
    ref = csub.add_parser("reference", help="print the configuration reference (Markdown)")
    ref.add_argument("--out", type=Path, default=None)
    ref.set_defaults(func=cmd_config_reference)

    try:
        from edge.training.cli import add_commands
    except ImportError:  # pragma: no cover - the training tools are part of the package
        pass
    else:
        add_commands(sub)
    from edge.quantization.cli import add_quantize_command

    add_quantize_command(sub)
    from edge.doctor.cli import add_doctor_command

    add_doctor_command(sub)
    from plc.cli import add_certs_command

    add_certs_command(sub)
    return p


def _redacted(args: argparse.Namespace, text: str) -> str:
    from edge.redact import Redactor

    redactor = getattr(args, "redactor", None) or Redactor()
    return str(redactor.redact(text))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except ConfigError as exc:
        lines = [str(exc).splitlines()[0], *exc.errors] if len(exc.errors) > 1 else [str(exc)]
        print(_redacted(args, "\n  ".join(lines)), file=sys.stderr)
        return 2
    except EdgeInspectError as exc:
        print(_redacted(args, f"edge-inspect: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
