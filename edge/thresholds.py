"""The calibrated-thresholds sidecar (`<model>.thresholds.yaml`): format, path and loader.

Written by `edge-inspect calibrate` (edge/training/calibrate.py), read by the decision rules.
`thresholds_file: auto` (decision rules) and `--thresholds auto` (eval, quantize) both mean
`auto_sidecar(model)`: the sidecar beside the model when there is one made for that model file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from edge.engines.model import model_id_of
from edge.errors import ConfigError

log = logging.getLogger(__name__)


def sidecar_path(model_path: Path) -> Path:
    """`<dir>/<stem>.thresholds.yaml` for a model file."""
    return model_path.with_name(f"{model_path.stem}.thresholds.yaml")


def model_file_id(path: Path) -> str:
    """The `model_id` verdicts carry: first 16 hex digits of the sha256 of the model file, or
    of an OpenVINO IR's .xml and .bin together (as the OpenVINO engine computes it)."""
    files = [path]
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        files.append(path.with_suffix(".bin"))
    try:
        return model_id_of(*files)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read model file ({exc})") from exc


@dataclass(frozen=True)
class Thresholds:
    """A loaded thresholds sidecar."""

    model_id: str
    target_part_recall: float
    thresholds: Mapping[str, float]
    measured: Mapping[str, float | int] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    reachable: bool = True
    floor: float | None = None
    # golden-reference models: decision.difference_evidence.min_pixels chosen for this model (by
    # nested cross-fitting, scripts/reference_drift.py --write-sidecar); used where the config
    # does not set min_pixels itself
    evidence_min_pixels: int | None = None

    def vector(self, names: Sequence[str]) -> np.ndarray:
        """Thresholds in the model's class order; every class must be present, no others."""
        missing = [n for n in names if n not in self.thresholds]
        extra = [n for n in self.thresholds if n not in names]
        if missing or extra:
            raise ConfigError(f"thresholds do not fit the model's classes: missing {missing}, unknown {extra}")
        return np.array([self.thresholds[n] for n in names], np.float64)


def load_thresholds(path: Path, model_path: Path | None = None, *, check_model_id: bool = True) -> Thresholds:
    """Read and validate a sidecar; with model_path and check_model_id, refuse one for another model."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read thresholds file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        model_id = doc["model_id"]
        target = float(doc["target_part_recall"])
        raw = doc["thresholds"]
    except KeyError as exc:
        raise ConfigError(f"{path}: missing key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: target_part_recall is not a number") from exc
    if not isinstance(model_id, str) or not model_id:
        raise ConfigError(f"{path}: model_id must be a non-empty string")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: thresholds must be a non-empty mapping of class name to number")
    thresholds: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{path}: thresholds.{name} must be a number within 0..1, got {value!r}")
        thresholds[str(name)] = float(value)
    measured = doc.get("measured") or {}
    data = doc.get("data") or {}
    if not isinstance(measured, dict) or not isinstance(data, dict):
        raise ConfigError(f"{path}: 'measured' and 'data' must be mappings")
    if model_path is not None and check_model_id:
        actual = model_file_id(model_path)
        if actual != model_id:
            raise ConfigError(f"{path}: calibrated for model {model_id}, but {model_path} is {actual}; recalibrate")
    floor = doc.get("floor")
    evidence = doc.get("difference_evidence") or {}
    if not isinstance(evidence, dict):
        raise ConfigError(f"{path}: 'difference_evidence' must be a mapping")
    min_pixels = evidence.get("min_pixels")
    if min_pixels is not None and (isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1):
        raise ConfigError(f"{path}: difference_evidence.min_pixels must be a whole number >= 1, got {min_pixels!r}")
    return Thresholds(
        model_id=model_id,
        target_part_recall=target,
        thresholds=MappingProxyType(thresholds),
        measured=MappingProxyType(dict(measured)),
        data=MappingProxyType(dict(data)),
        created=str(doc.get("created", "")),
        reachable=bool(doc.get("reachable", True)),
        floor=float(floor) if isinstance(floor, (int, float)) else None,
        evidence_min_pixels=min_pixels,
    )


def auto_sidecar(model_path: Path | None) -> tuple[Thresholds, Path] | None:
    """The model's own sidecar and its path, or None where there is none. A sidecar that does
    not load (made for another model file, malformed) is ignored with a warning naming it."""
    if model_path is None:
        return None
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        return load_thresholds(path, model_path), path
    except ConfigError as exc:
        log.warning("ignoring thresholds sidecar %s: %s", path, exc)
        return None
