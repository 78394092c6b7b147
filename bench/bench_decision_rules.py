"""Inference decision rules of a trained model against the phantom truth: prior strength x mirrored inference.

Reads a ``reproduce_paper`` database (``DLA_VAR_DIR`` of the run, e.g. ``DEBUG=1 DLA_VAR_DIR=/tmp/exp/defaults/var``)
and its newest model. Each validation / test study's softmax is computed once as trained and once mirrored
left-right (``predict_volume(mirror=...)``, cached in ``--cache``); every rule is then the argmax of the
probabilities (the mean of the two for a mirrored rule) re-weighted by ``tempered_priors(model's class priors,
strength, bone strength)`` (``--bone-strengths``: the vessel:bone pair's own strength), exactly what the
inference task does. Scored like the evaluation app: ``TruthReference.score``
(whole-head and resolved-vessel Dice, centreline sensitivity), ``residual_bone_clusters`` against the truth's
bone, and Table 1 against the approved labels inside their ROI (``study_metrics``). Also the exact truth scored
as the angiogram against the labels (Table 1's ceiling). Choose the rule on ``--cohort validation`` and then
look at the test cohort. Prints a table and writes bench/results/decision_rules_<--name>_<cohort>.json.
Run: DEBUG=1 DLA_VAR_DIR=<run>/var .venv/bin/python bench/bench_decision_rules.py --name NAME \
    [--cohort validation] [--strengths 0,0.5,0.7,0.8,0.9,1] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dla_web.settings")
import django  # noqa: E402

django.setup()

from annotations.labels import version_labels  # noqa: E402
from annotations.models import LabelVersion, Study, Volume  # noqa: E402
from dla.classes import BONE, SOFT_TISSUE, VESSEL  # noqa: E402
from dla.labeling.roi import box_mask  # noqa: E402
from dla.model.base import tempered_priors  # noqa: E402
from dla.model.dense import dla_volume, intensity_candidates, predict_volume  # noqa: E402
from dla.stats.artifacts import residual_bone_clusters  # noqa: E402
from dla.stats.metrics import TABLE1_METRICS, study_metrics  # noqa: E402
from dla.stats.truth import TruthReference  # noqa: E402
from evaluation.services import evaluation_plan, phantom_vessel_radii  # noqa: E402
from inference.models import ModelVersion  # noqa: E402
from inference.services import load_model  # noqa: E402

TRUTH_KEYS = ("resolved_dice", "resolved_centreline", "dice", "sensitivity", "ppv")


def cache_probabilities(version: ModelVersion, studies: list[Study], cache: Path) -> None:
    """float16 softmax [3, Z, Y, X] of each study as trained and mirrored, and its candidate mask, into ``cache``."""
    model = load_model(version)
    for study in studies:
        path = cache / f"{study.pseudonym}.npz"
        if path.exists():
            continue
        fill = np.asarray(study.volume(Volume.Role.FILL).array())
        cand = intensity_candidates(fill, 100)
        probs = {
            key: predict_volume(model, fill, candidate_mask=cand, return_probs=True, mirror=mirror).probs
            for key, mirror in (("plain", False), ("mirror", True))
        }
        np.savez(path, cand=cand, **{k: v.astype(np.float16) for k, v in probs.items()})


def class_map(probs: np.ndarray, cand: np.ndarray, priors) -> np.ndarray:
    """The inference task's decision: argmax of the (prior-shifted) probabilities, soft tissue off the candidates."""
    p = probs.astype(np.float32)
    if priors is not None:
        p = p * np.asarray(priors, dtype=np.float32)[:, None, None, None]
    cls = (p.argmax(axis=0) + VESSEL).astype(np.uint8)
    cls[~cand] = SOFT_TISSUE
    return cls


