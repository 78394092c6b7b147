// Annotation workspace: three orthogonal slice views and a MIP, window/level, label overlay of the user's draft,
// threshold preview + recipe (with the advanced "beyond one threshold" options: hysteresis growing, local edge,
// vesselness), "Accept model vessels" from the study's predicted class map, Slicer's tools (islands: remove / keep selected / split to a class / keep largest /
// remove small; brush and erase "only over" a class; margin grow/shrink and smoothing in mm; scissors), undo/redo,
// commit with conflict handling, a banner when someone else commits, version history. Data: volumes and the
// newest class map via json_script, everything else from the REST API.
// A brush drag is one edit: the dabs are painted into a local copy of the view's label slice while dragging (no
// request, no slice reload) and sent as one brush op with all stroke points on release, so one undo reverts it.
// Opening the page makes no draft: until the first edit the overlay shows the head version (revision "0"), and
// the first edit opens the user's draft. With data-review-version the page is read-only on that label version,
// shows its changes against the parent (overlay and per-class counts) and, for admins, approve / reject.
import { api, el } from "./api.js";
import { plainError, runRow } from "./taskruns.js";
import { CLASS_COLORS, CLASS_LABELS, LABELED_CLASSES, SOFT_TISSUE, UNLABELED, VESSEL } from "./classes.js";
import { DIFF_COLORS, SliceView, draftSlice, versionSlice, volumeSlice } from "./viewer.js";
import { RotatingMip } from "./viewer_mip.js";

const root = document.getElementById("workspace");
const volumes = JSON.parse(document.getElementById("ws-volumes").textContent);
const presets = JSON.parse(document.getElementById("ws-presets").textContent);
// the study's newest predicted class map {id, model_version_id, created_at, shape}, or null
const classMap = JSON.parse(document.getElementById("ws-class-map").textContent);
const statusBox = document.getElementById("ws-status");
const $ = (id) => document.getElementById(id);

const ws = {
  studyId: Number(root.dataset.studyId),
  volume: null,
  window: { center: 300, width: 1200 },
  // every labeled class shown except soft tissue: it covers the head
  overlay: { visible: true, opacity: 0.5, classes: Object.fromEntries(LABELED_CLASSES.map((id) => [id, id !== SOFT_TISSUE])) },
  crosshair: { z: 0, y: 0, x: 0 },
  draft: null,
  labels: null, // the label source shown: {key, slice(axis, index), mipUrl(angle)} of the draft or a version
  diff: null, // review: {source: the parent's label source, visible}
  head: null, // the study's newest label version (shown until the first edit makes a draft)
  review: root.dataset.reviewVersion ? { id: Number(root.dataset.reviewVersion), version: null } : null,
  threshold: Number($("threshold-slider").value),
  tool: "navigate",
};
const canReview = root.dataset.canReview === "1";
root.ws = ws; // for debugging in the console

function setStatus(message, kind = "info") {
  statusBox.textContent = message || "";
  statusBox.className = `ws-status ${message ? kind : ""}`;
}

// A new action starts: the outcome of the previous one (status line, a finished recipe's row) is history now.
function beginAction() {
  setStatus("");
  const recipeBox = $("recipe-progress");
  if (!recipeBox.querySelector(".run[data-state=queued], .run[data-state=running]")) recipeBox.replaceChildren();
}

const MIP_SIZE_PX = 256;

function draftSource(draft) {
  return {
    key: String(draft.revision),
    slice: (axis, index) => draftSlice(draft.id, draft.revision, axis, index),
    mipUrl: (angle) => `/api/drafts/${draft.id}/mip/?angle=${angle}&size=${MIP_SIZE_PX}&label=${VESSEL}&rev=${draft.revision}`,
  };
}

// key "0": the labels a new draft starts from (its revision 0), so a lazily made draft does not reload the views
function versionSource(version, key = "0") {
  return {
    key,
    slice: (axis, index) => versionSlice(version.id, axis, index),
    mipUrl: (angle) => `/api/label-versions/${version.id}/mip/?angle=${angle}&size=${MIP_SIZE_PX}&label=${VESSEL}`,
  };
}

const views = {};
for (const axis of ["z", "y", "x"]) views[axis] = new SliceView($(`view-${axis}`), axis, ws);
const allViews = () => Object.values(views);
root.views = views; // tests and the console map voxels to screen positions through these

// ------------------------------------------------------------------------------------------------ volumes

const select = $("volume-select");
for (const v of volumes) select.append(el("option", { value: v.id }, `${v.role} (#${v.id})`));
select.addEventListener("change", () => selectVolume(volumes.find((v) => v.id === Number(select.value))));

function selectVolume(volume) {
  ws.volume = volume;
  select.value = String(volume.id);
  applyPreset(volume.role === "subtracted" ? "dsa" : "vessel", { redraw: false });
  const [nz, ny, nx] = volume.shape;
  if (!ws.crosshairSet) {
    ws.crosshair = { z: Math.floor(nz / 2), y: Math.floor(ny / 2), x: Math.floor(nx / 2) };
    ws.crosshairSet = true;
  }
  for (const view of allViews()) {
    view.setVolume(volume.shape, volume.spacing_mm);
    view.index = Math.min(ws.crosshair[view.axis], view.count - 1);
    view.slider.value = String(view.index);
    view.hu = null;
    view.held = null;
    view.load();
  }
  mip.reload();
  followCine();
}

// ------------------------------------------------------------------------------------------------ MIP

const mipError = $("view-mip").querySelector(".view-error");
const mipVessels = $("mip-vessels");
const mip = new RotatingMip([{
  canvas: $("mip-canvas"),
  frameUrl: (angle) => `/api/volumes/${ws.volume.id}/mip/?angle=${angle}&size=${MIP_SIZE_PX}`,
  // the shown labels' vessel class projected on top, once the rotation rests
  overlayUrl: (angle) => (mipVessels.checked && ws.labels ? ws.labels.mipUrl(angle) : null),
  onError: (message) => { mipError.textContent = message || ""; mipError.hidden = !message; },
}], {
  frames: 36, // the server's cine: 10 degree steps
  fitCanvas: true,
  degreesPerPixel: 0.75,
  onFrame: ({ angle }) => { $("mip-angle").textContent = `${angle}°`; },
  onPlaying: (playing) => { $("mip-play").textContent = playing ? "❚❚ Pause" : "▶ Play"; },
});
$("mip-play").addEventListener("click", () => ws.volume && mip.toggle());
mipVessels.addEventListener("change", () => mip.refreshOverlay());

// Ask for the volume's cine once if it is missing, then follow its run until all angles are cached.
const mipStatus = $("mip-status");
let cineWatch = 0, cineTimer = null;
function followCine() {
  cineWatch += 1;
  clearTimeout(cineTimer);
  watchCine(cineWatch, ws.volume.id, true);
}

async function watchCine(watch, volumeId, mayStart) {
  if (watch !== cineWatch) return;
  try {
    const cine = await api(`/api/volumes/${volumeId}/cine/`);
    if (watch !== cineWatch) return;
    const active = cine.run && ["queued", "running"].includes(cine.run.state);
    if (cine.complete) {
      mipStatus.textContent = `${cine.angles.length} angles cached`;
      return;
    }
    if (!active && mayStart) {
      await api(`/api/volumes/${volumeId}/cine/`, { method: "POST", body: {} });
      mipStatus.textContent = "cine queued: angles render in the background";
    } else if (active) {
      mipStatus.textContent = `cine ${cine.cached.length}/${cine.angles.length} angles`;
    } else {
      mipStatus.textContent = `cine ${cine.run ? cine.run.state : "missing"}; angles render on demand`;
      return;
    }
    cineTimer = setTimeout(() => watchCine(watch, volumeId, false), 2000);
  } catch (err) {
    mipStatus.textContent = `cine: ${err.message}`;
  }
}

