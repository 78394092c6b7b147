"""`make_phantoms` writes DICOM series and NIfTI that pydicom, nibabel and dcmtk read, with the study/series
UID structure of a real 3D-DSA exam; `--cohort --ingest` imports the paper's split; the demo seed labels train
studies."""

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.management import call_command

from annotations.models import LabelVersion, Study
from dla.io.dicom import read_dicom_series

pytestmark = pytest.mark.django_db


def test_make_phantoms_writes_readable_dicom_and_nifti(tmp_path):
    call_command(
        "make_phantoms",
        "--count",
        "1",
        "--shape",
        "24",
        "48",
        "48",
        "--spacing",
        "1.5",
        "1.5",
        "1.5",
        "--seed",
        "4",
        "--out",
        str(tmp_path),
    )
    folder = tmp_path / "PH-004"
    series = {s.series_description: s for s in read_dicom_series(sorted((folder / "dicom").rglob("*.dcm")))}
    assert set(series) == {"FILL contrast-enhanced CBCT", "MASK native CBCT", "SUBTRACTED 3D-DSA"}
    assert len({s.study_uid for s in series.values()}) == 1
    assert len({s.frame_of_reference_uid for s in series.values()}) == 1
    assert len({s.series_uid for s in series.values()}) == 3
    for role, description in (("fill", "FILL"), ("subtracted", "SUBTRACTED")):
        dicom = next(s for d, s in series.items() if d.startswith(description))
        nifti = np.asarray(nib.load(folder / "nifti" / f"{role}.nii.gz").dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(dicom.volume_hu, nifti)
    fill, mask, sub = (
        next(s for d, s in series.items() if d.startswith(p)).volume_hu.astype(int)
        for p in ("FILL", "MASK", "SUBTRACTED")
    )
    np.testing.assert_array_equal(sub, np.clip(fill - mask, -32768, 32767))
    truth = np.asarray(nib.load(folder / "nifti" / "truth.nii.gz").dataobj)
    assert set(np.unique(truth)) <= {0, 1, 2, 3} and (truth == 1).any()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["subject_id"] == "PH-004" and "motion" in meta
    first = pydicom.dcmread(next((folder / "dicom" / "fill").glob("*.dcm")))
    assert first.Modality == "CT" and first.RescaleSlope == 1
    if shutil.which("dcmdump"):
        assert (
            subprocess.run(
                ["dcmdump", str(next((folder / "dicom" / "fill").glob("*.dcm")))], capture_output=True
            ).returncode
            == 0
        )
    if shutil.which("dciodvfy"):
        out = subprocess.run(
            ["dciodvfy", str(next((folder / "dicom" / "subtracted").glob("*.dcm")))],
            capture_output=True,
            text=True,
        )
        assert "Error" not in out.stdout + out.stderr, out.stderr


def test_cohort_mode_ingests_with_the_paper_split():
    call_command("make_phantoms", "--cohort", "--count", "3", "--shape", "16", "24", "24", "--ingest")
    studies = list(Study.objects.order_by("pseudonym"))
    assert [s.pseudonym for s in studies] == ["PH-001", "PH-002", "PH-003"]
    from dla.phantoms import cohort_plan

    plan = {e["subject_id"]: e for e in cohort_plan(105, seed=0)}
    for study in studies:
        assert study.cohort == plan[study.pseudonym]["split"]
        assert study.injection_site == plan[study.pseudonym]["injection"]
        assert {v.role for v in study.volumes.all()} == {"fill", "mask", "subtracted", "truth"}
        assert study.source == "phantom" and "motion" in study.metadata["phantom"]


def test_bad_phantom_arguments_are_a_command_error(tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="shape"):
        call_command("make_phantoms", "--shape", "0", "8", "8", "--out", str(tmp_path))
    with pytest.raises(CommandError, match="--out"):
        call_command("make_phantoms")


def test_demo_seed_creates_labelled_train_studies(make_user):
    make_user("annotator", "Annotator")
    make_user("admin", "Admin")
    call_command("seed_demo_studies", "--per-cohort", "1", "0", "1")
    train = Study.objects.get(cohort="train")
    version = LabelVersion.objects.get(study=train)
    assert version.review_status == "approved" and version.counts["1"] > 0
    assert Study.objects.get(cohort="test").label_versions.count() == 0
    call_command("seed_demo_studies", "--per-cohort", "1", "0", "1")  # idempotent
    assert Study.objects.count() == 2


def test_fresh_demo_trains_with_the_form_defaults_once_the_admin_approves_the_validation_labels(make_user):
    from annotations.labels import review
    from inference import services
    from inference.serializers import TrainRequestSerializer

    make_user("annotator", "Annotator")
    admin = make_user("admin", "Admin")
    call_command("seed_demo_studies", "--per-cohort", "1", "1", "0")
    form = TrainRequestSerializer(data={})  # the training form's defaults
    assert form.is_valid(), form.errors
    cohorts = form.validated_data["train_cohort"], form.validated_data["validation_cohort"]
    waiting = LabelVersion.objects.get(study__cohort="validation")
    assert waiting.review_status == "submitted" and waiting.counts["1"] > 0, (
        "vessels with the recipe defaults"
    )
    with pytest.raises(services.TrainingInputError, match="validation"):
        services.training_plan(*cohorts)
    review(waiting, admin, "approved", "")
    plan = services.training_plan(*cohorts)
    assert len(plan["train"]) == 1 and len(plan["validation"]) == 1
