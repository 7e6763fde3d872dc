"""Credential redaction in one place: every log line, error message and summary goes through it.

What is hidden (replaced by ``***``):
- every value a config took from the environment (``${CAM_PW}``; `edge.config.expand_env`
  records them in `LoadedConfig.secrets`), wherever it appears, whole;
- the password of URL user info (``rtsp://user:pw@host`` -> ``rtsp://user:***@host``);
- the value after a secret-looking key (password, passwd, token, secret, api key, private
  key, credential...) written as ``key=value``, ``"key": "value"`` or ``key: value`` in text, and
  the value of such a key in a mapping (`redact_obj`).

`install_logging(redactor)` makes every log record pass through it: a `logging.Filter` on every
handler there is, and a record factory for handlers added later (uvicorn, libraries), which
also redacts the traceback of a logged exception. The CLI installs it once per run.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
MIN_SECRET_LEN = 4  # shorter environment values ("1", "on") are not treated as secrets
_NOT_SECRET = frozenset({"true", "false", "none", "null", "yes", "no", "auto", "localhost", "127.0.0.1", "0.0.0.0"})

_KEY = (
    r"(?:[A-Za-z0-9_.-]*?(?:pass(?:word|wd|phrase)|pwd|token|secret|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|credentials?|auth[_-]?key)[A-Za-z0-9_-]*)"
)
SECRET_KEY = re.compile(rf"^{_KEY}$|^key$", re.IGNORECASE)
# key=value / key: value / "key": "value" (the value up to a space, quote, comma, ampersand or brace)
_KEY_VALUE = re.compile(
    rf"(?P<key>\b{_KEY}|\bkey)(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&}}\]]+)", re.IGNORECASE
)
# scheme://user:password@host
_USERINFO = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?P<at>@)")


def is_secret_key(key: object) -> bool:
    """True for a mapping key that names a credential (password, token, secret, api_key...)."""
    return isinstance(key, str) and bool(SECRET_KEY.match(key))


class Redactor:
    """Hides known secret values, URL passwords and secret-looking keys' values in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def add(self, *secrets: str) -> None:
        """Treat these values as secrets from now on (too short or common ones are ignored)."""
        keep = {s for s in secrets if isinstance(s, str) and self._worth_hiding(s)}
        with self._lock:
            merged = sorted(set(self._secrets) | keep, key=len, reverse=True)  # longest first
            self._secrets = tuple(merged)
            self._pattern = re.compile("|".join(re.escape(s) for s in merged)) if merged else None

    @staticmethod
    def _worth_hiding(value: str) -> bool:
        v = value.strip()
        return len(v) >= MIN_SECRET_LEN and v.lower() not in _NOT_SECRET

    def redact(self, text: str) -> str:
        """`text` with every secret hidden."""
        if not text:
            return text
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if "://" in text:
            text = _USERINFO.sub(lambda m: m.group("pre") + MASK + m.group("at"), text)
        return _KEY_VALUE.sub(_mask_value, text)

    def redact_obj(self, obj: Any) -> Any:
        """A copy of a JSON-like value (summary, health) with secrets hidden; secret keys' values masked."""
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, Mapping):
            return {
                k: (MASK if is_secret_key(k) and v not in (None, "") else self.redact_obj(v)) for k, v in obj.items()
            }
        if isinstance(obj, (list, tuple)):
            return [self.redact_obj(v) for v in obj]
        return obj


def _mask_value(m: re.Match[str]) -> str:
    value = m.group("value")
    if value == MASK or value.startswith(MASK):
        return m.group(0)
    return m.group("key") + m.group("sep") + MASK


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its formatted traceback) with secrets hidden."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self.redactor)
        return True


_DONE = "_edge_redacted"


def redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Format the record's message now, redacted (idempotent)."""
    if getattr(record, _DONE, False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what logging would show, redacted
        message = f"{record.msg} {record.args}"
    record.msg = redactor.redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redactor.redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.redact(record.stack_info)
    setattr(record, _DONE, True)


def install_logging(redactor: Redactor, root: logging.Logger | None = None) -> RedactingFilter:
    """Redact every log record: a filter on every existing handler, and a record factory for the rest."""
    flt = RedactingFilter(redactor)
    root = root or logging.getLogger()
    loggers: list[logging.Logger] = [root]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, RedactingFilter) for f in h.filters):
                h.addFilter(flt)
    current = logging.getLogRecordFactory()
    if getattr(current, "_edge_redacting", False):
        current._edge_filter = flt  # type: ignore[attr-defined]
    else:
        base = current

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            redact_record(record, factory._edge_filter.redactor)  # type: ignore[attr-defined]
            return record

        factory._edge_redacting = True  # type: ignore[attr-defined]
        factory._edge_base = base  # type: ignore[attr-defined]
        factory._edge_filter = flt  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
    return flt


def uninstall_logging() -> None:
    """Undo `install_logging` (tests): the record factory and every handler's filter."""
    factory = logging.getLogRecordFactory()
    base = getattr(factory, "_edge_base", None)
    if base is not None:
        logging.setLogRecordFactory(base)
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            for f in [f for f in h.filters if isinstance(f, RedactingFilter)]:
                h.removeFilter(f)
