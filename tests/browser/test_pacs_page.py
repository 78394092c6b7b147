"""The PACS page in headless Chromium against the real Orthanc (tests/integration/pacs_support.py): the configured
servers are listed without secrets; a server that is down and a wrong password give their messages; a phantom
fill and mask series put into Orthanc are found by the patient filters, selected, retrieved into the normal
ingest task, and the page follows the run's progress bar to done and links the new study; nothing selected is
said in words; the study's DLA series and an approved label version's SEG are then sent back from the page and
found on Orthanc; annotators may not open the page."""

import numpy as np
import pytest

from annotations.models import PseudonymMap, Study
from dla.io.dicom import new_uid
from tests.dicom_support import write_series
from tests.integration.pacs_support import PASSWORD, orthanc_fixture, pacs_fixture  # noqa: F401
from tests.integration.test_dicomweb import approve, with_dla

SHAPE = (6, 16, 16)


def put_study(pacs, folder, *, patient_id: str, patient_name: str, descriptions=("fill run", "mask run")):
    """One study of CT series (random HU, one grid) uploaded to Orthanc; returns the volumes written."""
    study_uid, frame_uid = new_uid(), new_uid()
    rng = np.random.default_rng(len(patient_id))
    written = []
    for number, description in enumerate(descriptions, start=1):
        volume = rng.integers(-1000, 1500, size=SHAPE, dtype=np.int16)
        series = write_series(
            folder / f"{patient_id}-{number}",
            volume,
            study_uid=study_uid,
            frame_of_reference_uid=frame_uid,
            series_description=description,
            series_number=number,
            patient_id=patient_id,
            patient_name=patient_name,
            study_date="20250314",
        )
        pacs.upload(series.paths)
        written.append(series)
    return study_uid, written


def search(page, server: str, **filters):
    page.select_option("#pacs-server", server)
    for name in ("patient_name", "patient_id"):
        page.fill(f"#pacs-search input[name={name}]", filters.get(name, ""))
    page.click("#pacs-search button[type=submit]")


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_browse_select_retrieve_with_progress(
    page, live_server, users, login, shot, celery_worker, pacs, tmp_path
):
    _, written = put_study(pacs, tmp_path, patient_id="MRN-BROWSER-1", patient_name="DOE^JANE")
    put_study(
        pacs, tmp_path, patient_id="MRN-OTHER-2", patient_name="ROE^RICHARD", descriptions=("fill run",)
    )

    login(page, "annotator")
    response = page.goto(f"{live_server.url}/pacs/")
    assert response.status == 403 and "Only admins" in page.content()
    assert page.locator("[data-testid=nav-pacs]").count() == 0
    page.click("button:has-text('Log out')")

    Study.objects.create(pseudonym="PACS-EXISTING", patient_pseudonym="PT-EXISTING")
    login(page, "admin")
    page.click("[data-testid=nav-pacs]")
    page.wait_for_selector("[data-testid=pacs-server-table]")
    servers = page.locator("[data-testid=pacs-server-table]").inner_text()
    assert "orthanc" in servers and "/dicom-web" in servers and "HTTP basic as dla" in servers
    assert PASSWORD not in page.content()

    # a server nobody listens on, then a wrong password: the server's reason in words
    search(page, "orthanc-down")
    page.wait_for_selector("#pacs-search-status .flash.error")
    assert "cannot be reached" in page.locator("#pacs-search-status").inner_text()
    search(page, "orthanc-wrongpw")
    page.wait_for_selector("#pacs-search-status .flash.error:has-text('credentials')")
    assert "HTTP 401" in page.locator("#pacs-search-status").inner_text()
    shot(page, "pacs-wrong-credentials")

    # the patient filter finds one study of the two; its series are listed with instance counts
    search(page, "orthanc", patient_id="MRN-BROWSER-*")
    page.wait_for_selector("#pacs-studies > *")
    assert page.locator("[data-testid=pacs-study-table]").count() == 1, page.locator("main").inner_text()
    rows = page.locator("[data-testid=pacs-study-table] tbody tr")
    assert rows.count() == 1
    row = rows.first.inner_text()
    assert "DOE^JANE" in row and "2025-03-14" in row and "CT" in row and str(2 * SHAPE[0]) in row
    page.click("[data-testid=pacs-open-study]")
    page.wait_for_selector("[data-testid=pacs-series-table]")
    series_rows = page.locator("[data-testid=pacs-series-table] tbody tr")
    assert series_rows.count() == 2
    assert "fill run" in series_rows.nth(0).inner_text() and "mask run" in series_rows.nth(1).inner_text()
    assert str(SHAPE[0]) in series_rows.nth(0).inner_text()

    # nothing selected: said, nothing started
    page.click("#pacs-retrieve-button")
    page.wait_for_selector("#pacs-retrieve-status .flash.error")
    assert "Nothing selected" in page.locator("#pacs-retrieve-status").inner_text()
    assert Study.objects.count() == 1

    # an existing study as the target: the new study's fields go away, and come back
    page.select_option("#pacs-target-study", label="PACS-EXISTING")
    assert not page.locator("#pacs-retrieve input[name=pseudonym]").is_visible()
    assert not page.locator("#pacs-retrieve select[name=cohort]").is_visible()
    page.select_option("#pacs-target-study", label="a new study")
    assert page.locator("#pacs-retrieve input[name=pseudonym]").is_visible()

    page.check("[data-testid=pacs-series-table] thead input[name=all-series]")
    assert page.locator("#pacs-selection-count").inner_text() == "2 series selected"
    page.fill("#pacs-retrieve input[name=pseudonym]", "PACS-B1")
    page.click("#pacs-retrieve-button")
    page.wait_for_selector("[data-testid=pacs-study-link]", timeout=90000)
    run = page.locator("[data-testid=pacs-retrieve-run] .run")
    assert run.get_attribute("data-state") == "succeeded"
    assert run.locator(".progress").get_attribute("aria-valuenow") == "100"
    page.wait_for_selector("[data-testid=pacs-series-table] :text('imported: fill of PACS-B1')")
    shot(page, "pacs-retrieved")

    study = Study.objects.get(pseudonym="PACS-B1")
    linked = page.locator("[data-testid=pacs-series-table] a:has-text('PACS-B1')")
    assert linked.count() == 2 and linked.first.get_attribute("href") == f"/studies/{study.pk}/"
    np.testing.assert_array_equal(study.volume("fill").array(), written[0].volume)
    np.testing.assert_array_equal(study.volume("mask").array(), written[1].volume)
    assert PseudonymMap.objects.filter(study=study).exists()
    assert "MRN-BROWSER-1" not in repr(list(Study.objects.values()))

    # send back (STOW-RS): nothing chosen is said; then the DLA series and the SEG, verified on the server
    with_dla(study)
    version = approve(study, (np.asarray(study.volume("fill").array()) > 300).astype(np.uint8))
    before = pacs.instance_count()
    page.reload()
    page.select_option("#pacs-send-study", label="PACS-B1")
    assert page.locator("#pacs-send input[name=include_dla]").is_checked()
    page.uncheck("#pacs-send input[name=include_dla]")
    page.click("#pacs-send button[type=submit]")
    page.wait_for_selector("#pacs-send-status .flash.error:has-text('Nothing to send')")
    page.check("#pacs-send input[name=include_dla]")
    page.select_option("#pacs-send-version", str(version.pk))
    page.click("#pacs-send button[type=submit]")
    page.wait_for_selector("#pacs-send-status .flash.success", timeout=90000)
    assert f"stored {SHAPE[0] + 1} instance(s)" in page.locator("#pacs-send-status").inner_text()
    assert pacs.instance_count() == before + SHAPE[0] + 1
    shot(page, "pacs-sent")

    page.click("[data-testid=pacs-send-run] a:has-text('PACS-B1')")
    page.wait_for_url(f"**/studies/{study.pk}/")
    assert not page.js_errors