// ------------------------------------------------------------------------------------------------ window

const presetBox = $("presets");
const presetNames = { vessel: "Vessel", bone: "Bone", soft_tissue: "Soft tissue", dsa: "DSA" };
Object.keys(presets).forEach((name, i) => {
  presetBox.append(el("button", { type: "button", dataset: { preset: name }, title: `${presetNames[name] || name} (${i + 1})`,
                                  onclick: () => applyPreset(name) }, presetNames[name] || name));
});

function setWindow(center, width, { redraw = true } = {}) {
  ws.window = { center, width: Math.max(1, width) };
  $("win-center").value = String(Math.round(center));
  $("win-width").value = String(Math.round(ws.window.width));
  for (const b of presetBox.querySelectorAll("button")) {
    const p = presets[b.dataset.preset];
    b.classList.toggle("active", p.center === center && p.width === ws.window.width);
  }
  if (redraw) allViews().forEach((v) => v.compose());
}

function applyPreset(name, opts) { setWindow(presets[name].center, presets[name].width, opts); }

for (const id of ["win-center", "win-width"]) {
  $(id).addEventListener("change", () => {
    const c = Number($("win-center").value), w = Number($("win-width").value);
    if (!Number.isFinite(c) || !Number.isFinite(w) || w <= 0) {
      setStatus("Window centre and width must be numbers, width > 0.", "error");
      return;
    }
    setWindow(c, w);
  });
}

// ------------------------------------------------------------------------------------------------ overlay

const toggles = $("class-toggles");
for (const id of LABELED_CLASSES) {
  const [r, g, b] = CLASS_COLORS[id];
  toggles.append(el("label", { class: "check" },
    el("input", { type: "checkbox", checked: ws.overlay.classes[id] ? "checked" : null, dataset: { classId: id },
                  onchange: (e) => { ws.overlay.classes[id] = e.target.checked; allViews().forEach((v) => v.compose()); } }),
    el("span", { class: "swatch", style: `background:rgb(${r},${g},${b})` }), ` ${CLASS_LABELS[id]}`,
    el("span", { class: "muted small count", dataset: { countFor: id } }, "")));
}
$("overlay-opacity").addEventListener("input", (e) => {
  ws.overlay.opacity = Number(e.target.value) / 100;
  allViews().forEach((v) => v.compose());
});
$("overlay-visible").addEventListener("change", (e) => {
  ws.overlay.visible = e.target.checked;
  allViews().forEach((v) => v.compose());
});

// ------------------------------------------------------------------------------------------------ draft

function showCounts(counts) {
  for (const span of toggles.querySelectorAll("[data-count-for]")) {
    const n = (counts || {})[span.dataset.countFor] || 0;
    span.textContent = n ? ` ${n.toLocaleString()} vx` : "";
  }
  // the draft panel: voxels per class of the labels shown (data-vessel-voxels for tests and scripts)
  const box = $("draft-counts");
  const n = (c) => Number((counts || {})[c] || 0);
  box.textContent = LABELED_CLASSES.map((c) => `${CLASS_LABELS[c]} ${n(c).toLocaleString()}`).join(" · ") + " voxels";
  box.dataset.vesselVoxels = String(n(VESSEL));
}

function reloadLabels() {
  allViews().forEach((v) => v.load());
  mip.refreshOverlay();
}

// Your draft of this study if you have one; otherwise the head version is shown and no draft is made yet.
async function openDraft() {
  try {
    const page = await api(`/api/drafts/?study=${ws.studyId}`);
    const mine = (page.results || [])[0];
    ws.draftChecked = true;
    if (mine) setDraft(mine);
    else if (!ws.draft) showWithoutDraft();
  } catch (err) {
    $("draft-info").textContent = `Your draft could not be loaded: ${err.message}`;
    setStatus(`Labels cannot be edited right now: ${err.message}`, "error");
  }
}

// no version yet: an empty map (what a new draft starts from, so also key "0")
const EMPTY_SOURCE = Object.freeze({ key: "0", slice: () => null, mipUrl: () => null });

function showWithoutDraft() {
  const head = ws.head;
  ws.labels = head ? versionSource(head) : EMPTY_SOURCE;
  showCounts(head ? head.counts : {});
  $("undo").disabled = true;
  $("redo").disabled = true;
  $("discard").disabled = true; // nothing to discard before the first edit
  $("draft-info").textContent =
    `0 edits on ${head ? `v${head.number}` : "an empty map"} · your draft starts with your first edit`;
  root.dataset.draftRevision = "0";
  if (classMap) syncModelScope();
  reloadLabels();
}

function setDraft(draft, { reload = true } = {}) {
  const changed = !ws.draft || ws.draft.revision !== draft.revision || ws.draft.id !== draft.id;
  ws.draft = draft;
  ws.labels = draftSource(draft);
  $("undo").disabled = !draft.can_undo;
  $("redo").disabled = !draft.can_redo;
  $("discard").disabled = false;
  showCounts(draft.counts);
  if (classMap) syncModelScope();
  $("draft-info").textContent =
    `${draft.ops.length} edit${draft.ops.length === 1 ? "" : "s"} on ${draft.base_number ? `v${draft.base_number}` : "an empty map"}` +
    ` · revision ${draft.revision}`;
  root.dataset.draftRevision = String(draft.revision);
  if (changed && reload) reloadLabels();
}

// The first edit opens (creates) the draft; later calls return it. Refused in review mode.
let draftPromise = null;
function ensureDraft() {
  if (ws.review) return Promise.reject(new Error("this label version is open read-only for review; open the study to edit"));
  if (ws.draft) return Promise.resolve(ws.draft);
  if (!draftPromise) {
    draftPromise = api("/api/drafts/", { method: "POST", body: { study: ws.studyId } })
      .then((draft) => { setDraft(draft, { reload: draft.revision !== 0 }); return draft; })
      .finally(() => { draftPromise = null; });
  }
  return draftPromise;
}

let opChain = Promise.resolve();
let pendingOps = 0;
function runOp(op, label) {
  if (ws.review) { setStatus("This version is open read-only for review.", "error"); return Promise.resolve(); }
  beginAction();
  pendingOps += 1;
  root.dataset.busy = "1";
  opChain = opChain.then(async () => {
    try {
      const draft = await ensureDraft();
      const response = await api(`/api/drafts/${draft.id}/ops/`, { method: "POST", body: { op } });
      setDraft(response.draft);
      const changed = response.result.changed_voxels ?? response.result.changed;
      setStatus(`${label}: ${changed !== undefined ? `${changed} voxels changed` : "done"}`);
    } catch (err) {
      setStatus(`${label} failed: ${err.message}`, "error");
    } finally {
      pendingOps -= 1;
      if (!pendingOps) delete root.dataset.busy;
    }
  });
  return opChain;
}

