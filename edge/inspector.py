"""One frame (or a batch) through the shared preprocessing, the engine, decoding and the rules.

The inference worker calls `Inspector.judge_batch`; nothing here knows about threads, the ring
or sinks. A frame that cannot be judged for a reason of its own (no reference, a reference of
another size) raises `InvalidFrameError`, which the worker decides FAILSAFE `invalid_frame`; any
other exception is an engine fault (`engine_error`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cameras.base import Frame
from edge.decision import CompiledRules, Decision, Evidence, decide
from edge.engines.base import Engine, ModelInfo
from edge.engines.letterbox import MAX_FRAME_SIZES, Preprocessor
from edge.engines.yolo import Decoder
from edge.errors import CameraError, InvalidFrameError
from edge.reference import DifferenceEvidence, ReferenceAligner, compose


@dataclass(frozen=True, slots=True)
class WorkResult:
    """What the worker found for one frame, with its stage timestamps (monotonic ns)."""

    decision: Decision
    started_ns: int
    preprocessed_ns: int
    inferred_ns: int
    finished_ns: int
    rules: CompiledRules | None = None  # the rules that judged it (a reference, not a copy)


@dataclass(frozen=True)
class DecodeSettings:
    confidence: float
    iou: float
    max_detections: int


class Inspector:
    """Runs one frame through the shared preprocessing, the engine, decoding and the rules.

    For a golden-reference model (`info.reference_input`) each frame is first composed with its
    reference (`edge.reference.compose`): the frame's own (`Frame.reference`) or its camera's
    fixed one from `references`, into buffers kept per batch item and frame size; with
    `align_max_shift_px` the reference is first shifted onto the frame (`ReferenceAligner`), and
    the decision's difference-evidence rule reads the composite's part and reference channels.
    """

    def __init__(
        self,
        engine: Engine,
        info: ModelInfo,
        rules: CompiledRules,
        settings: DecodeSettings,
        references: Mapping[str, np.ndarray] | None = None,
        align_max_shift_px: int = 0,
        align_min_response: float = 0.05,
    ) -> None:
        self.engine = engine
        self.info = info
        self.rules = rules
        self.settings = settings
        self.references = dict(references or {})
        buffer = engine.input_buffer()
        self.batch = int(buffer.shape[0])
        self.preprocessors = [Preprocessor(buffer[i]) for i in range(self.batch)]
        self.preprocess = self.preprocessors[0]
        self._composites: list[dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]] = [
            {} for _ in range(self.batch)
        ]
        self.aligners = (
            [ReferenceAligner(align_max_shift_px, align_min_response) for _ in range(self.batch)]
            if align_max_shift_px > 0 and info.reference_input
            else None
        )
        self._scorer: DifferenceEvidence | None = None  # decision.difference_evidence, made on first use
        self._scorer_settings: tuple[int, int, int] | None = None
        self.decode = Decoder(
            info,
            conf=min(settings.confidence, rules.min_confidence()),
            iou=settings.iou,
            max_det=settings.max_detections,
        )

    def set_rules(self, rules: CompiledRules) -> None:
        """Swap the decision rules between frames (one reference assignment: a frame is judged
        wholly by the old rules or wholly by the new)."""
        if rules.names != self.rules.names:
            raise ValueError("rules compiled for other class names")
        self.decode.conf = min(self.settings.confidence, rules.min_confidence())
        self.rules = rules

    def judge(self, frame: Frame) -> WorkResult:
        return self.judge_batch((frame,))[0]

    def judge_batch(self, frames: Sequence[Frame]) -> list[WorkResult]:
        """Judge up to `batch` frames with one inference (batch items beyond len(frames) are stale
        and ignored)."""
        t0 = time.monotonic_ns()
        composites: list[np.ndarray] = []
        if self.info.reference_input:
            composites = [self._composite(i, f) for i, f in enumerate(frames)]
            geometries = [self.preprocessors[i](c, "BGR") for i, c in enumerate(composites)]
        else:
            geometries = [self.preprocessors[i](f.array, f.channel_order) for i, f in enumerate(frames)]
        t1 = time.monotonic_ns()
        raw = self.engine.infer()
        t2 = time.monotonic_ns()
        out = []
        rules = self.rules  # one set of rules for the whole batch, even if swapped meanwhile
        for i, geometry in enumerate(geometries):
            evidence = self._evidence(composites[i], rules) if composites else None
            decision = decide(self.decode(raw[i : i + 1], geometry), rules, evidence)
            out.append(WorkResult(decision, t0, t1, t2, time.monotonic_ns(), rules))
        return out

    def _evidence(self, composite: np.ndarray, rules: CompiledRules) -> Evidence | None:
        """The difference-evidence rule's per-box count on one composite (its part and aligned
        reference channels), or None where the rules have it off."""
        if rules.min_evidence_px <= 0:
            return None
        if self._scorer is None or self._scorer_settings != rules.evidence_settings:
            self._scorer = DifferenceEvidence(*rules.evidence_settings)
            self._scorer_settings = rules.evidence_settings
        scorer = self._scorer

        def count(boxes: np.ndarray) -> np.ndarray:
            return scorer.count(composite[..., 0], composite[..., 1], boxes)

        return count

    def _composite(self, item: int, frame: Frame) -> np.ndarray:
        """The frame composed with its reference, in batch item `item`'s buffers."""
        reference = frame.reference if frame.reference is not None else self.references.get(frame.camera)
        if reference is None:
            raise InvalidFrameError(f"camera {frame.camera}: no golden reference for frame {frame.frame_id}")
        hw = (int(frame.array.shape[0]), int(frame.array.shape[1]))
        buffers = self._composites[item].get(hw)
        if buffers is None:
            if len(self._composites[item]) >= MAX_FRAME_SIZES:  # bounded, like the letterbox's plans
                self._composites[item].clear()
            buffers = (np.empty((*hw, 3), np.uint8), np.empty(hw, np.uint8))
            self._composites[item][hw] = buffers
        try:
            if self.aligners is not None:
                reference = self.aligners[item].align(frame.array, reference)
            return compose(frame.array, reference, *buffers)
        except CameraError as exc:  # a frame that does not fit its reference (size, format): not an engine fault
            raise InvalidFrameError(str(exc)) from exc
