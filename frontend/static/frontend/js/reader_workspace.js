// Blinded reading workspace: two rotating MIP cines ("A" and "B") served through the case's opaque token with
// one shared window, the questions form with autosave (PUT answers as you go) whose conditional questions show
// and hide per image as answers change, reading time, final submit, next/previous, resume.
// Nothing here knows (or could know) which image is which method: the server only ever says "A" and "B". The
// cines play in the shared rotating-MIP component (viewer_mip.js), fed only with this case's token URLs.
import { api, el, showError } from "./api.js";
import { RotatingMip } from "./viewer_mip.js";

const root = document.getElementById("workspace");
const token = root.dataset.token;
const $ = (id) => document.getElementById(id);

const state = {
  c: null, // the case JSON
  viewer: null, // RotatingMip over the case's images (and their one window)
  pending: new Map(), // "qid|image" -> value (unsaved)
  saving: false,
  unsentSeconds: 0,
  lastTick: performance.now(),
};

// ------------------------------------------------------------------ time spent (visible page only)
function tick() {
  const now = performance.now();
  if (document.visibilityState === "visible" && state.c && !state.c.locked) {
    state.unsentSeconds += Math.min((now - state.lastTick) / 1000, 5);
  }
  state.lastTick = now;
}
setInterval(tick, 1000);
function takeElapsed() {
  tick();
  const s = Math.round(state.unsentSeconds * 10) / 10;
  state.unsentSeconds = 0;
  return s;
}
async function flushTime(keepalive = false) {
  if (!state.c || state.c.locked || state.unsentSeconds < 1) return;
  const elapsed = takeElapsed();
  if (keepalive) {
    const csrf = (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
    fetch(`/api/reading/${token}/time/`, {
      method: "POST", keepalive: true, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": decodeURIComponent(csrf) },
      body: JSON.stringify({ elapsed_s: elapsed }),
    }).catch(() => {});
    return;
  }
  try { await api(`/api/reading/${token}/time/`, { method: "POST", body: { elapsed_s: elapsed } }); }
  catch { state.unsentSeconds += elapsed; }
}
setInterval(() => flushTime(), 30000);
window.addEventListener("pagehide", () => { saveNow(true); flushTime(true); });

// ------------------------------------------------------------------ images
// Fixed-size frames through the case's opaque token only: /api/reading/<token>/image/<A|B>/?angle=&window=.
// One window for both images: a server preset (named, the same floor for A and B; no HU leaves the server)
// plus the viewer's black/white points, which remap both images' grey levels identically in the browser.
function frameUrl(image, angle) {
  return `/api/reading/${token}/image/${image}/?angle=${angle}`;
}

function buildViewers() {
  const box = $("rw-viewers");
  box.replaceChildren();
  const panes = state.c.images.map((image) => {
    const canvas = el("canvas", { width: 640, height: 640, "data-testid": `viewer-${image}`, "aria-label": `image ${image}` });
    box.append(el("div", { class: "rw-viewer" }, canvas, el("span", { class: "rw-letter" }, image)));
    return { canvas, frameUrl: (angle) => frameUrl(image, angle) };
  });
  state.viewer = new RotatingMip(panes, {
    frames: state.c.n_angles,
    preload: true,
    zoom: { min: 1, max: 6 },
    window: {
      presets: state.c.windows.map((name) => ({ name, label: name })),
      value: state.c.window,
      url: (url, preset) => `${url}&window=${encodeURIComponent(preset.name)}`,
      levels: true,
      container: $("rw-window-box"),
      testid: "window",
    },
    onFrame: ({ index, angle }) => {
      $("rw-angle").value = index;
      $("rw-angle-text").textContent = `${angle}°`;
    },
    onPlaying: (playing) => { $("rw-play").textContent = playing ? "Pause" : "Play"; },
    onZoom: (zoom) => { $("rw-zoom-reset").textContent = `${zoom.toFixed(zoom < 10 ? 1 : 0)}×`; },
    onProgress: (remaining) => { $("rw-loading").textContent = remaining ? "Loading images…" : ""; },
  });
}

// ------------------------------------------------------------------ questions
function answerOf(qid, image) {
  const key = `${qid}|${image}`;
  if (state.pending.has(key)) return state.pending.get(key);
  return state.c.answers[String(qid)]?.[image] ?? null;
}

function setAnswer(qid, image, value) {
  state.pending.set(`${qid}|${image}`, value);
  $("rw-save-state").textContent = "Unsaved changes…";
  if (state.c.questions.some((q) => q.show_if && state.c.questions.find((p) => p.key === q.show_if.question)?.id === qid)) {
    applyConditions(); // a question others depend on: show/hide them now
  }
  scheduleSave();
}

// ------------------------------------------------------------------ conditional questions
// show_if {question: key, answer}: shown for an image while that question is shown there and has that answer
// (multiple choice: among the chosen). The server applies the same rule (reader_study/design.py): a hidden
// question is not required, takes no answer, and loses the answer it had when it hides.
function conditionMet(cond, value) {
  if (value === null || value === undefined) return false;
  return Array.isArray(value) ? value.includes(cond.answer) : value === cond.answer;
}

function shownIds(image) {
  const byKey = new Map(state.c.questions.map((q) => [q.key, q]));
  const memo = new Map();
  const visible = (q, depth) => {
    if (!memo.has(q.id)) {
      let v = true;
      if (q.show_if) {
        const parent = byKey.get(q.show_if.question);
        v = Boolean(parent) && depth < byKey.size && visible(parent, depth + 1)
          && conditionMet(q.show_if, answerOf(parent.id, image));
      }
      memo.set(q.id, v);
    }
    return memo.get(q.id);
  };
  return new Set(state.c.questions.filter((q) => visible(q, 0)).map((q) => q.id));
}

// `hidden` and display: none (the form's CSS lays the rows out with display, which beats the attribute).
function setHidden(node, hidden) {
  node.hidden = hidden;
  node.style.display = hidden ? "none" : "";
}

// Show the rows of the questions each image shows, hide the others; a row that hides with an answer loses it
// (sent as null, so the server and the page agree) and is drawn empty for when it shows again.
function applyConditions() {
  const c = state.c;
  const shown = new Map(c.images.map((image) => [image, shownIds(image)]));
  for (const q of c.questions) {
    const block = $("rw-questions").querySelector(`[data-question="${q.key}"]`);
    if (!block) continue;
    let any = false;
    for (const image of c.images) {
      const row = block.querySelector(`[data-image="${image}"]`);
      const visible = shown.get(image).has(q.id);
      any ||= visible;
      if (!visible && row && !row.hidden && !c.locked) {
        const value = answerOf(q.id, image);
        if (value !== null && !(Array.isArray(value) && !value.length) && value !== "") {
          state.pending.set(`${q.id}|${image}`, null);
          row.replaceWith(inputFor(q, image, c.locked));
          setHidden(block.querySelector(`[data-image="${image}"]`), true);
          continue;
        }
      }
      if (row) setHidden(row, !visible);
    }
    setHidden(block, !any);
  }
}

let saveTimer = null;
function scheduleSave() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => saveNow(), 600);
}

