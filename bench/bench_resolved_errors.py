"""Where a trained model's resolved-vessel errors are (vessels of radius >= one voxel, against the phantom truth).

Reads a ``reproduce_paper`` database (``DLA_VAR_DIR`` of the run) and its newest model; the softmax of each study
of ``--cohort`` comes from the decision-rule bench's cache (``bench_decision_rules.cache_probabilities``: computed
once, mirrored and not). The decision is the inference task's (prior strength ``--strength``, mirrored unless
``--no-mirror``). Per study and summed: resolved truth voxels found (TP) and missed (FN; what the model called them,
how many lie within 3 mm of the truth's bone, their fill HU), false positives attributed to a resolved vessel as the
evaluation does (nearest truth voxel resolved and within two voxels; how many within 3 mm of bone, their raw vessel
probability), and the same resolved-vessel Dice the evaluation reports. Also the approved training labels'
resolved-vessel Dice and rim (false positives per true positive) for aligned and moved training studies.
Run: DEBUG=1 DLA_VAR_DIR=<run>/var .venv/bin/python bench/bench_resolved_errors.py --name NAME \
    [--cohort validation] [--strength 0.8] [--cache DIR]
Writes bench/results/resolved_errors_<name>_<cohort>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dla_web.settings")
import django  # noqa: E402

django.setup()

from bench_decision_rules import cache_probabilities, class_map  # noqa: E402
from scipy import ndimage  # noqa: E402

from annotations.labels import newest_approved, version_labels  # noqa: E402
from annotations.models import Study, Volume  # noqa: E402
from dla.classes import BONE, SOFT_TISSUE, VESSEL  # noqa: E402
from dla.model.base import tempered_priors  # noqa: E402
from evaluation.services import evaluation_plan, phantom_vessel_radii  # noqa: E402
from inference.models import ModelVersion  # noqa: E402

NEAR_BONE_MM = 3.0


def resolved_geometry(study: Study):
    """(truth, resolved truth-vessel mask, mask of non-vessel voxels attributed to a resolved vessel, spacing)."""
    fill = study.volume(Volume.Role.FILL)
    spacing = tuple(fill.spacing_mm)
    truth = np.asarray(study.volume(Volume.Role.TRUTH).array())
    vessel = truth == VESSEL
    radius, why = phantom_vessel_radii(study, vessel)
    if radius is None:
        raise SystemExit(f"{study.pseudonym}: {why}")
    resolved = vessel & (radius >= float(np.prod(spacing)) ** (1 / 3))
    dist, idx = ndimage.distance_transform_edt(~vessel, sampling=spacing, return_indices=True)
    near_resolved = (dist <= 2 * max(spacing) * (1 + 1e-9)) & ~vessel & resolved[tuple(idx)]
    return truth, resolved, near_resolved, spacing


def errors(predicted_vessel, cls, probs, fill, truth, resolved, near_resolved, spacing) -> dict:
    near_bone = ndimage.distance_transform_edt(truth != BONE, sampling=spacing) <= NEAR_BONE_MM
    fn = resolved & ~predicted_vessel
    fp = predicted_vessel & near_resolved
    tp = int(np.count_nonzero(resolved & predicted_vessel))
    row = {
        "tp": tp,
        "fn": int(np.count_nonzero(fn)),
        "fp": int(np.count_nonzero(fp)),
        "fn_called_bone": int(np.count_nonzero(fn & (cls == BONE))),
        "fn_called_soft_tissue": int(np.count_nonzero(fn & (cls == SOFT_TISSUE))),
        "fn_near_bone": int(np.count_nonzero(fn & near_bone)),
        "fp_near_bone": int(np.count_nonzero(fp & near_bone)),
        "fn_fill_hu_median": float(np.median(fill[fn])) if fn.any() else None,
    }
    if probs is not None:
        row["fp_raw_vessel_probability_median"] = float(np.median(probs[0][fp])) if fp.any() else None
        row["fn_raw_vessel_probability_median"] = float(np.median(probs[0][fn])) if fn.any() else None
    row["resolved_dice"] = 2 * tp / (2 * tp + row["fn"] + row["fp"]) if tp + row["fn"] else None
    return row


def summed(rows: list[dict]) -> dict:
    keys = ("tp", "fn", "fp", "fn_called_bone", "fn_called_soft_tissue", "fn_near_bone", "fp_near_bone")
    total = {k: int(sum(r[k] for r in rows)) for k in keys}
    total["mean_resolved_dice"] = float(np.mean([r["resolved_dice"] for r in rows if r["resolved_dice"]]))
    total["fp_per_tp"] = total["fp"] / max(1, total["tp"])
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--cohort", default="validation", choices=["validation", "test"])
    ap.add_argument("--strength", type=float, default=0.8)
    ap.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    version = ModelVersion.objects.order_by("-created_at", "-id").first()
    if version is None or not (version.metrics or {}).get("class_priors"):
        raise SystemExit("no trained model with recorded class priors in this database (run reproduce_paper)")
    priors = tuple(float(version.metrics["class_priors"][k]) for k in ("vessel", "bone", "soft_tissue"))
    plan = evaluation_plan(
        model_version_id=version.pk, cohorts=[args.cohort], reference="approved", allow_missing=True
    )
    studies = [Study.objects.get(pk=e["study"]) for e in plan["entries"] if e["truth"]]
    cache = args.cache or Path(tempfile.mkdtemp(prefix="resolved-errors-"))
    cache.mkdir(parents=True, exist_ok=True)
    cache_probabilities(version, studies, cache)
    model_rows = {}
    for study in studies:
        truth, resolved, near_resolved, spacing = resolved_geometry(study)
        fill = np.asarray(study.volume(Volume.Role.FILL).array())
        cached = np.load(cache / f"{study.pseudonym}.npz")
        probs = cached["mirror" if args.mirror else "plain"].astype(np.float32)
        cls = class_map(probs, cached["cand"], tempered_priors(priors, args.strength))
        model_rows[study.pseudonym] = errors(
            cls == VESSEL, cls, probs, fill, truth, resolved, near_resolved, spacing
        )
        print(study.pseudonym, json.dumps(model_rows[study.pseudonym]), flush=True)
    label_rows = {"aligned": [], "moved": []}
    for study in Study.objects.filter(cohort="train").order_by("pseudonym"):
        version_ = newest_approved(study) or study.label_versions.order_by("-number").first()
        if version_ is None:
            continue
        labels = version_labels(version_)
        truth, resolved, near_resolved, spacing = resolved_geometry(study)
        fill = np.asarray(study.volume(Volume.Role.FILL).array())
        moved = bool(((study.metadata.get("phantom") or {}).get("motion") or {}).get("enabled"))
        row = errors(labels == VESSEL, labels, None, fill, truth, resolved, near_resolved, spacing)
        label_rows["moved" if moved else "aligned"].append(row)
    result = {
        "model": {"id": version.pk, "name": version.name},
        "cohort": args.cohort,
        "rule": {"strength": args.strength, "mirror": args.mirror},
        "model_errors": {"studies": model_rows, "total": summed(list(model_rows.values()))},
        "training_labels": {k: {"n": len(v), **summed(v)} for k, v in label_rows.items() if v},
    }
    print("model", json.dumps(result["model_errors"]["total"]))
    for k, v in result["training_labels"].items():
        print(f"training labels, {k}", json.dumps(v))
    out = ROOT / "bench" / "results" / f"resolved_errors_{args.name}_{args.cohort}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