async function draftAction(action, label) {
  if (!ws.draft || ws.review) return;
  beginAction();
  try {
    setDraft(await api(`/api/drafts/${ws.draft.id}/${action}/`, { method: "POST", body: {} }));
    setStatus(label);
  } catch (err) {
    setStatus(`${action} failed: ${err.message}`, "error");
  }
}
$("undo").addEventListener("click", () => draftAction("undo", "Undone."));
$("redo").addEventListener("click", () => draftAction("redo", "Redone."));
$("discard").addEventListener("click", () => {
  if (confirm("Drop all edits of your draft and start again from the head version?")) draftAction("discard", "Draft discarded.");
});

// another tab (or colleague's request) changed the draft, or made it: follow it
setInterval(async () => {
  if (ws.review || !ws.volume || pendingOps || draftPromise || document.hidden || ws.stroke || ws.committing) return;
  try {
    if (!ws.draft) {
      const mine = ((await api(`/api/drafts/?study=${ws.studyId}`)).results || [])[0];
      if (mine && !ws.draft && !pendingOps) setDraft(mine);
    } else {
      const fresh = await api(`/api/drafts/${ws.draft.id}/`);
      if (fresh.revision !== ws.draft.revision && !pendingOps && !ws.stroke) {
        setDraft(fresh);
        setStatus("The draft changed in another tab; the overlay was reloaded.");
      }
    }
  } catch { /* transient; the next poll retries */ }
  // after the draft is current: a commit from another tab of this draft moved its base along, no banner
  await checkHead();
}, 5000);

// Someone else committed: the study's head version is not the one the open draft (or the shown map) is based on.
const banner = $("commit-banner");
async function checkHead() {
  try {
    const head = ((await api(`/api/label-versions/?study=${ws.studyId}`)).results || [])[0] || null;
    if (ws.committing || pendingOps) return;
    const shown = ws.draft ? ws.draft.base_version : (ws.head && ws.head.id) || null;
    if (!head || head.id === shown) { if (!head || ws.draft) banner.hidden = true; return; }
    if (banner.dataset.headId === String(head.id) && banner.dataset.dismissed) return;
    const when = new Date(head.created_at).toLocaleTimeString();
    const what = `v${head.number} was committed by ${head.author || "someone"} at ${when}: “${head.message}”.`;
    banner.dataset.headId = String(head.id);
    delete banner.dataset.dismissed;
    if (ws.draft) {
      const base = ws.draft.base_number ? `v${ws.draft.base_number}` : "an empty map";
      $("commit-banner-text").textContent = `${what} Your draft is based on ${base}: rebase it to carry your edits over onto v${head.number} before you commit.`;
      $("commit-banner-rebase").hidden = false;
    } else {
      $("commit-banner-text").textContent = `${what} The overlay now shows it.`;
      $("commit-banner-rebase").hidden = true;
    }
    banner.hidden = false;
    root.dataset.headNumber = String(head.number);
    loadHistory();
  } catch { /* transient; the next poll retries */ }
}
$("commit-banner-close").addEventListener("click", () => { banner.hidden = true; banner.dataset.dismissed = "1"; });
$("commit-banner-rebase").addEventListener("click", async () => {
  if (!ws.draft) return;
  beginAction();
  try {
    await opChain;
    setDraft(await api(`/api/drafts/${ws.draft.id}/rebase/`, { method: "POST", body: {} }));
    banner.hidden = true;
    setStatus(`Rebased onto v${ws.draft.base_number}; your edits were replayed.`, "success");
  } catch (err) {
    setStatus(`Rebase failed: ${err.message}`, "error");
  }
});

// ------------------------------------------------------------------------------------------------ commit + history

$("commit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  beginAction();
  const message = $("commit-message").value.trim();
  if (!message) { setStatus("Write a commit message saying what changed.", "error"); $("commit-message").focus(); return; }
  await opChain;
  if (!ws.draft) { setStatus("There is nothing to commit yet: make an edit first.", "error"); return; }
  ws.committing = true;
  try {
    const version = await api(`/api/drafts/${ws.draft.id}/commit/`, { method: "POST", body: { message } });
    $("commit-message").value = "";
    setStatus(`Committed v${version.number}.`, "success");
    setDraft(await api(`/api/drafts/${ws.draft.id}/`));
    banner.hidden = true;
    loadHistory();
  } catch (err) {
    if (err.status === 409 && err.body) showConflict(err.body);
    else if (err.status === 0) setStatus("Lost connection while committing. Your draft is kept on the server; commit again when the connection is back.", "error");
    else setStatus(`Commit failed: ${err.message}`, "error");
  } finally {
    ws.committing = false;
  }
});

const conflict = $("conflict-dialog");
function showConflict(body) {
  const head = body.head;
  $("conflict-text").textContent = head
    ? `v${head.number} by ${head.author}: “${head.message}” is now the head version; your draft is based on ${body.draft.base_number ? `v${body.draft.base_number}` : "no version"}.`
    : body.detail;
  conflict.dataset.rebase = (body.actions && body.actions.rebase) || "";
  conflict.showModal();
  loadHistory();
}
$("conflict-close").addEventListener("click", () => conflict.close());
$("conflict-rebase").addEventListener("click", async () => {
  try {
    setDraft(await api(conflict.dataset.rebase, { method: "POST", body: {} }));
    conflict.close();
    banner.hidden = true;
    setStatus(`Rebased onto v${ws.draft.base_number}; your edits were replayed. Commit again.`, "success");
  } catch (err) {
    $("conflict-text").textContent = `Rebase failed: ${err.message}`;
  }
});

const REVIEW_WORDS = { none: "not submitted", submitted: "submitted for review", approved: "approved", rejected: "rejected" };

// The outcome of a review in words: "approved by admin · 12/05/2025 10:31" (and the reviewer's comment).
function reviewNote(v) {
  if (!["approved", "rejected"].includes(v.review_status)) return null;
  const when = v.reviewed_at ? ` · ${new Date(v.reviewed_at).toLocaleString()}` : "";
  return el("div", { class: `review-note small ${v.review_status}`, dataset: { testid: "review-note" } },
    `${REVIEW_WORDS[v.review_status]} by ${v.reviewed_by || "an admin"}${when}`,
    v.review_comment ? el("div", {}, `“${v.review_comment}”`) : null);
}

async function loadHistory() {
  const list = $("history");
  try {
    const page = await api(`/api/label-versions/?study=${ws.studyId}`);
    const versions = page.results || [];
    const head = versions[0] || null;
    const headMoved = (head && head.id) !== (ws.head && ws.head.id);
    ws.head = head;
    if (headMoved && ws.draftChecked && !ws.draft && !ws.review && !draftPromise && !pendingOps) showWithoutDraft();
    if (!versions.length) { list.replaceChildren(el("li", { class: "muted" }, "No versions yet.")); return; }
    const editable = !ws.review;
    list.replaceChildren(...versions.map((v) => el("li", {
      class: ws.review && ws.review.id === v.id ? "current" : "", dataset: { version: v.number, status: v.review_status } },
      el("div", {}, el("strong", {}, `v${v.number}`), " ", el("span", { class: `badge review-${v.review_status}` },
        REVIEW_WORDS[v.review_status] || v.review_status), " ",
        el("span", { class: "muted small" }, `${v.author || "?"} · ${new Date(v.created_at).toLocaleString()}`)),
      el("div", { class: "msg" }, v.message),
      reviewNote(v),
      el("div", { class: "btn-row small" },
        v.parent ? el("button", { type: "button", class: "link", onclick: () => showDiff(v) }, "diff") : null,
        editable && v.number !== head.number
          ? el("button", { type: "button", class: "link", onclick: () => revert(v) }, "revert to this") : null,
        editable && v.number === head.number && ["none", "rejected"].includes(v.review_status)
          ? el("button", { type: "button", class: "link", onclick: () => submit(v) }, "submit for review") : null,
        canReview && (!ws.review || ws.review.id !== v.id)
          ? el("a", { href: `/studies/${ws.studyId}/?review=${v.id}` }, v.review_status === "submitted" ? "review" : "open read-only")
          : null))));
  } catch (err) {
    list.replaceChildren(el("li", { class: "flash error" }, `Could not load the history: ${err.message}`));
  }
}

