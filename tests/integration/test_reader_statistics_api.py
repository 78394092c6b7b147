# ruff: noqa: F811
"""The results endpoint against independent implementations (statsmodels' mcnemar and fleiss_kappa, scipy's
wilcoxon, scikit-learn's cohen_kappa_score) on scripted answer sets from two and from three readers."""

import random

import numpy as np
import pytest
from scipy.stats import wilcoxon
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

pytestmark = pytest.mark.django_db


def tiny_case_studies(n):
    """Studies with tiny subtracted and DLA volumes (the statistics never look at voxels)."""
    from annotations.models import Study, Volume

    studies = []
    for i in range(n):
        s = Study.objects.create(pseudonym=f"ST-{i:03d}", patient_pseudonym=f"PT-{i:03d}")
        for role in ("subtracted", "dla"):
            Volume.create_from_array(
                study=s,
                role=role,
                array=np.zeros((4, 4, 4), np.int16),
                spacing_mm=(1, 1, 1),
                affine_lps=np.eye(4),
            )
        studies.append(s)
    return studies


def scripted_value(key, case_index, reader_index, method, rng):
    """Answers with a method effect (DSA shows more bone, DLA better vessels) and reader noise."""
    dsa = method == "dsa"
    if key == "residual_bone":
        return rng.random() < (0.6 if dsa else 0.1) or (case_index % 4 == 0 and dsa)
    if key == "artifact_severity":
        return int(min(3, max(0, round(rng.gauss(1.8 if dsa else 0.3, 0.8)))))
    if key == "small_vessel_conspicuity":
        return int(min(5, max(1, round(rng.gauss(3.0 if dsa else 3.8, 0.9) + 0.4 * (case_index % 3 - 1)))))
    if key == "diagnostic_confidence":
        return int(min(5, max(1, 3 + (case_index % 3) - (1 if reader_index == 1 and dsa else 0))))
    if key == "artifact_locations":
        return [c for c in ("otic capsule", "skull base") if rng.random() < (0.5 if dsa else 0.1)]
    return "ok" if rng.random() < 0.3 else ""


def run_study(users_list, n_cases, seed):
    from reader_study import services
    from reader_study.models import Assignment, ReaderStudy

    rs = ReaderStudy.objects.create(title="stats", seed=seed)
    services.add_default_questions(rs)
    studies = tiny_case_studies(n_cases)
    services.add_cases(rs, [s.pk for s in studies])
    services.add_readers(rs, [u.pk for u in users_list])
    services.open_study(rs)
    questions = {q.key: q for q in rs.questions.all()}
    case_index = {c.pk: i for i, c in enumerate(rs.cases.order_by("id"))}
    reader_index = {u.pk: i for i, u in enumerate(users_list)}
    rng = random.Random(seed)
    truth = {}  # (key, case, reader, method) -> value
    for asg in Assignment.objects.filter(reader__reader_study=rs).select_related("reader").order_by("id"):
        user = asg.reader.user
        answers = []
        for image in asg.images():
            method = asg.method_of(image)
            for key, q in questions.items():
                v = scripted_value(key, case_index[asg.case_id], reader_index[user.pk], method, rng)
                if key == "artifact_locations" and not truth[("residual_bone", asg.case_id, user.pk, method)]:
                    v = []  # asked only when residual bone is yes (a conditional question)
                truth[(key, asg.case_id, user.pk, method)] = v
                answers.append({"question": q.pk, "image": image, "value": v})
        services.save_answers(asg, user, answers, elapsed_s=rng.uniform(20, 90))
        services.submit(asg, user)
    return rs, truth


def series(truth, key, method=None):
    return {k[1:]: v for k, v in truth.items() if k[0] == key and (method is None or k[3] == method)}