# ---------------------------------------------------------------------------------------------------------
# the page's server list from the environment (no browser needed)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_server_list_shows_url_and_auth_kind_never_a_secret(client, users, monkeypatch):
    monkeypatch.setenv("DLA_DICOMWEB_SERVERS", "pacs,research")
    monkeypatch.setenv("DLA_DICOMWEB_PACS_URL", "https://pacs.example.org/dicom-web/")
    monkeypatch.setenv("DLA_DICOMWEB_PACS_USERNAME", "dla-reader")
    monkeypatch.setenv("DLA_DICOMWEB_PACS_PASSWORD", "s3cret-pw-123")
    monkeypatch.setenv("DLA_DICOMWEB_RESEARCH_URL", "http://10.1.2.3:8042/dicom-web")
    monkeypatch.setenv("DLA_DICOMWEB_RESEARCH_TOKEN", "tok-abcdef-987")
    client.force_login(users["admin"])
    html = client.get("/pacs/").content.decode()
    assert "https://pacs.example.org/dicom-web" in html and "HTTP basic as <code>dla-reader</code>" in html
    assert "http://10.1.2.3:8042/dicom-web" in html and "bearer token" in html
    assert "s3cret-pw-123" not in html and "tok-abcdef-987" not in html
    client.force_login(users["annotator"])
    assert client.get("/pacs/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    "servers, expected",
    [
        ("", "No DICOMweb server is configured"),
        ("Bad Name", "The DICOMweb configuration is malformed: DLA_DICOMWEB_SERVERS: server name"),
    ],
)
def test_no_or_malformed_configuration_is_said(client, users, monkeypatch, servers, expected):
    monkeypatch.setenv("DLA_DICOMWEB_SERVERS", servers)
    client.force_login(users["admin"])
    response = client.get("/pacs/")
    assert response.status_code == 200 and expected in response.content.decode()
    assert "pacs.js" not in response.content.decode()  # nothing to browse
