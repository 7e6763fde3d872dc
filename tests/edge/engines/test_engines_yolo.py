"""NMS and decoding of the raw YOLO output into camera-pixel detections (edge.engines.yolo)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.engines import yolo
from edge.engines.base import ModelInfo
from edge.engines.letterbox import LetterboxGeometry, letterbox_geometry
from edge.engines.yolo import MAX_WH, Decoder, DecodeScratch, decode, nms, single_prediction
from edge.errors import ModelError

# --------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------


def reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            xx1, yy1 = max(boxes[i, 0], boxes[k, 0]), max(boxes[i, 1], boxes[k, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[k, 2]), min(boxes[i, 3], boxes[k, 3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            b = (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])
            if inter / (a + b - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_nms_basic_and_threshold_semantics() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 20]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]  # box 3 has IoU exactly 0.5: kept
    assert nms(boxes, scores, 0.49).tolist() == [0, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5).shape == (0,)


def test_nms_matches_reference_on_random_boxes() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 100, (300, 2))
    wh = rng.uniform(5, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for thr in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, thr).tolist() == reference_nms(boxes, scores, thr)


@pytest.mark.parametrize("matrix_max", [0, yolo.NMS_MATRIX_MAX])
def test_nms_matrix_and_loop_paths_agree(monkeypatch: pytest.MonkeyPatch, matrix_max: int) -> None:
    """Both implementations (IoU matrix for small sets, per-kept-box loop beyond) give the same."""
    monkeypatch.setattr(yolo, "NMS_MATRIX_MAX", matrix_max)
    rng = np.random.default_rng(11)
    xy = rng.uniform(0, 200, (400, 2))
    wh = rng.uniform(2, 60, (400, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 400).astype(np.float32)
    scores[10:20] = scores[0]  # ties keep index order (stable sort)
    for thr in (0.1, 0.45, 0.7):
        assert nms(boxes, scores, thr).tolist() == reference_nms(boxes, scores, thr)
    # Empty (zero-area) boxes have an undefined IoU with each other: nothing is suppressed.
    flat = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    assert sorted(nms(flat, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist()) == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


def anchors_output(
    boxes_cxcywh: list[tuple[float, float, float, float]], cls_scores: list[dict[int, float]], nc: int, n: int = 64
) -> np.ndarray:
    raw = np.zeros((1, 4 + nc, n), np.float32)
    raw[0, 2:4] = 1.0
    for i, (box, sc) in enumerate(zip(boxes_cxcywh, cls_scores, strict=True)):
        raw[0, :4, i] = box
        for c, s in sc.items():
            raw[0, 4 + c, i] = s
    return raw


def test_decode_empty_output() -> None:
    g = letterbox_geometry((480, 640), (320, 320))
    raw = np.zeros((1, 4 + 3, 2100), np.float32)
    dets = decode(raw, layout="anchors", num_classes=3, conf=0.25, iou=0.45, geometry=g)
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)
    e2e = np.zeros((1, 300, 6), np.float32)
    assert len(decode(e2e, layout="end2end", num_classes=3, conf=0.25, iou=0.45, geometry=g)) == 0


def test_decode_maps_to_source_pixels_non_square() -> None:
    # source 480x752 into a 256x320 input: scale 0.4255, new (204, 320), pad top 26
    g = letterbox_geometry((480, 752), (256, 320))
    src_box = np.array([[100, 50, 300, 250]], np.float32)
    x1, y1, x2, y2 = g.to_input(src_box)[0]
    raw = anchors_output([((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)], [{1: 0.9}], nc=2)
    dets = decode(raw, layout="anchors", num_classes=2, conf=0.25, iou=0.45, geometry=g)
    assert dets.classes.tolist() == [1]
    assert dets.scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(dets.boxes, src_box, atol=0.01)
    assert dets.boxes.dtype == np.float32 and dets.classes.dtype == np.int32


def test_decode_clips_boxes_at_image_edges() -> None:
    g = letterbox_geometry((480, 640), (320, 320))  # pad top 40
    raw = anchors_output(
        [(5, 50, 30, 30), (315, 270, 30, 30), (160, 160, 400, 400)],  # left edge, bottom-right, all
        [{0: 0.9}, {0: 0.8}, {1: 0.7}],
        nc=2,
    )
    dets = decode(raw, layout="anchors", num_classes=2, conf=0.25, iou=0.45, geometry=g)
    assert len(dets) == 3
    b = dets.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= 640).all() and (b[:, 3] <= 480).all()
    assert b[0, 0] == 0.0  # left edge clipped
    np.testing.assert_allclose(b[1], [2 * 300, 2 * (255 - 40), 640, 480])  # right and bottom clipped
    np.testing.assert_array_equal(b[2], [0, 0, 640, 480])


def test_decode_overlaps_same_class_suppressed_other_class_kept() -> None:
    g = letterbox_geometry((320, 320), (320, 320))
    boxes = [(100, 100, 40, 40), (102, 101, 40, 40), (101, 99, 41, 40), (100, 100, 40, 40), (200, 200, 10, 10)]
    scores = [{0: 0.9}, {0: 0.8}, {0: 0.85}, {1: 0.6}, {0: 0.3}]
    raw = anchors_output(boxes, scores, nc=2)
    dets = decode(raw, layout="anchors", num_classes=2, conf=0.25, iou=0.45, geometry=g)
    assert dets.classes.tolist() == [0, 1, 0]
    assert dets.scores.tolist() == pytest.approx([0.9, 0.6, 0.3])
    assert (np.diff(dets.scores) <= 0).all()
    agnostic = decode(raw, layout="anchors", num_classes=2, conf=0.25, iou=0.45, geometry=g, agnostic=True)
    assert agnostic.classes.tolist() == [0, 0]


def test_decode_confidence_is_strictly_greater_and_max_det() -> None:
    g = letterbox_geometry((320, 320), (320, 320))
    boxes = [(20 + 30 * i, 20, 10, 10) for i in range(10)]
    raw = anchors_output(boxes, [{i % 3: 0.5 + 0.01 * i} for i in range(9)] + [{0: 0.25}], nc=3)
    dets = decode(raw, layout="anchors", num_classes=3, conf=0.25, iou=0.45, geometry=g)
    assert len(dets) == 9  # the 0.25 box is not > 0.25
    top4 = decode(raw, layout="anchors", num_classes=3, conf=0.25, iou=0.45, geometry=g, max_det=4)
    assert top4.scores.tolist() == pytest.approx([0.58, 0.57, 0.56, 0.55])


def reference_decode(raw: np.ndarray, nc: int, conf: float, iou: float, g: LetterboxGeometry) -> np.ndarray:
    """Ultralytics non_max_suppression + scale_boxes, written plainly: rows (x1,y1,x2,y2,score,cls)."""
    pred = raw[0].T
    rows = []
    for p in pred:
        c = int(np.argmax(p[4:]))
        s = float(p[4 + c])
        if s > conf:
            cx, cy, w, h = (float(v) for v in p[:4])
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, s, c])
    if not rows:
        return np.zeros((0, 6))
    arr = np.array(rows)
    keep = reference_nms(arr[:, :4] + arr[:, 5:6] * MAX_WH, arr[:, 4], iou)[:300]
    arr = arr[keep]
    arr[:, [0, 2]] = ((arr[:, [0, 2]] - g.pad_left) / g.gain_x).clip(0, g.src_hw[1])
    arr[:, [1, 3]] = ((arr[:, [1, 3]] - g.pad_top) / g.gain_y).clip(0, g.src_hw[0])
    return arr


def test_decode_matches_plain_reference_on_random_output() -> None:
    rng = np.random.default_rng(11)
    nc, n = 4, 2100
    raw = np.zeros((1, 4 + nc, n), np.float32)
    raw[0, 0:2] = rng.uniform(0, 320, (2, n))
    raw[0, 2:4] = rng.uniform(4, 60, (2, n))
    raw[0, 4:] = rng.beta(0.3, 3, (nc, n))
    g = letterbox_geometry((600, 800), (320, 320))
    scratch = DecodeScratch(n, nc)
    dets = decode(raw, layout="anchors", num_classes=nc, conf=0.25, iou=0.45, geometry=g, scratch=scratch)
    ref = reference_decode(raw, nc, 0.25, 0.45, g)
    assert len(dets) == len(ref) > 10
    np.testing.assert_allclose(dets.boxes, ref[:, :4], atol=1e-2)
    np.testing.assert_allclose(dets.scores, ref[:, 4], rtol=1e-6)
    assert dets.classes.tolist() == ref[:, 5].astype(int).tolist()


def test_decode_end2end_layout() -> None:
    g = letterbox_geometry((480, 640), (320, 320))  # scale 0.5, pad top 40
    raw = np.zeros((1, 300, 6), np.float32)
    raw[0, 0] = [10, 50, 110, 150, 0.95, 2]
    raw[0, 1] = [-5, 30, 50, 100, 0.50, 0]  # off the left edge
    raw[0, 2] = [100, 100, 120, 120, 0.30, 1]
    raw[0, 3] = [200, 100, 220, 120, 0.80, 1]  # out of order: output is re-sorted
    raw[0, 4] = [0, 0, 1, 1, 0.10, 1]  # below conf
    dets = decode(raw, layout="end2end", num_classes=3, conf=0.25, iou=0.45, geometry=g)
    assert dets.scores.tolist() == pytest.approx([0.95, 0.8, 0.5, 0.3])
    assert dets.classes.tolist() == [2, 1, 0, 1]
    np.testing.assert_allclose(dets.boxes[0], [20, 20, 220, 220])
    np.testing.assert_allclose(dets.boxes[2], [0, 0, 100, 120])
    top2 = decode(raw, layout="end2end", num_classes=3, conf=0.25, iou=0.45, geometry=g, max_det=2)
    assert top2.scores.tolist() == pytest.approx([0.95, 0.5])  # the first max_det rows above conf


def test_decode_rejects_mismatched_shapes() -> None:
    g = letterbox_geometry((320, 320), (320, 320))
    with pytest.raises(ModelError):
        decode(np.zeros((1, 9, 100), np.float32), layout="anchors", num_classes=3, conf=0.25, iou=0.45, geometry=g)
    with pytest.raises(ValueError):
        decode(
            np.zeros((1, 7, 100), np.float32),
            layout="anchors",
            num_classes=3,
            conf=0.25,
            iou=0.45,
            geometry=g,
            scratch=DecodeScratch(50, 3),
        )
    with pytest.raises(ValueError):
        decode(np.zeros((2, 7, 100), np.float32), layout="anchors", num_classes=3, conf=0.25, iou=0.45, geometry=g)


def test_single_prediction_takes_the_one_batch_item() -> None:
    raw = np.arange(2 * 7 * 5, dtype=np.float32).reshape(2, 7, 5)
    one = raw[:1]
    assert single_prediction(one).shape == (7, 5) and np.shares_memory(single_prediction(one), raw)  # a view
    assert single_prediction(raw[0]).shape == (7, 5)
    with pytest.raises(ValueError, match="one batch item"):
        single_prediction(raw)
    with pytest.raises(ModelError, match="rank 2 or 3"):
        single_prediction(raw[None])
    with pytest.raises(ModelError, match="rank 2 or 3"):
        single_prediction(raw.reshape(-1))


def test_decoder_reuses_scratch_and_accepts_float16() -> None:
    info = ModelInfo(
        path="m.onnx",
        model_id="0" * 16,
        names=("a", "b"),
        input_hw=(320, 320),
        channels=3,
        batch=1,
        layout="anchors",
        input_dtype=np.dtype(np.float32),
    )
    dec = Decoder(info, conf=0.25, iou=0.45, output_shape=(1, 6, 64))
    g = letterbox_geometry((320, 320), (320, 320))
    raw = anchors_output([(50, 50, 20, 20)], [{1: 0.75}], nc=2)
    first = dec(raw, g)
    second = dec(raw.astype(np.float16), g)
    assert first.classes.tolist() == second.classes.tolist() == [1]
    np.testing.assert_allclose(first.boxes, second.boxes, atol=0.05)