async function showDiff(v) {
  try {
    const d = await api(`/api/label-versions/${v.id}/diff/`);
    const changes = LABELED_CLASSES.concat([UNLABELED]).map((c) => {
      const gained = (d.gained || {})[c] || 0, lost = (d.lost || {})[c] || 0;
      return gained || lost ? `${CLASS_LABELS[c] || "unlabeled"}: +${gained.toLocaleString()} −${lost.toLocaleString()}` : null;
    }).filter(Boolean);
    $("diff-box").replaceChildren(el("strong", {}, `v${d.from} → v${d.to}: ${d.changed_voxels.toLocaleString()} voxels changed`),
      el("div", { class: "muted" }, changes.length ? changes.join(" · ") : "no change"));
  } catch (err) { setStatus(`Diff failed: ${err.message}`, "error"); }
}

async function revert(v) {
  beginAction();
  try {
    const made = await api(`/api/label-versions/${v.id}/revert/`, { method: "POST", body: {} });
    setStatus(`Reverted: v${made.number} has the labels of v${v.number}. Rebase your draft to edit on top of it.`, "success");
    loadHistory();
  } catch (err) { setStatus(`Revert failed: ${err.message}`, "error"); }
}

async function submit(v) {
  beginAction();
  try {
    await api(`/api/label-versions/${v.id}/submit/`, { method: "POST", body: {} });
    setStatus(`v${v.number} submitted for review.`, "success");
    loadHistory();
  } catch (err) { setStatus(`Submit failed: ${err.message}`, "error"); }
}

// ------------------------------------------------------------------------------------------------ threshold

const subtracted = volumes.find((v) => v.role === "subtracted");
const slider = $("threshold-slider"), number = $("threshold-number"), previewBox = $("threshold-preview");

async function updatePreview() {
  if (!previewBox.checked || !subtracted) {
    allViews().forEach((v) => { v.preview = null; v.compose(); });
    return;
  }
  await Promise.all(allViews().map(async (v) => {
    try {
      v.preview = await volumeSlice(subtracted.id, v.axis, v.index);
      v.compose();
    } catch (err) { v.showError(`Threshold preview: ${err.message}`); }
  }));
  root.dataset.previewThreshold = String(ws.threshold);
}

function setThreshold(value, { preview = true } = {}) {
  ws.threshold = value;
  slider.value = String(value);
  number.value = String(value);
  if (preview && subtracted) previewBox.checked = true;
  updatePreview();
}
slider.addEventListener("input", () => setThreshold(Number(slider.value)));
number.addEventListener("change", () => {
  const v = Number(number.value);
  if (!Number.isFinite(v)) { setStatus("The threshold must be a number of HU.", "error"); return; }
  setThreshold(v);
});
previewBox.addEventListener("change", updatePreview);
if (!subtracted) {
  previewBox.disabled = true;
  $("threshold-apply").disabled = true;
  $("threshold-apply").title = "this study has no subtracted (DSA) volume";
}

// Advanced recipe options ("beyond one threshold"): hysteresis growing, the local edge and the vesselness filter.
// A switched-off option is sent as null (growing, edge) or as no scales (vesselness), so the backend skips it.
for (const [box, inputs] of [["grow-on", ["low-threshold"]], ["edge-on", ["edge-fraction", "edge-radius"]]]) {
  const sync = () => inputs.forEach((id) => { $(id).disabled = !$(box).checked; });
  $(box).addEventListener("change", sync);
  sync();
}
const finestSpacingMm = volumes.length ? Math.min(...volumes[0].spacing_mm) : null;
if (finestSpacingMm) {
  $("vesselness-hint").textContent += ` Each scale ≥ ${(finestSpacingMm / 2).toFixed(2)} mm here.`;
}

// a number typed by the user (HU, mm, a fraction): a finite number, else a message and null
function numberIn(id, what) {
  const raw = $(id).value.trim(), v = Number(raw);
  if (raw === "" || !Number.isFinite(v)) {
    setStatus(`${what} must be a number (got “${raw}”).`, "error");
    $("recipe-advanced").open = true;
    $(id).focus();
    return null;
  }
  return v;
}

// The recipe op's params from the panel, or null (with a message) when an input is not a number. Ranges are
// checked by the server, which answers a 400 naming the parameter.
function recipeParams() {
  const params = { vessel_threshold_hu: ws.threshold };
  const minComp = Number($("min-component").value);
  if (Number.isFinite(minComp) && $("min-component").value !== "") params.min_vessel_component_mm3 = minComp;
  if ($("grow-on").checked) {
    const low = numberIn("low-threshold", "The growing threshold (HU)");
    if (low === null) return null;
    if (low >= ws.threshold) {
      setStatus(`The growing threshold (${low} HU) must be below the vessel threshold (${ws.threshold} HU).`, "error");
      $("recipe-advanced").open = true;
      $("low-threshold").focus();
      return null;
    }
    params.vessel_low_threshold_hu = low;
  } else params.vessel_low_threshold_hu = null;
  if ($("edge-on").checked) {
    const fraction = numberIn("edge-fraction", "The edge fraction"), radius = numberIn("edge-radius", "The edge radius (mm)");
    if (fraction === null || radius === null) return null;
    params.vessel_edge_fraction = fraction;
    params.vessel_edge_radius_mm = radius;
  } else params.vessel_edge_fraction = null;
  const words = $("vesselness-sigmas").value.split(/[\s,;]+/).filter(Boolean);
  const sigmas = words.map(Number);
  if (sigmas.some((v) => !Number.isFinite(v))) {
    setStatus(`Vesselness scales must be numbers of mm separated by spaces (got “${$("vesselness-sigmas").value}”).`, "error");
    $("recipe-advanced").open = true;
    $("vesselness-sigmas").focus();
    return null;
  }
  params.vesselness_sigmas_mm = sigmas;
  if (sigmas.length) {
    const threshold = numberIn("vesselness-threshold", "The vesselness threshold"), reach = numberIn("vesselness-reach", "The vesselness reach (mm)");
    if (threshold === null || reach === null) return null;
    params.vesselness_threshold = threshold;
    params.vesselness_reach_mm = reach;
  }
  return params;
}

