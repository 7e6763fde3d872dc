"""Credential redaction: environment secrets, URL passwords, secret-looking keys; logs and objects."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from edge.config import parse_config
from edge.errors import ConfigError
from edge.redact import Redactor, install_logging, is_secret_key, uninstall_logging


@pytest.fixture
def redacted_logging() -> Iterator[None]:
    yield
    uninstall_logging()


def test_text_redaction() -> None:
    r = Redactor(["s3cr3t-pw", "1", "true"])  # too short / common values are not secrets
    assert (
        r.redact("open rtsp://admin:s3cr3t-pw@10.0.0.5:554/s failed") == "open rtsp://admin:***@10.0.0.5:554/s failed"
    )
    assert r.redact("rtsp://bob:other@h/x and http://h/x") == "rtsp://bob:***@h/x and http://h/x"
    assert r.redact("mqtt password=abc123 token: xyz") == "mqtt password=*** token: ***"
    assert r.redact('{"api_key": "K1", "a": 1}') == '{"api_key": "***", "a": 1}'
    assert r.redact("frame 1 passes, true") == "frame 1 passes, true"
    assert r.redact("value s3cr3t-pw!") == "value ***!"


def test_object_redaction_keeps_counts() -> None:
    r = Redactor(["s3cr3t-pw"])
    summary = {"verdicts": {"pass": 3, "reject": 1}, "password": "x", "errors": ["camera: s3cr3t-pw"], "n": 2}
    assert r.redact_obj(summary) == {
        "verdicts": {"pass": 3, "reject": 1},
        "password": "***",
        "errors": ["camera: ***"],
        "n": 2,
    }
    assert is_secret_key("mqtt_password") and is_secret_key("token") and not is_secret_key("pass")


def test_config_records_environment_values_and_secret_keys() -> None:
    text = (
        "cameras:\n  - {type: opencv, source: 'rtsp://u:${CAM_PW}@127.0.0.1/s'}\n"
        "engine: {type: onnxruntime, model: m.onnx}\n"
    )
    cfg = parse_config(text, env={"CAM_PW": "pw-from-env"})
    assert "pw-from-env" in cfg.secrets


def test_config_errors_do_not_show_secret_values() -> None:
    text = (
        "cameras:\n  - {type: opencv, source: 'rtsp://u:${CAM_PW}@127.0.0.1/s', width: '${CAM_PW}'}\n"
        "engine: {type: onnxruntime, model: m.onnx}\n"
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(text, env={"CAM_PW": "pw-from-env"})
    assert "width" in str(exc.value) and "pw-from-env" not in str(exc.value)
    assert all("pw-from-env" not in e for e in exc.value.errors)


def test_log_records_are_redacted_on_every_handler(caplog: pytest.LogCaptureFixture, redacted_logging: None) -> None:
    install_logging(Redactor(["pw-from-env"]))
    log = logging.getLogger("edge.test.redact")
    with caplog.at_level(logging.INFO):
        log.warning("camera %s lost", "rtsp://u:pw-from-env@127.0.0.1/s")
        try:
            raise RuntimeError("cannot open rtsp://u:pw-from-env@127.0.0.1/s")
        except RuntimeError:
            log.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "u:***@127.0.0.1" in text and "pw-from-env" not in text
