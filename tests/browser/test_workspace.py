"""The annotator's path in real headless Chromium: study list -> workspace, scroll slices, drag the threshold and
see the overlay pixels change, apply the recipe (real worker), remove an island, undo/redo, paint, commit, see
the version in the history, rotate the MIP. Screenshots go to test-artifacts/screenshots/workspace-*.png."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from dla.classes import VESSEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHAPE = (48, 64, 64)
SPACING = (1.5, 1.5, 1.5)

RED_PIXELS_JS = """(testid) => {
  const c = document.querySelector(`[data-testid=${testid}]`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > d[i + 1] + 60 && d[i] > d[i + 2] + 60) n++;
  return n;
}"""

SCREEN_POS_JS = """([axis, row, col]) => {
  const v = document.getElementById('workspace').views[axis];
  const [x, y] = v.toCanvas(row, col);
  const r = v.canvas.getBoundingClientRect();
  return [r.left + x * r.width / v.canvas.width, r.top + y * r.height / v.canvas.height];
}"""


def _draft_labels(study, username="annotator"):
    from annotations import labels
    from annotations.models import Draft

    draft = Draft.objects.get(study=study, user__username=username)
    return draft, np.asarray(labels.draft_array(draft))


def _wait_revision_above(page, revision, timeout=15000):
    page.wait_for_function(
        "(r) => Number(document.getElementById('workspace').dataset.draftRevision) > r",
        arg=revision,
        timeout=timeout,
    )
    page.wait_for_function("() => !document.getElementById('workspace').dataset.busy", timeout=timeout)
    return int(page.get_attribute("#workspace", "data-draft-revision"))


def _wait_loaded(page, axis, revision):
    page.wait_for_function(
        "([a, r]) => (document.getElementById('view-' + a).dataset.loaded || '').endsWith(':' + r)",
        arg=[axis, str(revision)],
        timeout=15000,
    )


def _go_to_slice(page, axis, index):
    page.evaluate(
        """([a, i]) => { const s = document.querySelector('#view-' + a + ' .slice-slider');
                       s.value = String(i); s.dispatchEvent(new Event('input')); }""",
        [axis, index],
    )
    page.wait_for_function(
        "([a, i]) => (document.getElementById('view-' + a).dataset.loaded || '').startsWith(i + ':')",
        arg=[axis, index],
    )


def _click_voxel(page, axis, row, col):
    x, y = page.evaluate(SCREEN_POS_JS, [axis, row, col])
    page.mouse.click(x, y)


def test_annotator_labels_a_phantom_end_to_end(
    page, live_server, users, login, shot, phantom_study, celery_worker
):
    study = phantom_study(seed=7, shape=SHAPE, spacing_mm=SPACING)
    login(page, "annotator")

    # study list with a filter, then into the workspace
    page.goto(f"{live_server.url}/studies/?cohort=unassigned")
    assert study.pseudonym in page.get_by_test_id("study-table").inner_text()
    shot(page, "workspace-study-list")
    page.click(f"text={study.pseudonym}")
    page.wait_for_selector("#workspace[data-draft-revision]")
    revision = int(page.get_attribute("#workspace", "data-draft-revision"))
    _wait_loaded(page, "z", revision)
    assert page.get_by_test_id("draft-info").inner_text().startswith("0 edits")

    # scroll slices with the wheel over the axial view
    start = page.evaluate("() => document.getElementById('workspace').views.z.index")
    box = page.get_by_test_id("canvas-z").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(3):
        page.mouse.wheel(0, 120)
    page.wait_for_function(f"() => document.getElementById('workspace').views.z.index === {start + 3}")
    assert page.locator("#view-z .idx").inner_text().startswith(f"{start + 4} /")
    page.wait_for_function(
        f"() => (document.getElementById('view-z').dataset.loaded || '').startsWith('{start + 3}:')"
    )
    # HU readout under the cursor
    page.mouse.move(box["x"] + box["width"] / 2 + 3, box["y"] + box["height"] / 2)
    assert "HU" in page.get_by_test_id("readout").inner_text()

    # drag the threshold slider: the preview on the current slices changes while dragging
    assert page.evaluate(RED_PIXELS_JS, "canvas-z") == 0
    slider = page.locator("#threshold-slider").bounding_box()
    y = slider["y"] + slider["height"] / 2
    page.mouse.move(slider["x"] + slider["width"] * 0.9, y)
    page.mouse.down()
    page.mouse.move(slider["x"] + slider["width"] * 0.6, y, steps=4)
    page.wait_for_function("() => document.getElementById('workspace').dataset.previewThreshold")
    high = page.evaluate(RED_PIXELS_JS, "canvas-z")
    page.mouse.move(slider["x"] + slider["width"] * 0.12, y, steps=6)
    page.mouse.up()
    page.wait_for_function(
        "() => Number(document.getElementById('workspace').dataset.previewThreshold) < 300", timeout=5000
    )
    low = page.evaluate(RED_PIXELS_JS, "canvas-z")
    assert low > high, f"a lower threshold must colour more pixels ({low} vs {high})"
    shot(page, "workspace-threshold-preview")

    # set 400 HU in the number box and apply the recipe on the whole volume (real worker, progress bar)
    page.fill("#threshold-number", "400")
    page.press("#threshold-number", "Enter")
    assert page.input_value("#min-component") == "20", "the default floor is physical: 20 mm^3"
    page.click("#threshold-apply")  # with the default floor
    page.wait_for_selector("#recipe-progress .run[data-state=succeeded]", timeout=60000)
    report = page.locator("[data-testid=recipe-report]").inner_text()
    assert report.startswith("Kept ") and "vessel voxels" in report, report
    assert page.locator("#recipe-progress .flash.warning").count() == 0, "no class came out empty"
    revision = _wait_revision_above(page, revision)
    draft, labels = _draft_labels(study)
    assert (labels == VESSEL).sum() > 50, "the recipe must find the phantom's vessels"
    _wait_loaded(page, "z", revision)

    # go to the axial slice with the most vessel voxels: the overlay shows them
    vessels_after_recipe = int((labels == VESSEL).sum())
    z = int(np.argmax((labels == VESSEL).sum(axis=(1, 2))))
    _go_to_slice(page, "z", z)
    _wait_loaded(page, "z", revision)
    assert page.evaluate(RED_PIXELS_JS, "canvas-z") > 0
    shot(page, "workspace-after-recipe")

    # paint a speck with the brush away from the vessels (a 2-D disc on this slice)
    page.keyboard.press("b")
    page.fill("#brush-radius", "3")
    far = ndi.distance_transform_edt(labels[z] != VESSEL)
    py, px = (int(c) for c in np.unravel_index(np.argmax(far), far.shape))
    _click_voxel(page, "z", py, px)
    revision = _wait_revision_above(page, revision)
    draft, labels = _draft_labels(study)
    assert labels[z, py, px] == VESSEL, (z, py, px, draft.ops[-1], page.inner_text("#ws-status"))
    painted = int((labels == VESSEL).sum()) - vessels_after_recipe
    assert painted > 5
    _wait_loaded(page, "z", revision)
    shot(page, "workspace-painted-speck")

    # remove it again with one click of the island tool: the vessel tree stays
    page.click("#tools [data-tool=island]")
    _click_voxel(page, "z", py, px)
    revision = _wait_revision_above(page, revision)
    _, labels = _draft_labels(study)
    assert labels[z, py, px] != VESSEL and int((labels == VESSEL).sum()) == vessels_after_recipe
    _wait_loaded(page, "z", revision)

    # undo (keyboard) brings the speck back, redo (button) removes it again
    page.keyboard.press("Control+z")
    revision = _wait_revision_above(page, revision)
    assert _draft_labels(study)[1][z, py, px] == VESSEL
    page.click("#redo")
    revision = _wait_revision_above(page, revision)
    assert _draft_labels(study)[1][z, py, px] != VESSEL
    _wait_loaded(page, "z", revision)
    shot(page, "workspace-edits")

    # commit and see the version in the history
    page.fill("#commit-message", "recipe at 400 HU; painted and removed a speck")
    page.click("#commit-button")
    page.wait_for_selector("#history li[data-version='1']", timeout=15000)
    assert "removed a speck" in page.get_by_test_id("history").inner_text()
    assert page.get_by_test_id("draft-info").inner_text().startswith("0 edits on v1")

    # rotate the MIP by dragging
    mip = page.get_by_test_id("mip-canvas")
    page.wait_for_function(
        "() => { const c = document.querySelector('[data-testid=mip-canvas]');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " for (let i = 0; i < d.length; i += 4) if (d[i] > 40) return true; return false; }",
        timeout=15000,
    )
    box = mip.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert page.get_by_test_id("mip-angle").inner_text() != "0°"
    page.wait_for_timeout(800)
    shot(page, "workspace-mip-rotated")
    # at rest the draft's vessel label lies on the MIP in the vessel colour; switching it off removes it
    page.wait_for_function(f"() => ({RED_PIXELS_JS})('mip-canvas') > 0", timeout=15000)
    page.uncheck("#mip-vessels")
    page.wait_for_function(f"() => ({RED_PIXELS_JS})('mip-canvas') === 0", timeout=5000)
    # keyboard: arrows step 10 degrees, space plays and pauses
    page.evaluate("() => document.activeElement.blur()")
    angle = int(page.get_by_test_id("mip-angle").inner_text().rstrip("°"))
    page.keyboard.press("ArrowRight")
    assert page.get_by_test_id("mip-angle").inner_text() == f"{(angle + 10) % 360}°"
    page.keyboard.press(" ")
    assert "Pause" in page.inner_text("#mip-play")
    page.wait_for_function(
        "(a) => document.querySelector('[data-testid=mip-angle]').textContent !== a",
        arg=f"{(angle + 10) % 360}°",
    )
    page.keyboard.press(" ")
    assert "Play" in page.inner_text("#mip-play")
    assert not page.js_errors, page.js_errors


def test_workspace_shows_readable_errors(page, live_server, users, login, shot, phantom_study):
    study = phantom_study(seed=8, shape=(16, 24, 24))
    login(page, "annotator")
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_selector("#workspace[data-draft-revision]")
    # a slice request the server refuses shows its message on the view instead of a blank canvas
    page.evaluate(
        "() => { const v = document.getElementById('workspace').views.z; v.count = 99; v.setIndex(40); }"
    )
    error = page.locator("#view-z .view-error")
    error.wait_for(state="visible")
    assert "outside 0..15 along z" in error.inner_text()
    # help panel opens from the keyboard
    page.keyboard.press("?")
    assert page.locator("#help-panel").is_visible()
    shot(page, "workspace-error-and-help")
    # a reader may not open the workspace (own browser context: a fresh session)
    context = page.context.browser.new_context()
    try:
        reader_page = context.new_page()
        login(reader_page, "reader")
        assert reader_page.goto(f"{live_server.url}/studies/{study.pk}/").status == 403
        assert reader_page.goto(f"{live_server.url}/studies/").status == 403
    finally:
        context.close()


def test_overlay_colours_are_the_ones_of_dla_classes(page, live_server, users, login, shot, phantom_study):
    """The page hands dla.classes to the browser (json_script) and the overlay paints exactly those colours."""
    from rest_framework.test import APIClient

    from dla.classes import CLASS_COLORS_RGBA, CLASS_NAMES, LABELED_CLASSES

    study = phantom_study(seed=92, shape=(24, 48, 48), spacing_mm=SPACING)
    api = APIClient()
    api.force_authenticate(users["annotator"])
    draft = api.post("/api/drafts/", {"study": study.pk}, format="json").json()
    # one ball per labeled class on axial slice 12, away from the crosshair lines (the volume's centre)
    centres = dict(zip(LABELED_CLASSES, ([12, 10, 10], [12, 10, 38], [12, 38, 10]), strict=True))
    for label, center in centres.items():
        op = {"op": "brush", "center_zyx": center, "radius_mm": 4.5, "label": label, "shape": "sphere"}
        assert api.post(f"/api/drafts/{draft['id']}/ops/", {"op": op}, format="json").status_code == 200

    login(page, "annotator")
    # the draft's label slices are held back until the overlay controls have changed: the views then compose
    # with no labels yet, and their `data-loaded` marker must not claim the draft's revision before the labels
    # arrive (it did: a compose named the revision wanted, not the one held, and the pixels below were grey)
    held = []
    page.route("**/api/drafts/*/slice/**", lambda route: held.append(route))
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_selector("#workspace[data-draft-revision]")
    revision = int(page.get_attribute("#workspace", "data-draft-revision"))
    assert revision == len(centres)
    for _ in range(300):  # until the z view has asked for its draft slice
        if any("axis=z" in route.request.url for route in held):
            break
        page.wait_for_timeout(50)
    else:
        raise AssertionError("the z view never asked for the draft's label slice")

    # the definitions in the page are dla.classes'
    data = page.evaluate("() => JSON.parse(document.getElementById('tissue-classes').textContent)")
    assert data["ids"] == {name: class_id for class_id, name in CLASS_NAMES.items()}
    assert [c["id"] for c in data["labeled"]] == list(LABELED_CLASSES)
    assert {c["id"]: tuple(c["rgba"]) for c in data["labeled"]} == CLASS_COLORS_RGBA
    assert {c["id"]: c["name"] for c in data["labeled"]} == {c: CLASS_NAMES[c] for c in LABELED_CLASSES}
    # the paint-class choices and the overlay legend swatches use them
    options = page.eval_on_selector_all("#brush-class option", "os => os.map((o) => Number(o.value))")
    assert options == list(LABELED_CLASSES)
    for class_id in LABELED_CLASSES:
        swatch = page.eval_on_selector(
            f"#class-toggles input[data-class-id='{class_id}'] ~ .swatch",
            "s => getComputedStyle(s).backgroundColor",
        )
        r, g, b, _ = CLASS_COLORS_RGBA[class_id]
        assert swatch == f"rgb({r}, {g}, {b})", (class_id, swatch)

    # every class shown, opaque overlay: the canvas pixel at each ball's centre is the class colour itself
    page.evaluate(
        """() => {
          for (const box of document.querySelectorAll('#class-toggles input[type=checkbox]')) {
            if (!box.checked) box.click();
          }
          const o = document.getElementById('overlay-opacity');
          o.value = '100';
          o.dispatchEvent(new Event('input'));
        }"""
    )
    loaded = page.get_attribute("#view-z", "data-loaded") or ""
    assert not loaded.endswith(f":{revision}"), loaded
    for route in held:
        route.continue_()
    page.unroute("**/api/drafts/*/slice/**")
    _go_to_slice(page, "z", 12)
    _wait_loaded(page, "z", revision)
    for class_id, (_, row, col) in centres.items():
        pixel = page.evaluate(
            """([row, col]) => {
              const v = document.getElementById('workspace').views.z;
              const [x, y] = v.toCanvas(row, col);
              return Array.from(v.canvas.getContext('2d').getImageData(Math.floor(x), Math.floor(y), 1, 1).data);
            }""",
            [row, col],
        )
        assert tuple(pixel[:3]) == CLASS_COLORS_RGBA[class_id][:3], (CLASS_NAMES[class_id], pixel)
    shot(page, "workspace-class-colours")
    assert not page.js_errors, page.js_errors
