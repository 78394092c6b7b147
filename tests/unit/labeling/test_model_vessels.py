"""The model-assisted "accept the model's vessels" op against a direct numpy computation, and its refusals."""

import numpy as np
import pytest

from dla.classes import BONE, UNLABELED, VESSEL
from dla.labeling.edit_ops import EditOpError, VolumeContext, apply_op, op_to_dict, parse_op, replay

SHAPE = (8, 12, 16)


def context(predicted):
    return VolumeContext((1.0, 1.0, 1.0), prediction_loader=lambda volume_id: predicted)


def test_accepts_predicted_vessels_inside_the_box_over_one_class_and_replays():
    rng = np.random.default_rng(0)
    predicted = rng.integers(0, 4, SHAPE).astype(np.uint8)
    labels = rng.choice([UNLABELED, BONE], SHAPE).astype(np.uint8)
    op = {"op": "model_vessels", "volume_id": 7, "box_zyx": [1, 6, 2, 10, 0, 8], "only_class": UNLABELED}
    out = labels.copy()
    result = apply_op(out, op, context(predicted))
    expected = labels.copy()
    box = np.zeros(SHAPE, bool)
    box[1:6, 2:10, 0:8] = True
    expected[box & (predicted == VESSEL) & (labels == UNLABELED)] = VESSEL
    np.testing.assert_array_equal(out, expected)
    assert result.delta_counts[VESSEL] == int((expected == VESSEL).sum() - (labels == VESSEL).sum())
    np.testing.assert_array_equal(replay(labels, [op], context(predicted)), expected)
    parsed = parse_op(op, SHAPE, (1, 1, 1))
    assert parse_op(op_to_dict(parsed), SHAPE, (1, 1, 1)) == parsed
    whole = labels.copy()
    apply_op(whole, {"op": "model_vessels", "volume_id": 7}, context(predicted))
    np.testing.assert_array_equal(whole, np.where(predicted == VESSEL, VESSEL, labels))


@pytest.mark.parametrize(
    "op, ctx, words",
    [
        ({"op": "model_vessels"}, None, "missing field 'volume_id'"),
        ({"op": "model_vessels", "volume_id": 0}, None, "positive volume id"),
        ({"op": "model_vessels", "volume_id": 3, "box_zyx": [0, 99, 0, 1, 0, 1]}, None, "box"),
        ({"op": "model_vessels", "volume_id": 3}, VolumeContext((1, 1, 1)), "needs a model prediction"),
        ({"op": "model_vessels", "volume_id": 3}, "other grid", "run the model on this study's fill volume"),
    ],
)
def test_refusals_name_the_problem_and_change_nothing(op, ctx, words):
    if ctx is None:
        ctx = context(np.zeros(SHAPE, np.uint8))
    elif ctx == "other grid":
        ctx = context(np.zeros((4, 4, 4), np.uint8))
    labels = np.zeros(SHAPE, np.uint8)
    with pytest.raises(EditOpError, match=words):
        apply_op(labels, op, ctx)
    assert not labels.any()
