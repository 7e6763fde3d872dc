"""Decision rules: pure functions from detections to a PASS/REJECT verdict with its reasons.

A detection *counts* as a defect when it passes every filter in force for its class:
minimum confidence (per class, else the calibrated sidecar, else the default), minimum box
area, inside a region of interest (if any are set; by box centre) and outside every ignore
zone. The part is rejected when the number of counting detections of a class exceeds that
class's `max_count` (default 0), or the total exceeds `max_total` when that is set.

Golden-reference models add one filter (`difference_evidence`): a detection counts only where
its box holds at least `min_pixels` pixels that really differ from the (aligned) reference
(`edge.reference.DifferenceEvidence`); the caller passes the per-box counts as `evidence`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.errors import ConfigError
from edge.thresholds import auto_sidecar, load_thresholds
from edge.verdict import Detection, Detections, Reason, VerdictKind

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


class ClassRule(BaseModel):
    """Overrides for one class."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float | None = Field(None, ge=0, le=1)
    min_area_px: float | None = Field(None, ge=0)
    max_count: int | None = Field(None, ge=0, description="Defects of this class a part may have.")
    ignore: bool = Field(False, description="Never reject for this class.")


DEFAULT_MIN_PIXELS = 4


class DifferenceEvidenceConfig(BaseModel):
    """`decision.difference_evidence`: golden-reference models only (see `edge.reference.DifferenceEvidence`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="A detection counts only where its box differs from the reference.")
    min_pixels: int | None = Field(
        None,
        ge=1,
        description="Different pixels a detection's box must hold to count (unset: the value the model's "
        f"thresholds sidecar was chosen with, else {DEFAULT_MIN_PIXELS}).",
    )
    tolerance_px: int = Field(
        1,
        ge=0,
        le=4,
        description="Misregistration forgiven: a part pixel matching any reference pixel this close is no difference.",
    )
    level: int = Field(
        48, ge=1, le=255, description="Grey levels beyond the reference neighbourhood's range that make a difference."
    )
    margin_px: int = Field(2, ge=0, le=16, description="The box is grown by this much before counting.")


class DecisionConfig(BaseModel):
    """The `decision:` section."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(0.25, ge=0, le=1, description="Default per-class threshold.")
    min_area_px: float = Field(0.0, ge=0, description="Boxes smaller than this (px^2) are ignored.")
    max_count: int = Field(0, ge=0, description="Defects per class a part may have and still pass.")
    max_total: int | None = Field(None, ge=0, description="Defects of all classes a part may have.")
    classes: dict[str, ClassRule] = Field(default_factory=dict, description="Per-class overrides by class name.")
    regions_of_interest: list[Box] = Field(
        default_factory=list, description="x1,y1,x2,y2 in camera px; only defects centred inside count."
    )
    ignore_zones: list[Box] = Field(
        default_factory=list, description="x1,y1,x2,y2 in camera px; defects centred inside are ignored."
    )
    thresholds_file: str | Literal["auto"] | None = Field(
        "auto",
        description="Calibrated per-class thresholds (sidecar YAML); 'auto' = <model>.thresholds.yaml if present.",
    )
    difference_evidence: DifferenceEvidenceConfig = Field(
        default_factory=DifferenceEvidenceConfig,
        description="Golden-reference models: a detection must show a real difference against the reference.",
    )

    @field_validator("regions_of_interest", "ignore_zones")
    @classmethod
    def _boxes_valid(cls, boxes: list[Box]) -> list[Box]:
        for b in boxes:
            if not (b[2] > b[0] and b[3] > b[1]):
                raise ValueError(f"box {list(b)} must have x2 > x1 and y2 > y1")
        return boxes


@dataclass(frozen=True)
class CompiledRules:
    """Decision rules resolved against a model's class names, as arrays indexed by class id."""

    names: tuple[str, ...]
    min_conf: np.ndarray  # float32 (nc,)
    min_area: np.ndarray  # float32 (nc,)
    max_count: np.ndarray  # int64 (nc,)
    ignored: np.ndarray  # bool (nc,)
    max_total: int | None
    rois: np.ndarray  # float32 (r, 4)
    ignore_zones: np.ndarray  # float32 (z, 4)
    threshold_source: str
    min_evidence_px: int = 0  # difference_evidence.min_pixels when enabled, else 0 (off)
    evidence_settings: tuple[int, int, int] = (1, 48, 2)  # difference_evidence (tolerance_px, level, margin_px)
    set_name: str = "default"  # the threshold set these rules are (named by ServiceControl on each change)
    rules_id: str = ""  # fingerprint of the effective rules (`rules_fingerprint`): equal ids judge alike

    def min_confidence(self) -> float:
        """The lowest threshold in force: the engine may drop anything below it."""
        active = self.min_conf[~self.ignored]
        return float(active.min()) if active.size else 1.0