// What the recipe did to the vessel tree, in numbers (next to the backend's one-line summary).
function recipeNumbers(report, params) {
  const v = report.vessel || {};
  const fmt = (n) => Number(n || 0).toLocaleString();
  const parts = [`${fmt(v.voxels)} vessel voxels`];
  parts.push(params.vessel_low_threshold_hu === null ? "growing off" : `grown +${fmt(v.grown_voxels)}`);
  parts.push(params.vessel_edge_fraction === null ? "edge trim off" : `trimmed −${fmt(v.trimmed_voxels)}`);
  if (params.vesselness_sigmas_mm.length) parts.push(`vesselness +${fmt(v.vesselness_voxels)}`);
  return el("p", { class: "small recipe-numbers", dataset: {
    testid: "recipe-numbers", vesselVoxels: v.voxels ?? "", grownVoxels: v.grown_voxels ?? "",
    trimmedVoxels: v.trimmed_voxels ?? "", vesselnessVoxels: v.vesselness_voxels ?? "" } }, parts.join(" · "));
}

$("threshold-apply").addEventListener("click", async () => {
  if (ws.review) return;
  beginAction();
  const params = recipeParams();
  if (!params) return;
  const box = $("recipe-progress");
  $("threshold-apply").disabled = true;
  try {
    await opChain;
    const draft = await ensureDraft();
    let run = await api(`/api/drafts/${draft.id}/ops/`, { method: "POST", body: { op: { op: "recipe", params } } });
    box.replaceChildren(runRow(run));
    while (["queued", "running"].includes(run.state)) {
      await new Promise((r) => setTimeout(r, 400));
      run = await api(`/api/task-runs/${run.id}/`);
      box.replaceChildren(runRow(run));
    }
    if (run.state === "succeeded") {
      previewBox.checked = false;
      allViews().forEach((v) => { v.preview = null; });
      setDraft(await api(`/api/drafts/${ws.draft.id}/`));
      const warnings = run.result?.warnings || [];
      const report = run.result?.report || {};
      const summary = report.summary || "";
      if (warnings.length) {  // never a plain success when a class came out empty
        setStatus(`Recipe applied at ${ws.threshold} HU with ${warnings.length} warning(s): see below.`, "warning");
        box.append(el("div", { class: "flash warning", role: "alert" }, ...warnings.map((w) => el("div", {}, w))));
      } else {
        setStatus(`Recipe applied at ${ws.threshold} HU.`, "success");
      }
      // the run's own message repeats the summary shown below: keep the row short
      const runText = box.querySelector(".run-head > span.muted");
      if (runText && summary) runText.textContent = "100% · done";
      if (report.vessel) box.append(recipeNumbers(report, params));
      if (summary) box.append(el("p", { class: "muted small", "data-testid": "recipe-report" }, summary));
    } else {
      setStatus(`Recipe ${run.state}: ${plainError(run.error || run.message)}`, "error");
    }
  } catch (err) {
    box.replaceChildren(el("div", { class: "flash error", role: "alert" }, err.message));
  } finally {
    $("threshold-apply").disabled = !subtracted;
  }
});

// ------------------------------------------------------------------------------------------------ model suggestions

// "Accept model vessels": the study's newest predicted class map (classMap, from the page) turned into vessel
// labels of the draft, in the whole volume, inside the draft's ROI box or in an axial slab around the current
// slice; one op, so one undo reverts it.

// the ROI box of the labels shown: the draft's last set_roi op, else its base version's box
function currentRoi() {
  const ops = (ws.draft && ws.draft.ops) || [];
  for (let i = ops.length - 1; i >= 0; i -= 1) if (ops[i].op && ops[i].op.op === "set_roi") return ops[i].op.box_zyx;
  const base = ws.draft ? ws.draft.base_version : ws.head && ws.head.id;
  return ws.head && ws.head.id === base ? ws.head.roi_box_zyx || null : null;
}

function syncModelScope() {
  if (!classMap) return;
  const roiOption = $("model-scope").querySelector("option[value=roi]");
  const roi = currentRoi();
  roiOption.disabled = !roi;
  roiOption.textContent = roi ? `inside the ROI box (${roi[1] - roi[0]}×${roi[3] - roi[2]}×${roi[5] - roi[4]} voxels)` : "inside the ROI box (none set)";
  if (!roi && $("model-scope").value === "roi") $("model-scope").value = "all";
  $("model-slab-row").hidden = $("model-scope").value !== "slab";
}

// the scope as a half-open box [z0, z1, y0, y1, x0, x1], null for the whole volume, undefined when refused
function modelBox() {
  const scope = $("model-scope").value;
  const [nz, ny, nx] = classMap.shape || ws.volume.shape;
  if (scope === "roi") {
    const roi = currentRoi();
    if (!roi) { setStatus("This draft has no ROI box: draw one with the ROI box tool (C) or choose another scope.", "error"); return undefined; }
    return roi;
  }
  if (scope === "slab") {
    const n = Number($("model-slab").value);
    if (!Number.isInteger(n) || n < 1) { setStatus(`The slab must be a whole number of slices, at least 1 (got “${$("model-slab").value}”).`, "error"); return undefined; }
    const z0 = Math.max(0, ws.crosshair.z - Math.floor((n - 1) / 2));
    const z1 = Math.min(nz, z0 + n);
    return [z0, z1, 0, ny, 0, nx];
  }
  return null;
}

if (classMap) {
  const info = $("model-info");
  const when = new Date(classMap.created_at).toLocaleString();
  info.textContent = `Class map #${classMap.id} of model #${classMap.model_version_id ?? "?"} · ${when}`;
  if (classMap.model_version_id) {
    api(`/api/models/${classMap.model_version_id}/`).then((m) => {
      info.textContent = `Class map #${classMap.id} of model “${m.name}” (#${m.id}${m.is_active ? ", active" : ""}) · ${when}`;
    }).catch(() => { /* the id stays shown */ });
  }
  $("model-scope").addEventListener("change", syncModelScope);
  $("model-accept").addEventListener("click", () => {
    const box = modelBox();
    if (box === undefined) return;
    const op = { op: "model_vessels", volume_id: classMap.id };
    if (box) op.box_zyx = box;
    if ($("model-only-unlabeled").checked) op.only_class = UNLABELED;
    const where = box ? (($("model-scope").value === "slab") ? `slices ${box[0] + 1}–${box[1]}` : "the ROI box") : "the whole volume";
    runOp(op, `Accepted the model's vessels in ${where}`);
  });
  syncModelScope();
}

// ------------------------------------------------------------------------------------------------ tools

const toolButtons = $("tools").querySelectorAll("button[data-tool]");
const REVIEW_TOOLS = new Set(["navigate", "window"]);
function setTool(tool) {
  if (ws.review && !REVIEW_TOOLS.has(tool)) { setStatus("This version is open read-only: only navigating and windowing.", "error"); return; }
  if (statusBox.classList.contains("error")) setStatus("");
  ws.tool = tool;
  root.dataset.tool = tool;
  toolButtons.forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
  // the options of the active tool only (as Slicer shows its active effect's)
  root.querySelectorAll("[data-tools]").forEach((g) => { g.hidden = !g.dataset.tools.split(" ").includes(tool); });
  if (tool !== "scissors") allViews().forEach((v) => { v.polygon = []; v.draw(); });
}
toolButtons.forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));

function moveCrosshair(zyx, except) {
  [ws.crosshair.z, ws.crosshair.y, ws.crosshair.x] = zyx;
  for (const v of allViews()) {
    if (v !== except) { if (!v.setIndex(ws.crosshair[v.axis])) v.draw(); } else v.draw();
  }
  if (previewBox.checked) updatePreview();
}

// "Only over": the class the brush, erase, margin grow and smoothing may change (null: any class)
function onlyOver() {
  const v = $("only-over").value;
  return v === "" ? null : Number(v);
}

