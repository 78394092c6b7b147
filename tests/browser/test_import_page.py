"""The import page in headless Chromium: upload a DICOM series with a progress bar, follow the ingest run to
the new study; a bad file shows the server's message."""

import numpy as np
import pytest

from annotations.models import Study
from dla.io.dicom import new_uid, write_dicom_series

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_upload_series_then_bad_file(page, live_server, users, login, shot, celery_worker, tmp_path):
    volume = np.random.default_rng(1).integers(-1000, 1500, size=(5, 16, 16), dtype=np.int16)
    paths = write_dicom_series(
        volume,
        (2.0, 1.0, 1.0),
        np.diag([1.0, 1.0, 2.0, 1.0]),
        tmp_path / "s",
        study_uid=new_uid(),
        series_uid=new_uid(),
        frame_of_reference_uid=new_uid(),
        series_description="FILL",
        series_number=1,
        patient_id="X1",
        patient_name="Secret^Name",
    )
    login(page, "annotator")
    page.goto(f"{live_server.url}/import/")
    page.set_input_files("#files", [str(p) for p in paths])
    page.fill("input[name=pseudonym]", "BROWSER-1")
    page.click("#import-form button[type=submit]")
    page.wait_for_selector("[data-testid=study-link]", timeout=30000)
    shot(page, "import-done")
    study = Study.objects.get(pseudonym="BROWSER-1")
    assert study.volume("fill").shape == [5, 16, 16]
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#files", [str(bad)])
    page.fill("input[name=pseudonym]", "BROWSER-2")
    page.click("#import-form button[type=submit]")
    page.wait_for_selector("#upload-status .flash.error", timeout=30000)
    assert "not a DICOM file" in page.locator("#upload-status").inner_text()
    shot(page, "import-error")
    assert not Study.objects.filter(pseudonym="BROWSER-2").exists()
    assert not page.js_errors