async function saveNow(keepalive = false) {
  clearTimeout(saveTimer);
  if (!state.pending.size || state.saving) return;
  const answers = [...state.pending.entries()].map(([key, value]) => {
    const [q, image] = key.split("|");
    return { question: Number(q), image, value };
  });
  const sent = new Map(state.pending);
  state.pending.clear();
  const body = { answers, elapsed_s: takeElapsed() };
  if (keepalive) {
    const csrf = (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
    fetch(`/api/reading/${token}/answers/`, {
      method: "PUT", keepalive: true, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": decodeURIComponent(csrf) },
      body: JSON.stringify(body),
    }).catch(() => {});
    return;
  }
  state.saving = true;
  $("rw-save-state").textContent = "Saving…";
  try {
    const c = await api(`/api/reading/${token}/answers/`, { method: "PUT", body });
    state.c.answers = c.answers;
    state.c.time_spent_s = c.time_spent_s;
    $("rw-save-state").textContent = state.pending.size ? "Unsaved changes…" : "All answers saved";
    $("rw-error").replaceChildren();
  } catch (err) {
    // keep the unsaved values (newer edits win) and say why
    for (const [k, v] of sent) if (!state.pending.has(k)) state.pending.set(k, v);
    state.unsentSeconds += body.elapsed_s;
    $("rw-save-state").textContent = "Not saved";
    showError($("rw-error"), err.message);
  } finally {
    state.saving = false;
    if (state.pending.size && !$("rw-save-state").textContent.startsWith("Not")) scheduleSave();
  }
}

function inputFor(q, image, disabled) {
  const name = `q${q.id}-${image}`;
  const current = answerOf(q.id, image);
  const wrap = (...children) => el("div", { class: "rw-q-row", "data-image": image, "data-testid": `row-${q.key}-${image}` },
    el("span", { class: "rw-img" }, state.c.images.length > 1 ? image : ""), ...children);
  if (q.type === "yes_no") {
    return wrap(el("div", { class: "rw-scale" }, ...[["yes", true], ["no", false]].map(([label, v]) =>
      el("label", {}, el("input", { type: "radio", name, value: label, checked: current === v, disabled,
        "data-testid": `${q.key}-${image}-${label}`, onchange: () => setAnswer(q.id, image, v) }), el("span", {}, label)))));
  }
  if (q.type === "ordinal") {
    const levels = [];
    for (let v = q.scale_min; v <= q.scale_max; v++) levels.push(v);
    return wrap(el("div", { class: "rw-scale" }, ...levels.map((v) =>
      el("label", { title: q.scale_labels?.[String(v)] || "" }, el("input", { type: "radio", name, value: v, checked: current === v, disabled,
        "data-testid": `${q.key}-${image}-${v}`, onchange: () => setAnswer(q.id, image, v) }), el("span", {}, String(v))))));
  }
  if (q.type === "single" || q.type === "multiple") {
    const multi = q.type === "multiple";
    return wrap(el("div", { class: "rw-options" }, ...q.choices.map((choice) =>
      el("label", {}, el("input", {
        type: multi ? "checkbox" : "radio", name, value: choice, disabled,
        checked: multi ? (current || []).includes(choice) : current === choice,
        onchange: (ev) => {
          if (!multi) return setAnswer(q.id, image, choice);
          const now = new Set(answerOf(q.id, image) || []);
          if (ev.target.checked) now.add(choice); else now.delete(choice);
          setAnswer(q.id, image, q.choices.filter((c) => now.has(c)));
        } }), choice))));
  }
  if (q.type === "number") {
    return wrap(el("input", { type: "number", name, value: current ?? "", disabled, min: q.scale_min ?? null, max: q.scale_max ?? null,
      oninput: (ev) => setAnswer(q.id, image, ev.target.value === "" ? null : Number(ev.target.value)) }));
  }
  return wrap(el("textarea", { name, rows: 2, disabled, "data-testid": `${q.key}-${image}`,
    oninput: (ev) => setAnswer(q.id, image, ev.target.value) }, current ?? ""));
}

function scaleHint(q) {
  const labels = Object.entries(q.scale_labels || {});
  if (!labels.length) return null;
  return el("div", { class: "rw-scale-labels" }, labels.map(([k, v]) => `${k} = ${v}`).join(" · "));
}

function renderForm() {
  const c = state.c;
  const form = $("rw-questions");
  form.replaceChildren();
  if (c.submitted) {
    form.append(el("div", { class: "rw-locked", "data-testid": "submitted" },
      c.locked ? "Submitted. The answers of this case are locked." : "Submitted. Changes are still allowed and are recorded."));
  } else if (c.locked) {
    form.append(el("div", { class: "rw-locked" }, "This reader study is closed."));
  }
  for (const q of c.questions) {
    form.append(el("div", { class: "rw-q", "data-question": q.key },
      el("div", { class: "rw-q-text" }, q.text, q.required ? el("span", { class: "req", title: "required" }, "*") : null),
      ...c.images.map((image) => inputFor(q, image, c.locked)),
      scaleHint(q)));
  }
  applyConditions();
  $("rw-submit").disabled = c.locked || c.submitted;
  $("rw-submit").textContent = c.submitted ? "Submitted" : "Submit case";
}

function renderHead() {
  const c = state.c;
  $("rw-title").textContent = c.study.title;
  $("rw-progress").textContent = `Case ${c.position} of ${c.total}`;
  $("rw-submitted").textContent = `· ${c.submitted_count} submitted`;
  $("rw-prev").disabled = !c.previous;
  $("rw-next").disabled = !c.next;
  $("rw-instructions-text").textContent = c.study.instructions || "No instructions.";
  $("rw-instructions").hidden = !c.study.instructions;
}

async function go(target) {
  if (!target) return;
  await saveNow();
  await flushTime();
  window.location.href = `/reading/${target}/`;
}

async function submitCase() {
  await saveNow();
  if (state.pending.size) return;
  $("rw-submit").disabled = true;
  try {
    const c = await api(`/api/reading/${token}/submit/`, { method: "POST", body: { elapsed_s: takeElapsed() } });
    state.c = c;
    $("rw-error").replaceChildren();
    renderHead();
    renderForm();
    $("rw-save-state").textContent = "Case submitted";
  } catch (err) {
    $("rw-submit").disabled = false;
    showError($("rw-error"), err.message);
  }
}

// ------------------------------------------------------------------ start
async function start() {
  try {
    state.c = await api(`/api/reading/${token}/`);
  } catch (err) {
    showError($("rw-error"), err.message);
    return;
  }
  const c = state.c;
  $("rw-angle").max = String(c.n_angles - 1);
  buildViewers();
  const viewer = state.viewer;
  $("rw-angle").addEventListener("input", (ev) => { viewer.pause(); viewer.show(Number(ev.target.value)); });
  $("rw-play").addEventListener("click", () => viewer.toggle());
  $("rw-zoom-in").addEventListener("click", () => viewer.setZoom(viewer.zoom * 1.25));
  $("rw-zoom-out").addEventListener("click", () => viewer.setZoom(viewer.zoom / 1.25));
  $("rw-zoom-reset").addEventListener("click", () => viewer.setZoom(1));
  $("rw-prev").addEventListener("click", () => go(state.c.previous));
  $("rw-next").addEventListener("click", () => go(state.c.next));
  $("rw-submit").addEventListener("click", submitCase);
  renderHead();
  renderForm();
  viewer.reload();
  viewer.play();
  $("rw-save-state").textContent = c.submitted ? "" : "Answers are saved as you go";
}

start();