// A brush or erase drag: dabs at most half a radius apart (interpolated between pointer events), painted into
// a private copy of the view's label slice as a preview, sent as one op when the pointer is released.
function startStroke(hit, view) {
  const radius = Number($("brush-radius").value);
  if (!(radius > 0 && radius <= 50)) { setStatus("Brush radius must be a number of mm above 0 and at most 50.", "error"); return null; }
  const erase = ws.tool === "erase";
  const g = view.geom;
  const stroke = {
    view, radius, erase, label: erase ? UNLABELED : Number($("brush-class").value), only: onlyOver(),
    shape: $("brush-sphere").checked ? "sphere" : "circle", step: Math.max(radius / 2, Math.min(g.rowMm, g.colMm)),
    points: [], hits: [], last: null, preview: null,
  };
  ws.stroke = stroke;
  previewBase(stroke);
  addDab(stroke, hit);
  return stroke;
}

// the preview starts from the view's current label slice (again if an earlier edit's response reloaded it)
function previewBase(stroke) {
  const view = stroke.view, g = view.geom, source = view.labels;
  const data = source && source.data.length === g.rows * g.cols ? new Uint8Array(source.data) : new Uint8Array(g.rows * g.cols);
  stroke.preview = { rows: g.rows, cols: g.cols, data };
  view.labels = stroke.preview;
  stroke.hits.forEach((h) => paintDab(stroke, h));
}

function addDab(stroke, hit) {
  const key = hit.zyx.join(",");
  if (stroke.points.length && stroke.points[stroke.points.length - 1].join(",") === key) return;
  stroke.points.push(hit.zyx);
  stroke.hits.push(hit);
  stroke.last = hit;
  paintDab(stroke, hit);
}

function paintDab(stroke, hit) {
  const { rows, cols, data } = stroke.preview;
  const g = stroke.view.geom, r = stroke.radius;
  const hr = Math.floor(r / g.rowMm + 1e-9), hc = Math.floor(r / g.colMm + 1e-9);
  for (let dr = -hr; dr <= hr; dr += 1) {
    const row = hit.row + dr;
    if (row < 0 || row >= rows) continue;
    for (let dc = -hc; dc <= hc; dc += 1) {
      const col = hit.col + dc;
      if (col < 0 || col >= cols || (dr * g.rowMm) ** 2 + (dc * g.colMm) ** 2 > r * r + 1e-9) continue;
      const i = row * cols + col;
      if (stroke.only === null || data[i] === stroke.only) data[i] = stroke.label;
    }
  }
}

function extendStroke(stroke, hit) {
  const a = stroke.last, g = stroke.view.geom;
  const dist = Math.hypot((hit.row - a.row) * g.rowMm, (hit.col - a.col) * g.colMm);
  if (dist < stroke.step) return;
  if (stroke.view.labels !== stroke.preview) previewBase(stroke);
  const n = Math.ceil(dist / stroke.step);
  for (let k = 1; k <= n; k += 1) {
    const row = Math.round(a.row + ((hit.row - a.row) * k) / n), col = Math.round(a.col + ((hit.col - a.col) * k) / n);
    const zyx = [...hit.zyx];
    zyx["zyx".indexOf(g.rowAxis)] = row;
    zyx["zyx".indexOf(g.colAxis)] = col;
    addDab(stroke, { row, col, zyx });
  }
  stroke.view.compose();
}

function finishStroke(stroke) {
  ws.stroke = null;
  const [first, ...rest] = stroke.points;
  const op = { op: "brush", center_zyx: first, radius_mm: stroke.radius, label: stroke.label, shape: stroke.shape,
               axis: stroke.view.axis };
  if (rest.length) op.stroke_zyx = rest;
  if (stroke.only !== null) op.only_class = stroke.only;
  root.dataset.lastStrokeDabs = String(stroke.points.length);
  const dabs = `${stroke.points.length} dab${stroke.points.length === 1 ? "" : "s"}`;
  runOp(op, `${stroke.erase ? "Erase" : "Paint"} (one stroke, ${dabs})`).then(() => {
    // a refused stroke: drop the preview (an accepted one reloaded the views with the new revision)
    if (stroke.view.labels === stroke.preview) stroke.view.load();
  });
}

function islandClick(hit, view) {
  const clicked = view.valueAt(hit.row, hit.col).label;
  if (!clicked) { setStatus("Islands: click on a labeled voxel.", "error"); return; }
  const mode = $("island-mode").value;
  if (mode === "keep") {
    runOp({ op: "keep_connected", label: clicked, seeds_zyx: [hit.zyx] }, `Kept the selected ${CLASS_LABELS[clicked]} island`);
  } else if (mode === "split") {
    const to = Number($("island-to").value);
    if (to === clicked) { setStatus(`Islands: this island is ${CLASS_LABELS[clicked]} already; choose another "Split to" class.`, "error"); return; }
    runOp({ op: "split_island", at_zyx: hit.zyx, to_class: to }, `Island split to ${CLASS_LABELS[to]}`);
  } else {
    runOp({ op: "remove_island", at_zyx: hit.zyx }, "Island removed");
  }
}

// a size in mm (or mm³) typed by the user: a positive number, else a message and null
function positive(id, what, unit) {
  const raw = $(id).value.trim(), v = Number(raw);
  if (raw === "" || !Number.isFinite(v) || v <= 0) {
    setStatus(`${what} must be a number of ${unit} above 0 (got “${raw}”).`, "error");
    $(id).focus();
    return null;
  }
  return v;
}

$("keep-largest").addEventListener("click", () => {
  const label = Number($("island-class").value);
  runOp({ op: "keep_largest", label }, `Kept the largest ${CLASS_LABELS[label]} island`);
});
$("remove-small").addEventListener("click", () => {
  const label = Number($("island-class").value);
  const v = positive("min-island", "The island size", "mm³");
  if (v !== null) runOp({ op: "remove_small", label, min_volume_mm3: v }, `Removed ${CLASS_LABELS[label]} islands under ${v} mm³`);
});

// margin and smoothing of the chosen class; "only over" limits the voxels it may gain (not its own class)
function morphOp(extra, describe) {
  const cls = Number($("morph-class").value);
  const op = { label: cls, ...extra };
  const only = onlyOver();
  if (only !== null && only !== cls && !(op.op === "margin" && op.mode === "shrink")) op.only_class = only;
  runOp(op, describe(CLASS_LABELS[cls]));
}
for (const mode of ["grow", "shrink"]) {
  $(`margin-${mode}`).addEventListener("click", () => {
    const size = positive("margin-size", "The margin", "mm");
    if (size !== null) morphOp({ op: "margin", mode, size_mm: size }, (name) => `${mode === "grow" ? "Grew" : "Shrank"} ${name} by ${size} mm`);
  });
}
$("smooth-apply").addEventListener("click", () => {
  const kernel = positive("smooth-kernel", "The smoothing kernel", "mm");
  const method = $("smooth-method").value;
  if (kernel !== null) morphOp({ op: "smooth", method, kernel_mm: kernel }, (name) => `Smoothed ${name} (${method}, ${kernel} mm)`);
});