def score_study(job) -> dict:
    entry, rules, class_priors, cache = job
    study = Study.objects.get(pk=entry["study"])
    fill_volume = study.volume(Volume.Role.FILL)
    fill, spacing = np.asarray(fill_volume.array()), tuple(fill_volume.spacing_mm)
    truth = np.asarray(Volume.objects.get(pk=entry["truth"]).array())
    truth_vessel, bone = truth == VESSEL, truth == BONE
    radius, _ = phantom_vessel_radii(study, truth_vessel)
    reference = TruthReference(truth_vessel, radius, spacing)
    labels = version_labels(LabelVersion.objects.get(pk=entry["label_version"]))
    roi = box_mask(labels.shape, [entry["roi"]]) if entry["roi"] else None
    voxel_mm3 = float(np.prod(spacing))
    cached = np.load(cache / f"{study.pseudonym}.npz")

    def scores(cls: np.ndarray) -> dict:
        m = reference.score(cls == VESSEL)
        bone_result = residual_bone_clusters(
            dla_volume(fill, cls),
            bone,
            truth_vessel,
            spacing,
            bright_hu=300.0,
            min_cluster_mm3=20 * voxel_mm3,
        )
        table1 = study_metrics(labels, cls, roi)
        return {
            "resolved_dice": m.resolved.overlap.dice,
            "resolved_centreline": m.resolved.centreline_sensitivity,
            "dice": m.whole_head.dice,
            "sensitivity": m.whole_head.sensitivity,
            "ppv": m.whole_head.ppv,
            "residual_bone": bool(bone_result.present),
            **{f"table1_{k}": getattr(table1, k) for k in TABLE1_METRICS},
        }

    rows = {"truth": scores(np.where(truth == 0, SOFT_TISSUE, truth).astype(np.uint8))}
    for rule in rules:
        probs = cached["mirror" if rule["mirror"] else "plain"]
        rows[rule["name"]] = scores(
            class_map(
                probs,
                cached["cand"],
                tempered_priors(class_priors, rule["strength"], rule.get("bone_strength")),
            )
        )
    return {"pseudonym": study.pseudonym, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True, help="names the results file")
    ap.add_argument("--cohort", default="validation", choices=["validation", "test"])
    ap.add_argument("--strengths", default="0,0.5,0.7,0.8,0.9,1")
    ap.add_argument(
        "--bone-strengths",
        default="",
        help="vessel:bone strengths; each is paired with every --strengths value (default: the same strength)",
    )
    ap.add_argument("--mirror-only", action="store_true", help="score the mirrored rules only")
    ap.add_argument(
        "--cache", type=Path, default=None, help="probability cache (default: a temporary folder)"
    )
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    version = ModelVersion.objects.order_by("-created_at", "-id").first()
    if version is None or not (version.metrics or {}).get("class_priors"):
        raise SystemExit(
            "no trained model with recorded class priors in this database (run reproduce_paper first)"
        )
    class_priors = tuple(float(version.metrics["class_priors"][k]) for k in ("vessel", "bone", "soft_tissue"))
    plan = evaluation_plan(
        model_version_id=version.pk, cohorts=[args.cohort], reference="approved", allow_missing=True
    )
    entries = [e for e in plan["entries"] if e["truth"] and e["label_version"]]
    cache = args.cache or Path(tempfile.mkdtemp(prefix="decision-rules-"))
    cache.mkdir(parents=True, exist_ok=True)
    cache_probabilities(version, [Study.objects.get(pk=e["study"]) for e in entries], cache)
    strengths = [float(s) for s in args.strengths.split(",")]
    bone_strengths = [float(s) for s in args.bone_strengths.split(",")] if args.bone_strengths else [None]
    rules = [
        {
            "name": f"strength {s:g}{'' if b is None else f' / bone {b:g}'}{', mirrored' if mirror else ''}",
            "strength": s,
            "bone_strength": b,
            "mirror": mirror,
        }
        for mirror in ((True,) if args.mirror_only else (False, True))
        for s in strengths
        for b in bone_strengths
    ]
    from django.db import connections

    connections.close_all()  # each worker opens its own
    with Pool(args.processes) as pool:
        studies = pool.map(score_study, [(e, rules, class_priors, cache) for e in entries])
    names = ["truth"] + [r["name"] for r in rules]
    summary = {}
    for name in names:
        rows = [s["rows"][name] for s in studies]
        summary[name] = {
            key: float(np.mean([r[key] for r in rows if r[key] is not None]))
            for key in (*TRUTH_KEYS, *(f"table1_{k}" for k in TABLE1_METRICS))
        }
        summary[name]["residual_bone_cases"] = sum(r["residual_bone"] for r in rows)
    print(f"model #{version.pk} {version.name}; {args.cohort} cohort, n={len(studies)}; means in %")
    header = [
        "rule",
        "Dice r>=1 vox",
        "centreline r>=1",
        "Dice",
        "sens.",
        "PPV",
        "T1 sens",
        "T1 PPV",
        "T1 DSC",
    ]
    print(" | ".join(header) + " | residual bone")
    for name in names:
        s = summary[name]
        values = [s[k] for k in (*TRUTH_KEYS, "table1_sensitivity", "table1_ppv", "table1_dice")]
        label = "exact truth (ceiling)" if name == "truth" else name
        print(
            f"{label} | "
            + " | ".join(f"{100 * v:.1f}" for v in values)
            + f" | {s['residual_bone_cases']}/{len(studies)}"
        )
    out = ROOT / "bench" / "results" / f"decision_rules_{args.name}_{args.cohort}.json"
    out.write_text(
        json.dumps(
            {
                "model": {"id": version.pk, "name": version.name, "class_priors": class_priors},
                "cohort": args.cohort,
                "load_average": os.getloadavg(),
                "rules": rules,
                "summary": summary,
                "studies": studies,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