def rules_fingerprint(rules: CompiledRules) -> str:
    """A short content hash of what decides: the per-class thresholds as resolved (config, sidecar),
    the counts, regions, ignore zones and the difference-evidence rule. Two rule sets with the same
    fingerprint judge every detection alike, however they were written; a changed sidecar shows."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(repr((rules.names, rules.max_total, rules.min_evidence_px, rules.evidence_settings)).encode())
    for a in (rules.min_conf, rules.min_area, rules.max_count, rules.ignored, rules.rois, rules.ignore_zones):
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def evidence_min_pixels(config: DifferenceEvidenceConfig, calibrated: int | None) -> int:
    """The difference-evidence rule's minimum (0: off): the config's own `min_pixels` where it
    sets one, else the one the thresholds sidecar was calibrated with, else the default."""
    if not config.enabled:
        return 0
    if config.min_pixels is not None:
        return config.min_pixels
    return calibrated if calibrated is not None else DEFAULT_MIN_PIXELS


def compile_rules(
    config: DecisionConfig, names: Sequence[str], model_path: Path | None = None, base_dir: Path | None = None
) -> CompiledRules:
    """Resolve the config against the model's classes. Unknown class names are an error."""
    nc = len(names)
    unknown = sorted(set(config.classes) - set(names))
    if unknown:
        raise ConfigError(f"decision.classes: {unknown} are not classes of the model ({list(names)})")

    sidecar: dict[str, float] = {}
    sidecar_min_pixels: int | None = None
    source = "config"
    tf = config.thresholds_file
    if tf == "auto":
        found = auto_sidecar(model_path)  # a sidecar left over from another model is not used
        if found is not None:
            sidecar, source = dict(found[0].thresholds), str(found[1])
            sidecar_min_pixels = found[0].evidence_min_pixels
    elif tf:
        p = Path(tf)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if not p.is_file():
            raise ConfigError(f"decision.thresholds_file: {p} does not exist")
        loaded = load_thresholds(p, model_path)
        sidecar, sidecar_min_pixels = dict(loaded.thresholds), loaded.evidence_min_pixels
        source = str(p)
    bad = sorted(set(sidecar) - set(names))
    if bad:
        raise ConfigError(f"thresholds file {source}: {bad} are not classes of the model ({list(names)})")

    min_conf = np.full(nc, config.min_confidence, np.float32)
    min_area = np.full(nc, config.min_area_px, np.float32)
    max_count = np.full(nc, config.max_count, np.int64)
    ignored = np.zeros(nc, bool)
    for i, name in enumerate(names):
        if name in sidecar:
            min_conf[i] = sidecar[name]
        rule = config.classes.get(name)
        if rule is None:
            continue
        if rule.min_confidence is not None:
            min_conf[i] = rule.min_confidence
        if rule.min_area_px is not None:
            min_area[i] = rule.min_area_px
        if rule.max_count is not None:
            max_count[i] = rule.max_count
        ignored[i] = rule.ignore
    rules = CompiledRules(
        names=tuple(names),
        min_conf=min_conf,
        min_area=min_area,
        max_count=max_count,
        ignored=ignored,
        max_total=config.max_total,
        rois=np.asarray(config.regions_of_interest, np.float32).reshape(-1, 4),
        ignore_zones=np.asarray(config.ignore_zones, np.float32).reshape(-1, 4),
        threshold_source=source,
        min_evidence_px=evidence_min_pixels(config.difference_evidence, sidecar_min_pixels),
        evidence_settings=(
            config.difference_evidence.tolerance_px,
            config.difference_evidence.level,
            config.difference_evidence.margin_px,
        ),
    )
    return dataclasses.replace(rules, rules_id=rules_fingerprint(rules))