function closeScissors(view) {
  if (view.polygon.length < 3) { setStatus("Scissors: click at least 3 points, then double-click or press Enter.", "error"); return; }
  const op = { op: "scissors", axis: view.axis, slice: view.index, polygon: view.polygon.map(([r, c]) => [r, c]),
               mode: $("scissors-mode").value };
  if ($("scissors-slab").checked) op.slab = [0, view.count];
  view.polygon = [];
  view.draw();
  runOp(op, "Scissors");
}

function finishRoi(view, drag) {
  view.polygon = [];
  view.draw();
  if (!drag.end) return;
  // the dragged rectangle bounds the two in-plane axes; the view's own axis keeps its full extent
  const box = [];
  ["z", "y", "x"].forEach((axis, i) => {
    if (axis === view.axis) { box.push(0, view.count); return; }
    const a = drag.start.zyx[i], b = drag.end.zyx[i];
    box.push(Math.min(a, b), Math.max(a, b) + 1);
  });
  runOp({ op: "set_roi", box_zyx: box }, "ROI set");
}

let activeView = views.z;
let lastVertex = null; // the last scissors vertex: {x, y (client px), t (ms), view}
const readout = $("readout");

for (const view of allViews()) {
  const canvas = view.canvas;
  let drag = null;
  view.slider.addEventListener("input", () => {
    view.setIndex(Number(view.slider.value));
    ws.crosshair[view.axis] = view.index;
    allViews().forEach((v) => v !== view && v.draw());
    if (previewBox.checked) updatePreview();
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) {
      view.zoom = Math.max(0.5, Math.min(12, view.zoom * (e.deltaY < 0 ? 1.15 : 1 / 1.15)));
      view.draw();
      return;
    }
    view.setIndex(view.index + (e.deltaY > 0 ? 1 : -1));
    ws.crosshair[view.axis] = view.index;
    allViews().forEach((v) => v !== view && v.draw());
    if (previewBox.checked) updatePreview();
  }, { passive: false });
  canvas.addEventListener("pointerenter", () => { activeView = view; });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    activeView = view;
    canvas.setPointerCapture(e.pointerId);
    const hit = view.pick(e);
    if (e.shiftKey || e.button === 1) { drag = { kind: "pan", x: e.clientX, y: e.clientY, pan: [...view.pan] }; return; }
    if (ws.tool === "window" || e.button === 2) {
      drag = { kind: "window", x: e.clientX, y: e.clientY, win: { ...ws.window } };
      return;
    }
    if (!hit) return;
    if (["navigate", "margin", "smooth"].includes(ws.tool)) { drag = { kind: "navigate" }; moveCrosshair(hit.zyx, view); }
    else if (ws.tool === "island") islandClick(hit, view);
    else if (ws.tool === "brush" || ws.tool === "erase") {
      if (ws.review) { setStatus("This version is open read-only for review.", "error"); return; }
      const stroke = startStroke(hit, view);
      if (stroke) { drag = { kind: "brush", stroke }; view.compose(); }
    } else if (ws.tool === "roi") {
      drag = { kind: "roi", start: hit, end: null };
    } else if (ws.tool === "scissors") {
      // the second press of a double-click adds no vertex (the dblclick event closes the polygon); Chromium
      // reports e.detail 0 on pointerdown, so a time and distance check decides
      const now = performance.now();
      const near = lastVertex && Math.hypot(e.clientX - lastVertex.x, e.clientY - lastVertex.y) <= 6;
      if (near && now - lastVertex.t < 500 && lastVertex.view === view) return;
      lastVertex = { x: e.clientX, y: e.clientY, t: now, view };
      view.polygon.push([hit.row, hit.col]);
      view.draw();
    }
  });
  canvas.addEventListener("dblclick", (e) => {
    if (ws.tool !== "scissors" || !view.polygon.length) return;
    e.preventDefault();
    lastVertex = null;
    closeScissors(view);
  });
  canvas.addEventListener("pointermove", (e) => {
    const hit = view.pick(e);
    if (hit) {
      const { hu, label } = view.valueAt(hit.row, hit.col);
      const [z, y, x] = hit.zyx;
      readout.textContent = `z ${z} y ${y} x ${x} · ${hu} HU${label ? ` · ${CLASS_LABELS[label]}` : ""}`;
    }
    if (!drag) return;
    if (drag.kind === "pan") {
      const dpr = window.devicePixelRatio || 1;
      view.pan = [drag.pan[0] + (e.clientX - drag.x) * dpr, drag.pan[1] + (e.clientY - drag.y) * dpr];
      view.draw();
    } else if (drag.kind === "window") {
      setWindow(drag.win.center - (e.clientY - drag.y) * 4, Math.max(1, drag.win.width + (e.clientX - drag.x) * 8));
    } else if (drag.kind === "roi" && hit) {
      const a = drag.start;
      drag.end = hit;
      view.polygon = [[a.row, a.col], [a.row, hit.col], [hit.row, hit.col], [hit.row, a.col]];
      view.draw();
    } else if (drag.kind === "navigate" && hit) {
      moveCrosshair(hit.zyx, view);
    } else if (drag.kind === "brush" && hit) {
      extendStroke(drag.stroke, hit);
    }
  });
  const end = () => {
    if (drag && drag.kind === "roi") finishRoi(view, drag);
    if (drag && drag.kind === "brush") finishStroke(drag.stroke);
    drag = null;
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

// ------------------------------------------------------------------------------------------------ keys + help

const help = $("help-panel");
$("help-button").addEventListener("click", () => { help.hidden = !help.hidden; });
$("help-close").addEventListener("click", () => { help.hidden = true; });

document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName) &&
    !["range", "checkbox"].includes(document.activeElement?.type);
  if (typing && e.key !== "Escape") return;
  const key = e.key;
  if (ws.review && (e.ctrlKey || e.metaKey) && ["z", "y"].includes(key.toLowerCase())) return;
  if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === "z") {
    e.preventDefault();
    draftAction(e.shiftKey ? "redo" : "undo", e.shiftKey ? "Redone." : "Undone.");
    return;
  }
  if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === "y") { e.preventDefault(); draftAction("redo", "Redone."); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const step = { ArrowUp: -1, ArrowDown: 1, PageUp: -5, PageDown: 5 }[key];
  if (step) {
    e.preventDefault();
    activeView.setIndex(activeView.index + step);
    ws.crosshair[activeView.axis] = activeView.index;
    allViews().forEach((v) => v !== activeView && v.draw());
    if (previewBox.checked) updatePreview();
    return;
  }
  const tools = { n: "navigate", w: "window", i: "island", b: "brush", e: "erase", s: "scissors", c: "roi", m: "margin", g: "smooth" };
  if (tools[key.toLowerCase()]) { setTool(tools[key.toLowerCase()]); return; }
  const presetKeys = Object.keys(presets);
  if (/^[1-9]$/.test(key) && presetKeys[Number(key) - 1]) { applyPreset(presetKeys[Number(key) - 1]); return; }
  if (key === "o" || key === "O") { $("overlay-visible").click(); return; }
  if (key === "r" || key === "R") { activeView.zoom = 1; activeView.pan = [0, 0]; activeView.draw(); return; }
  if (key === "?") { help.hidden = !help.hidden; return; }
  if (key === " ") { e.preventDefault(); if (ws.volume) mip.toggle(); return; }
  if (key === "ArrowLeft" || key === "ArrowRight") { if (ws.volume) mip.step(key === "ArrowLeft" ? -1 : 1); return; }
  if (key === "Enter" && ws.tool === "scissors") { closeScissors(activeView); return; }
  if (key === "Escape") {
    help.hidden = true;
    allViews().forEach((v) => { v.polygon = []; v.draw(); });
  }
});

