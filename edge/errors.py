"""The exception hierarchy: everything edge-inspect raises on purpose derives from EdgeInspectError."""

from __future__ import annotations


class EdgeInspectError(Exception):
    """Root of every error edge-inspect raises deliberately."""


class ConfigError(EdgeInspectError):
    """A configuration file or value is invalid; the message names the path in the file."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors: list[str] = errors if errors is not None else [message]


class ModelError(EdgeInspectError):
    """A model file cannot be used: not ONNX, unsupported layout, wrong task or class count."""


class EngineError(EdgeInspectError):
    """An inference runtime failed to load or run a model."""


class EngineUnavailableError(EngineError):
    """The runtime an engine needs is not installed on this host."""


class CameraError(EdgeInspectError):
    """A camera cannot be opened or configured."""


class CameraLostError(CameraError):
    """A camera that was streaming went away; the acquisition loop reconnects it."""


class CameraFatalError(CameraError):
    """A permanent problem with a camera's whole source or settings (producer file missing, pixel
    format or buffer count refused, a replay source with no decodable image): reconnecting will not
    help, so the acquisition stops that camera with this message (shown in the summary)."""


class CameraNodeError(CameraFatalError):
    """A GenICam feature node the configuration asks for is missing or not writable."""


class SinkError(EdgeInspectError):
    """A verdict sink cannot be set up."""


class DatasetError(EdgeInspectError):
    """A dataset or annotation file is malformed or missing."""


class TransientSinkError(SinkError):
    """A sink's far side is unreachable or refused for now (broker down, disk full): retry later."""


class PermanentSinkError(SinkError):
    """A sink's far side will never take these verdicts (rejected payload, bad topic): drop and count."""


class CameraSourceError(CameraError):
    """A permanent problem with one item of a camera's source (unreadable file, missing reference).

    Not an outage: reconnecting will not help. The item is decided FAILSAFE with this message and
    the source goes on with its next item."""


class InvalidFrameError(EdgeInspectError):
    """A frame cannot be trusted or judged (undecodable, truncated, wrong size, blank, no reference):
    it is decided FAILSAFE `invalid_frame` with this message, never judged."""