def _centres_inside(boxes: np.ndarray, zones: np.ndarray) -> np.ndarray:
    """(n,) bool: box centre lies inside any zone."""
    if zones.shape[0] == 0 or boxes.shape[0] == 0:
        return np.zeros(boxes.shape[0], bool)
    cx = (boxes[:, 0:1] + boxes[:, 2:3]) * 0.5
    cy = (boxes[:, 1:2] + boxes[:, 3:4]) * 0.5
    inside = (cx >= zones[:, 0]) & (cx <= zones[:, 2]) & (cy >= zones[:, 1]) & (cy <= zones[:, 3])
    return np.asarray(inside.any(axis=1))


@dataclass(frozen=True)
class Decision:
    verdict: VerdictKind
    reasons: tuple[Reason, ...]
    detections: tuple[Detection, ...]  # every detection the engine returned, for the record
    defects: int  # detections that counted


# (m, 4) xyxy boxes -> (m,) different pixels in each (edge.reference.DifferenceEvidence.count, bound to a frame)
Evidence = Callable[[np.ndarray], np.ndarray]


def decide(dets: Detections, rules: CompiledRules, evidence: Evidence | None = None) -> Decision:
    """Apply the rules. Pure: same detections, rules and evidence, same decision.

    `evidence` (golden-reference models): the different-pixel count of boxes against the
    reference; with `rules.min_evidence_px` > 0 it is asked only about detections that pass
    every other filter, and those below the minimum do not count.
    """
    all_dets = dets.to_list(rules.names)
    n = len(dets)
    if n == 0:
        return Decision(VerdictKind.PASS, (), (), 0)
    cls = np.clip(dets.classes.astype(np.int64), 0, len(rules.names) - 1)
    boxes = dets.boxes
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    counts = ~rules.ignored[cls]
    counts &= dets.scores >= rules.min_conf[cls]
    counts &= area >= rules.min_area[cls]
    if rules.rois.shape[0]:
        counts &= _centres_inside(boxes, rules.rois)
    if rules.ignore_zones.shape[0]:
        counts &= ~_centres_inside(boxes, rules.ignore_zones)
    differing: dict[int, int] = {}
    if evidence is not None and rules.min_evidence_px > 0 and counts.any():
        candidates = np.flatnonzero(counts)
        found = np.asarray(evidence(boxes[candidates]))
        counts[candidates] = found >= rules.min_evidence_px
        differing = dict(zip(candidates.tolist(), found.tolist(), strict=True))

    idx = np.flatnonzero(counts)
    per_class = np.bincount(cls[idx], minlength=len(rules.names))
    over = per_class > rules.max_count
    total_over = rules.max_total is not None and idx.size > rules.max_total
    if not over.any() and not total_over:
        return Decision(VerdictKind.PASS, (), all_dets, int(idx.size))

    reasons: list[Reason] = []
    for i in idx.tolist():
        c = int(cls[i])
        if not (over[c] or total_over):
            continue
        d = all_dets[i]
        if over[c]:
            msg = (
                f"{d.name} conf {d.confidence:.3f} >= {float(rules.min_conf[c]):.3f}, "
                f"area {d.area:.0f} px2; {int(per_class[c])} {d.name} > max {int(rules.max_count[c])}"
            )
            if i in differing:
                msg += f"; {differing[i]} px differ from the reference"
            reasons.append(Reason("max_count", msg, d))
        else:
            msg = f"{d.name} conf {d.confidence:.3f}; {idx.size} defects > max_total {rules.max_total}"
            reasons.append(Reason("max_total", msg, d))
    return Decision(VerdictKind.REJECT, tuple(reasons), all_dets, int(idx.size))


def describe(rules: CompiledRules) -> Mapping[str, object]:
    """The thresholds in force, for logs and the status page."""
    return {
        "set": rules.set_name,
        "rules_id": rules.rules_id,
        "source": rules.threshold_source,
        "min_confidence": {n: round(float(v), 4) for n, v in zip(rules.names, rules.min_conf, strict=True)},
        "max_count": {n: int(v) for n, v in zip(rules.names, rules.max_count, strict=True)},
        "ignored": [n for n, ig in zip(rules.names, rules.ignored, strict=True) if ig],
        "difference_evidence_min_pixels": rules.min_evidence_px,  # 0: the rule is off
    }