// ------------------------------------------------------------------------------------------------ review

const countsOf = (v) => Object.fromEntries(LABELED_CLASSES.concat([UNLABELED]).map((c) => [c, Number(((v && v.counts) || {})[c] || 0)]));

function renderReview() {
  const v = ws.review.version;
  const info = $("review-info");
  const outcome = v.review_status === "submitted"
    ? el("div", { class: "review-outcome submitted" }, "Waiting for review.")
    : v.review_status === "none"
      ? el("div", { class: "review-outcome" }, "Not submitted for review.")
      : el("div", { class: `review-outcome ${v.review_status}`, dataset: { testid: "review-outcome" } },
          `${REVIEW_WORDS[v.review_status]} by ${v.reviewed_by || "an admin"}${v.reviewed_at ? ` · ${new Date(v.reviewed_at).toLocaleString()}` : ""}`,
          v.review_comment ? el("div", {}, `“${v.review_comment}”`) : null);
  info.replaceChildren(
    el("div", {}, el("strong", {}, `v${v.number}`), ` by ${v.author || "?"} · ${new Date(v.created_at).toLocaleString()}`),
    el("div", { class: "msg" }, `“${v.message}”`),
    outcome);
  $("review-form").hidden = !(canReview && v.review_status === "submitted");
  showCounts(v.counts);
}

function renderDiff(diff, before, after) {
  const rows = LABELED_CLASSES.concat([UNLABELED]).map((c) => {
    const [r, g, b] = CLASS_COLORS[c] || [60, 60, 60];
    return el("tr", { dataset: { classId: c } },
      el("td", {}, el("span", { class: "swatch", style: `background:rgb(${r},${g},${b})` }), ` ${CLASS_LABELS[c] || "unlabeled"}`),
      el("td", {}, before[c].toLocaleString()), el("td", {}, after[c].toLocaleString()),
      el("td", { dataset: { gained: diff.gained[c] || 0 } }, diff.gained[c] ? `+${diff.gained[c].toLocaleString()}` : "0"),
      el("td", { dataset: { lost: diff.lost[c] || 0 } }, diff.lost[c] ? `−${diff.lost[c].toLocaleString()}` : "0"));
  });
  $("diff-table").tBodies[0].replaceChildren(...rows);
  const moves = (diff.transitions || []).slice().sort((a, b) => b[2] - a[2]).slice(0, 4)
    .map(([from, to, n]) => `${n.toLocaleString()} ${CLASS_LABELS[from] || "unlabeled"} → ${CLASS_LABELS[to] || "unlabeled"}`);
  $("diff-summary").textContent = diff.changed_voxels
    ? `${diff.changed_voxels.toLocaleString()} voxels changed${moves.length ? `: ${moves.join(", ")}` : ""}.`
    : "No voxel changed.";
  root.dataset.changedVoxels = String(diff.changed_voxels);
  const goto = $("diff-goto");
  goto.disabled = !diff.bbox_zyx || !ws.diff;
  goto.onclick = () => gotoChanges(diff.bbox_zyx);
}

// Move the crosshair to the axial slice with the most changed voxels (up to 24 slices of the changed box are
// compared, the label slices are cached) and to the centre of the changes on it.
async function gotoChanges([z0, z1]) {
  const step = Math.max(1, Math.ceil((z1 - z0) / 24));
  let best = null;
  try {
    for (let z = z0; z < z1; z += step) {
      const [now, before] = await Promise.all([ws.labels.slice("z", z), ws.diff.source.slice("z", z)]);
      let n = 0, rows = 0, cols = 0;
      for (let i = 0; i < now.data.length; i += 1) {
        if (now.data[i] !== before.data[i]) { n += 1; rows += Math.floor(i / now.cols); cols += i % now.cols; }
      }
      if (n && (!best || n > best.n)) best = { z, n, row: Math.round(rows / n), col: Math.round(cols / n) };
    }
  } catch (err) { setStatus(`Could not look for the changes: ${err.message}`, "error"); return; }
  if (best) moveCrosshair([best.z, best.row, best.col], null);
}

async function openReview() {
  for (const [id, [r, g, b]] of [["swatch-gained", DIFF_COLORS.gained], ["swatch-cleared", DIFF_COLORS.cleared]]) {
    $(id).style.background = `rgb(${r},${g},${b})`;
  }
  try {
    const v = await api(`/api/label-versions/${ws.review.id}/`);
    ws.review.version = v;
    ws.labels = versionSource(v, `review-${v.id}`);
    renderReview();
    if (v.parent) {
      const [parent, diff] = await Promise.all([api(`/api/label-versions/${v.parent}/`), api(`/api/label-versions/${v.id}/diff/`)]);
      ws.diff = { source: versionSource(parent, `v${parent.id}`), visible: $("diff-visible").checked };
      renderDiff(diff, countsOf(parent), countsOf(v));
    } else {
      // the first version: everything it labels is new (no parent map to fetch or to overlay)
      const after = countsOf(v);
      const gained = Object.fromEntries(LABELED_CLASSES.map((c) => [c, after[c]]));
      const total = LABELED_CLASSES.reduce((n, c) => n + after[c], 0);
      const before = Object.fromEntries(Object.keys(after).map((c) => [c, 0]));
      before[UNLABELED] = total + after[UNLABELED];
      renderDiff({ gained, lost: { [UNLABELED]: total }, transitions: [], changed_voxels: total, bbox_zyx: null },
                 before, after);
      $("diff-summary").textContent = `v${v.number} is the first version: all ${total.toLocaleString()} labeled voxels are new.`;
    }
    root.dataset.reviewReady = "1";
    reloadLabels();
  } catch (err) {
    setStatus(`This label version could not be opened: ${err.message}`, "error");
  }
}

$("workspace").addEventListener("change", (e) => {
  if (e.target.id !== "diff-visible" || !ws.diff) return;
  ws.diff.visible = e.target.checked;
  allViews().forEach((v) => v.compose());
});

async function sendReview(status) {
  beginAction();
  const comment = $("review-comment").value.trim();
  const buttons = [$("approve-button"), $("reject-button")];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    ws.review.version = await api(`/api/label-versions/${ws.review.id}/review/`, { method: "POST", body: { status, comment } });
    renderReview();
    await loadHistory();
    setStatus(status === "approved"
      ? `v${ws.review.version.number} approved: training now uses it for ${root.dataset.pseudonym}.`
      : `v${ws.review.version.number} rejected; ${ws.review.version.author || "the author"} sees your comment in the history.`, "success");
  } catch (err) {
    setStatus(`${status === "approved" ? "Approve" : "Reject"} refused: ${err.message}`, "error");
    if (status === "rejected" && !comment) $("review-comment").focus();
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

if (ws.review) {
  $("review-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sendReview((e.submitter && e.submitter.dataset.status) || "approved");
  });
}

// ------------------------------------------------------------------------------------------------ start

setTool("navigate");
if (!volumes.length) {
  setStatus("This study has no image volumes yet; import a fill volume first.", "error");
} else {
  selectVolume(volumes.find((v) => v.role === "fill") || volumes[0]);
  if (ws.review) {
    openReview();
    loadHistory();
  } else {
    loadHistory().then(openDraft);
  }
}
