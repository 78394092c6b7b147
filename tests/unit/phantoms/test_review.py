"""Simulated manual artifact removal (dla.phantoms.review) on a phantom with inter-sweep motion: the
eraser strokes, applied through the edit-op engine, remove exactly the recipe-vessel voxels far from the truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.classes import UNLABELED, VESSEL
from dla.labeling.edit_ops import VolumeContext, apply_op
from dla.labeling.recipe import RecipeParams, run_recipe
from dla.phantoms import default_spacing_mm, make_subject
from dla.phantoms.review import artifact_mask, eraser_strokes

SHAPE = (80, 80, 80)


@pytest.fixture(scope="module")
def moving_subject_labels():
    spacing = default_spacing_mm(SHAPE)
    subject = make_subject(SHAPE, seed=0, motion=True)
    params = RecipeParams(min_vessel_component_voxels=30)
    labels = run_recipe(subject.fill_hu, subject.subtracted_hu, spacing, params).labels
    return subject, labels, spacing


def test_motion_artifacts_are_erased_and_nothing_else_changes(moving_subject_labels):
    subject, labels, spacing = moving_subject_labels
    far = artifact_mask(labels, subject.truth)
    # independent definition: vessel label with no truth vessel in its 3x3x3 neighbourhood
    near = ndi.maximum_filter((subject.truth == VESSEL).astype(np.uint8), size=3).astype(bool)
    np.testing.assert_array_equal(far, (labels == VESSEL) & ~near)
    assert far.sum() > 100  # this phantom's motion leaves residual bone edges labelled vessel

    cleaned = labels.copy()
    strokes = eraser_strokes(far, spacing)
    clusters, n_clusters = ndi.label(far, np.ones((3, 3, 3), bool))
    assert n_clusters > 1 and len(strokes) == 1  # one drag over every cluster
    points = [strokes[0]["center_zyx"], *strokes[0]["stroke_zyx"]]
    assert len(points) == far.sum() and len({tuple(p) for p in points}) == len(points)
    sizes = np.bincount(clusters[far])
    first = [clusters[tuple(p)] for p in points]
    assert sizes[first[0]] == sizes[1:].max()  # the largest cluster first
    assert np.count_nonzero(np.diff(first)) == n_clusters - 1  # each cluster in one run
    for stroke in strokes:
        apply_op(cleaned, stroke, VolumeContext(spacing))
    changed = cleaned != labels
    np.testing.assert_array_equal(changed, far)
    assert (cleaned[changed] == UNLABELED).all()
    assert not artifact_mask(cleaned, subject.truth).any()
    # the clean-up makes the vessel label agree better with the truth
    truth_vessel = subject.truth == VESSEL

    def dice(a):
        return 2 * np.sum(a & truth_vessel) / (a.sum() + truth_vessel.sum())

    assert dice(cleaned == VESSEL) > dice(labels == VESSEL)


def test_tolerance_zero_and_bad_input(moving_subject_labels):
    subject, labels, _ = moving_subject_labels
    strict = artifact_mask(labels, subject.truth, tolerance_voxels=0)
    np.testing.assert_array_equal(strict, (labels == VESSEL) & (subject.truth != VESSEL))
    assert eraser_strokes(np.zeros(SHAPE, bool), (1, 1, 1)) == []
    far = artifact_mask(labels, subject.truth)
    split = eraser_strokes(far, (1, 1, 1), max_points=100)
    assert [1 + len(s["stroke_zyx"]) for s in split[:-1]] == [100] * (len(split) - 1)
    assert sum(1 + len(s["stroke_zyx"]) for s in split) == far.sum()
    with pytest.raises(ValueError, match="differs from truth shape"):
        artifact_mask(labels[:-1], subject.truth)
    with pytest.raises(ValueError, match="tolerance_voxels must be >= 0"):
        artifact_mask(labels, subject.truth, tolerance_voxels=-1)
