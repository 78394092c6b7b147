"""Grid spacing rule and affine of the phantoms (dla.phantoms.grid), checked through make_subject."""

from __future__ import annotations

import numpy as np
import pytest

from dla.classes import UNLABELED
from dla.phantoms import default_spacing_mm, make_subject

from .cases import lps_coordinates


def test_spacing_rule_and_affine():
    assert default_spacing_mm((64, 64, 64)) == pytest.approx((180 / 64,) * 3)
    assert default_spacing_mm((256, 256, 256)) == pytest.approx((0.46,) * 3)
    assert default_spacing_mm((300, 256, 512)) == pytest.approx((0.46,) * 3)
    assert default_spacing_mm((255, 300, 300)) == pytest.approx((180 / 255,) * 3)
    s = make_subject((16, 20, 24), seed=1)
    assert s.spacing_mm == pytest.approx((180 / 16,) * 3)
    t = make_subject((16, 20, 24), spacing_mm=(2.0, 3.0, 4.0), seed=1)
    assert t.spacing_mm == (2.0, 3.0, 4.0)
    assert make_subject((16, 16, 16), spacing_mm=5.0, seed=1).spacing_mm == (5.0, 5.0, 5.0)
    # affine: (i=x, j=y, k=z) index -> LPS mm; column steps equal the spacing, voxel (0,0,0) maps to the origin
    a = t.affine_lps
    assert np.allclose(a[:3, :3], np.diag([4.0, 3.0, 2.0]))
    assert np.allclose(a[3], [0, 0, 0, 1])
    assert np.allclose(a @ [0, 0, 0, 1], np.r_[a[:3, 3], 1])
    far = a @ [23, 19, 15, 1] - a @ [0, 0, 0, 1]
    assert np.allclose(far[:3], [23 * 4.0, 19 * 3.0, 15 * 2.0])
    # the head is centred left-right in the field of view
    body = lps_coordinates(s, s.truth != UNLABELED)
    assert abs(body[:, 0].mean()) < 5