@pytest.mark.parametrize("n_readers", [2, 3])
def test_results_match_independent_implementations(n_readers, make_user, client_for, users):
    readers = [make_user(f"rd{i}", "Reader") for i in range(n_readers)]
    rs, truth = run_study(readers, n_cases=14, seed=11 + n_readers)
    r = client_for("admin").get(f"/api/reader-studies/{rs.pk}/results/")
    assert r.status_code == 200
    res = r.json()
    by_key = {q["key"]: q for q in res["questions"]}
    cases = sorted({k[1] for k in truth})
    reader_ids = [u.pk for u in readers]
    pairs = [(c, u) for c in cases for u in reader_ids]

    # frequencies
    for method, label in (("dsa", "DSA"), ("dla", "DLA")):
        vals = list(series(truth, "residual_bone", method).values())
        k = sum(vals)
        entry = by_key["residual_bone"]["methods"][method]
        assert entry["label"] == label and entry["n"] == len(vals) == 14 * n_readers
        assert entry["frequency"] == f"{k}/{len(vals)} ({100 * k / len(vals):.1f}%)"

    # exact McNemar, paired per case and reader
    x = [truth[("residual_bone", c, u, "dsa")] for c, u in pairs]
    y = [truth[("residual_bone", c, u, "dla")] for c, u in pairs]
    table = [
        [
            sum(a and b for a, b in zip(x, y, strict=True)),
            sum(a and not b for a, b in zip(x, y, strict=True)),
        ],
        [
            sum(b and not a for a, b in zip(x, y, strict=True)),
            sum(not a and not b for a, b in zip(x, y, strict=True)),
        ],
    ]
    test = by_key["residual_bone"]["paired_test"]
    assert test["n_pairs"] == len(pairs)
    assert test["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert test["b_dsa_only"] == table[0][1] and test["c_dla_only"] == table[1][0]

    # Wilcoxon signed-rank on the ordinal scales
    for key in ("artifact_severity", "small_vessel_conspicuity"):
        x = [truth[(key, c, u, "dsa")] for c, u in pairs]
        y = [truth[(key, c, u, "dla")] for c, u in pairs]
        expected = wilcoxon(x, y, zero_method="wilcox")
        got = by_key[key]["paired_test"]
        assert got["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
        assert got["statistic"] == pytest.approx(expected.statistic)
        mean_dsa = np.mean(list(series(truth, key, "dsa").values()))
        assert by_key[key]["methods"]["dsa"]["mean"] == pytest.approx(mean_dsa)

    # agreement per method and pooled; items = (case, method) rated by every reader
    for key, cats in (
        ("residual_bone", [False, True]),
        ("artifact_severity", [0, 1, 2, 3]),
        ("small_vessel_conspicuity", [1, 2, 3, 4, 5]),
    ):
        for scope in ("dsa", "dla", "all"):
            methods = ("dsa", "dla") if scope == "all" else (scope,)
            items = sorted((c, m) for c in cases for m in methods)
            ratings = [[truth[(key, c, u, m)] for u in reader_ids] for c, m in items]
            got = by_key[key]["agreement"][scope]
            assert got["n_items"] == len(items)
            if n_readers == 2:
                r1 = [int(r[0]) for r in ratings]
                r2 = [int(r[1]) for r in ratings]
                labels = [int(c) for c in cats]
                assert got["method"] == "cohen"
                assert got["kappa"]["value"] == pytest.approx(
                    cohen_kappa_score(r1, r2, labels=labels), abs=1e-9
                )
                if key != "residual_bone":
                    for w in ("linear", "quadratic"):
                        expected = cohen_kappa_score(r1, r2, labels=labels, weights=w)
                        assert got[f"kappa_{w}"]["value"] == pytest.approx(expected, abs=1e-9)
            else:
                table, _ = aggregate_raters(np.array(ratings, dtype=int))
                assert got["method"] == "fleiss"
                assert got["kappa"]["value"] == pytest.approx(fleiss_kappa(table), abs=1e-9)

    # per-reader progress and times
    for row in res["readers"]:
        assert row["progress"] == "14 of 14"
        assert 20 * 14 <= row["total_time_s"] <= 90 * 14


def test_results_count_submitted_cases_only_and_handle_no_data(make_user, client_for):
    from reader_study import services
    from reader_study.models import Assignment, ReaderStudy

    reader = make_user("solo", "Reader")
    rs = ReaderStudy.objects.create(title="empty", seed=1)
    services.add_default_questions(rs)
    services.add_cases(rs, [s.pk for s in tiny_case_studies(2)])
    services.add_readers(rs, [reader.pk])
    services.open_study(rs)
    bone = rs.questions.get(key="residual_bone")
    asg = Assignment.objects.filter(reader__user=reader).first()
    services.save_answers(asg, reader, [{"question": bone.pk, "image": "A", "value": True}])
    res = client_for("admin").get(f"/api/reader-studies/{rs.pk}/results/").json()
    q = {q["key"]: q for q in res["questions"]}["residual_bone"]
    assert q["methods"]["dsa"]["n"] == 0 and q["methods"]["dsa"]["frequency"] is None
    assert "paired_test" not in q
    assert q["agreement"]["all"]["n_items"] == 0 and "note" in q["agreement"]["all"]
    assert res["readers"][0]["progress"] == "0 of 2"
