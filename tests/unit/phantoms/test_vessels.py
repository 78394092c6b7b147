"""Vessel tree, injected territories, aneurysm and coil (dla.phantoms.vessels), seen through make_subject."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL

from .cases import lps_coordinates, subject


def test_vessel_hu_overlaps_bone_so_a_fill_threshold_cannot_separate_them():
    s = subject()
    fill = s.fill_hu.astype(np.float64)
    vessel_hu = fill[s.truth == VESSEL]
    bone_hu = fill[s.truth == BONE]
    # the large opacified vessels reach bone densities and beyond ...
    assert np.percentile(vessel_hu, 95) > np.percentile(bone_hu, 25)
    # ... and a threshold low enough to keep even half of the vessel voxels also keeps most bone
    thr = np.median(vessel_hu)
    assert (bone_hu >= thr).mean() > 0.3
    # the DSA separates them: bone away from vessels subtracts out
    far = ndimage.distance_transform_edt(s.truth != VESSEL) > 3
    assert np.median(np.abs(s.subtracted_hu[(s.truth == BONE) & far])) < 0.2 * np.median(
        s.subtracted_hu[s.truth == VESSEL]
    )


def test_vertebral_injection_opacifies_only_posterior_territory():
    vert = subject(injection="vertebral")
    ica = subject(injection="ica_left")
    assert vert.injection == "vertebral" and ica.injection == "ica"
    vessel = vert.truth == VESSEL
    assert vessel.sum() > 50
    assert not (vessel & ~vert.regions["vessels_posterior"]).any()
    anterior_only = (
        vert.regions["vessels_anterior_left"] | vert.regions["vessels_anterior_right"]
    ) & ~vert.regions["vessels_posterior"]
    assert anterior_only.sum() > 50
    assert np.all(vert.truth[anterior_only] == SOFT_TISSUE)
    # non-opacified anterior arteries look like blood/soft tissue, opacified posterior ones are bright
    assert np.median(vert.subtracted_hu[anterior_only]) < 60
    assert np.median(vert.subtracted_hu[vessel]) > 120
    # independent geometry: the opacified tree is posterior (LPS +y) to the ICA-injected tree of the same head
    y_vert = lps_coordinates(vert, vessel)[:, 1].mean()
    y_ica = lps_coordinates(ica, ica.truth == VESSEL)[:, 1].mean()
    assert y_vert > y_ica + 10


@pytest.mark.parametrize("side, sign", [("left", 1.0), ("right", -1.0)])
def test_ica_injection_opacifies_only_the_injected_anterior_territory(side, sign):
    s = subject(injection=f"ica_{side}")
    other = "right" if side == "left" else "left"
    vessel = s.truth == VESSEL
    assert vessel.sum() > 50
    assert not (vessel & ~s.regions[f"vessels_anterior_{side}"]).any()
    not_injected = (s.regions["vessels_posterior"] | s.regions[f"vessels_anterior_{other}"]) & ~s.regions[
        f"vessels_anterior_{side}"
    ]
    assert np.all(s.truth[not_injected] == SOFT_TISSUE)
    x = lps_coordinates(s, vessel)[:, 0]  # LPS +x is patient left
    assert sign * x.mean() > 10 and (sign * x > 0).mean() > 0.8
    assert s.params["injected_side"] == side


def test_aneurysm_and_coil():
    base = subject(aneurysm=(("radius_mm", 4.0), ("site", "mca_left")))
    coiled = subject(aneurysm=(("radius_mm", 5.0), ("site", "mca_left")), coil="coil")
    sac = base.regions["aneurysm"]
    assert sac.sum() >= 5
    assert np.all(base.truth[sac] == VESSEL)  # opacified: same side as the left ICA injection
    metal = coiled.regions["metal"]
    assert metal.any() and np.all(coiled.truth[metal] == UNLABELED)
    # metal is the densest material (blurred by partial volume on this coarse grid)
    assert coiled.fill_hu[metal].max() > 2000
    assert np.median(coiled.fill_hu[metal]) > np.median(coiled.fill_hu[coiled.truth == BONE])
    # streaks: in the axial plane through the metal, soft tissue away from the coil is noisier than without it
    zc = int(np.round(np.nonzero(metal)[0].mean()))
    dist = ndimage.distance_transform_edt(~metal[zc])
    ring = (dist > 3) & (dist < 12) & (coiled.truth[zc] == SOFT_TISSUE) & (base.truth[zc] == SOFT_TISSUE)
    assert ring.sum() > 20
    assert coiled.fill_hu[zc][ring].std() > 1.5 * base.fill_hu[zc][ring].std()
    vertebral = subject(injection="vertebral", aneurysm=(("radius_mm", 4.0), ("site", "mca_left")))
    assert not (vertebral.truth[vertebral.regions["aneurysm"]] == VESSEL).any()
    # the recorded sac centre (LPS mm) lies inside the sac
    centre = np.asarray(base.params["aneurysm"]["center_lps_mm"])
    sac_mm = lps_coordinates(base, sac)
    assert np.linalg.norm(sac_mm - centre, axis=1).min() < max(base.spacing_mm)
