// Admin design page of one reader study: settings, readers, cases (studies with DSA and DLA), questions (with
// their conditions: "shown when <question> is <answer>"), open/close. The design is frozen once the study leaves the draft state (the server refuses changes; the page
// disables them). Opening may take a while: the server renders every frame first (status "opening", a task
// run shown with its progress) and the study becomes readable when they are all there. The randomization
// seed is secret until the study closes.
import { api, el, showError } from "./api.js";
import { runRow } from "./taskruns.js";

const id = document.getElementById("design").dataset.id;
const base = `/api/reader-studies/${id}`;
const err = document.getElementById("d-error");
let rs = null;
let openingTimer = null;

async function call(path, opts) {
  try {
    const out = await api(path, opts);
    err.replaceChildren();
    return out;
  } catch (e) {
    showError(err, e.message);
    throw e;
  }
}

function renderSettings() {
  const f = document.getElementById("d-settings");
  f.title.value = rs.title;
  f.instructions.value = rs.instructions;
  f.mode.value = rs.mode;
  f.window_preset.value = rs.window_preset;
  f.allow_edits.checked = rs.allow_edits;
  const draft = rs.status === "draft";
  for (const name of ["instructions", "mode", "window_preset", "allow_edits"]) f[name].disabled = !draft;
  document.getElementById("d-seed").textContent = rs.seed ?? "secret until the study closes";
  document.getElementById("d-frozen").hidden = draft;
  document.getElementById("d-title").textContent = rs.title;
  document.getElementById("d-status").textContent = rs.status;
  document.getElementById("d-open").textContent = rs.status === "closed" ? "Reopen" : "Open for reading";
  document.getElementById("d-open").disabled = rs.status === "open" || rs.status === "opening";
  document.getElementById("d-close").disabled = rs.status !== "open" && rs.status !== "opening";
  document.getElementById("d-close").textContent = rs.status === "opening" ? "Cancel opening" : "Close";
  for (const id of ["d-question-form", "d-defaults", "d-cases-add", "d-select-all"]) {
    const node = document.getElementById(id);
    if (node.tagName === "FORM") node.querySelectorAll("input, select, button").forEach((c) => { c.disabled = !draft; });
    else node.disabled = !draft;
  }
}

// While the study is opening: the rendering task's progress (when known), the study reloaded until it is open.
function watchOpening(runId) {
  clearTimeout(openingTimer);
  const box = document.getElementById("d-opening");
  async function poll() {
    if (runId) {
      try {
        const run = await api(`/api/task-runs/${runId}/`);
        box.replaceChildren(el("p", {}, "Opening: rendering every frame before readers can start."), runRow(run));
        if (run.state === "failed" || run.state === "cancelled") {
          box.append(el("p", { class: "muted" }, "Open again to retry, or cancel the opening."));
        }
      } catch { /* the run row is a courtesy; the study's status decides */ }
    } else {
      box.replaceChildren(el("p", {}, "Opening: rendering every frame before readers can start."));
    }
    box.hidden = false;
    const detail = await call(`${base}/`);
    rs = detail;
    renderSettings();
    if (detail.status === "opening") openingTimer = setTimeout(poll, 1500);
    else { openingTimer = null; box.hidden = true; load(); }
  }
  poll();
}

function renderReaders(eligible) {
  const ul = document.getElementById("d-readers");
  ul.replaceChildren(...rs.readers.map((r) => el("li", {}, r.username, " ",
    el("span", { class: "muted" }, rs.status === "draft" ? "" : `${r.submitted} of ${r.total} submitted`), " ",
    rs.status === "draft" ? el("button", { type: "button", class: "link danger", onclick: async () => {
      await call(`${base}/readers/${r.id}/`, { method: "DELETE" }); load(); } }, "remove") : null)));
  if (!rs.readers.length) ul.append(el("li", { class: "muted" }, "No readers yet."));
  const have = new Set(rs.readers.map((r) => r.user));
  const sel = document.getElementById("d-reader-select");
  const free = eligible.filter((u) => !have.has(u.id));
  sel.replaceChildren(...(free.length ? free.map((u) => el("option", { value: u.id }, u.username))
    : [el("option", { value: "" }, "no further users with the Reader role")]));
  sel.disabled = document.getElementById("d-reader-add").disabled = !free.length || rs.status !== "draft";
}

function renderCases(eligible) {
  document.getElementById("d-case-count").textContent = `(${rs.cases.length})`;
  const ul = document.getElementById("d-cases");
  ul.replaceChildren(...rs.cases.map((c) => el("li", {}, c.study_pseudonym, " ",
    c.display_floor_hu !== null ? el("span", { class: "muted", title: "window floor of both images" },
      `floor ${Math.round(c.display_floor_hu)} HU `) : null,
    rs.status === "draft" ? el("button", { type: "button", class: "link danger", onclick: async () => {
      await call(`${base}/cases/${c.id}/`, { method: "DELETE" }); load(); } }, "remove") : null)));
  if (!rs.cases.length) ul.append(el("li", { class: "muted" }, "No cases yet."));
  const have = new Set(rs.cases.map((c) => c.study));
  const free = eligible.filter((s) => !have.has(s.id));
  document.getElementById("d-eligible").replaceChildren(...(free.length ? free.map((s) => el("li", {},
    el("label", {}, el("input", { type: "checkbox", value: s.id }), ` ${s.pseudonym} `, el("span", { class: "muted" }, s.cohort))))
    : [el("li", { class: "muted" }, "No further studies with both DSA and DLA volumes.")]));
}

// ------------------------------------------------------------------ conditional questions
// show_if: null (always shown) or {question: key, answer: value}: shown for an image only while that question
// has that answer there (for multiple choice: among the chosen). The server checks the whole question set.
const CONDITION_TYPES = new Set(["yes_no", "single", "multiple", "ordinal"]);

function answerOptions(parent) {
  if (!parent) return [];
  if (parent.type === "yes_no") return [[true, "yes"], [false, "no"]];
  if (parent.type === "single" || parent.type === "multiple") return parent.choices.map((c) => [c, c]);
  const out = [];
  for (let v = parent.scale_min; v <= parent.scale_max; v++) out.push([v, String(v)]);
  return out;
}

function conditionText(q) {
  if (!q.show_if) return "always";
  const parent = rs.questions.find((p) => p.key === q.show_if.question);
  const answer = answerOptions(parent).find(([v]) => v === q.show_if.answer);
  return `${parent ? parent.text : q.show_if.question} = ${answer ? answer[1] : JSON.stringify(q.show_if.answer)}`;
}

// Two selects (question, answer) for the condition of question `key` (null: a new question); onChange(show_if).
function conditionPicker(key, current, onChange, testid) {
  const parents = rs.questions.filter((p) => p.key !== key && CONDITION_TYPES.has(p.type));
  const qSelect = el("select", { "data-testid": `${testid}-question`, "aria-label": "shown when question" },
    el("option", { value: "" }, "always shown"),
    ...parents.map((p) => el("option", { value: p.key, selected: current?.question === p.key }, `when ${p.key}`)));
  const aSelect = el("select", { "data-testid": `${testid}-answer`, "aria-label": "has the answer" });
  const fillAnswers = () => {
    const parent = parents.find((p) => p.key === qSelect.value);
    aSelect.replaceChildren(...answerOptions(parent).map(([v, label]) =>
      el("option", { value: JSON.stringify(v), selected: current && parent && current.question === parent.key && current.answer === v }, `is ${label}`)));
    aSelect.hidden = !parent;
    aSelect.style.display = parent ? "" : "none"; // the page's CSS sets display on selects
  };
  const value = () => (qSelect.value ? { question: qSelect.value, answer: JSON.parse(aSelect.value) } : null);
  fillAnswers();
  qSelect.addEventListener("change", () => { fillAnswers(); onChange?.(value()); });
  aSelect.addEventListener("change", () => onChange?.(value()));
  const node = el("span", { class: "rs-condition" }, qSelect, " ", aSelect);
  node.value = value;
  return node;
}

function renderQuestions() {
  const tbody = document.querySelector("#d-questions tbody");
  tbody.replaceChildren(...rs.questions.map((q, i) => {
    const frozen = q.has_answers || rs.status !== "draft";
    return el("tr", { "data-question": q.key },
      el("td", {}, String(i + 1)), el("td", {}, q.key), el("td", {}, q.text), el("td", {}, q.type),
      el("td", {}, q.choices.length ? q.choices.join(", ") : q.scale_min !== null && q.scale_max !== null ? `${q.scale_min}–${q.scale_max}` : ""),
      el("td", {}, q.required ? (q.show_if ? "when shown" : "yes") : "no"),
      el("td", { "data-testid": `condition-${q.key}` }, frozen ? conditionText(q)
        : conditionPicker(q.key, q.show_if, async (show_if) => {
          try { await call(`${base}/questions/${q.id}/`, { method: "PATCH", body: { show_if } }); } catch { renderQuestions(); return; }
          load(); // the refusal stays on the page with the stored condition redrawn; success reloads
        }, `showif-${q.key}`)),
      el("td", {}, frozen ? el("span", { class: "muted", title: "frozen: the study has been opened" }, "frozen")
        : el("button", { type: "button", class: "link danger", onclick: async () => {
          try { await call(`${base}/questions/${q.id}/`, { method: "DELETE" }); } catch { return; } // refusal shown
          load(); } }, "delete")));
  }));
  const slot = document.getElementById("d-new-condition");
  slot.replaceChildren(conditionPicker(null, null, null, "showif-new"));
  if (rs.status !== "draft") slot.querySelectorAll("select").forEach((c) => { c.disabled = true; });
}

async function load() {
  const [detail, eligibleStudies, eligibleReaders] = await Promise.all([
    call(`${base}/`), call("/api/reader-studies/eligible-studies/"), call("/api/reader-studies/eligible-readers/")]);
  rs = detail;
  renderSettings();
  renderReaders(eligibleReaders);
  renderCases(eligibleStudies);
  renderQuestions();
  if (rs.status === "opening" && !openingTimer) watchOpening(null);
}

document.getElementById("d-settings").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const body = { title: f.title.value };
  if (rs.status === "draft") {
    Object.assign(body, { instructions: f.instructions.value, window_preset: f.window_preset.value,
      allow_edits: f.allow_edits.checked, mode: f.mode.value });
  }
  await call(`${base}/`, { method: "PATCH", body });
  load();
});
document.getElementById("d-reader-add").addEventListener("click", async () => {
  const v = document.getElementById("d-reader-select").value;
  if (!v) return;
  await call(`${base}/readers/`, { method: "POST", body: { ids: [Number(v)] } });
  load();
});
document.getElementById("d-select-all").addEventListener("click", () => {
  document.querySelectorAll("#d-eligible input[type=checkbox]").forEach((c) => { c.checked = true; });
});
document.getElementById("d-cases-add").addEventListener("click", async () => {
  const ids = [...document.querySelectorAll("#d-eligible input:checked")].map((c) => Number(c.value));
  if (!ids.length) return showError(err, "Select at least one study to add.");
  await call(`${base}/cases/`, { method: "POST", body: { ids } });
  load();
});
document.getElementById("d-question-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const num = (v) => (v === "" ? null : Number(v));
  const body = { key: f.key.value, text: f.text.value, type: f.type.value, required: f.required.checked,
    order: rs.questions.length + 1,
    choices: f.choices.value ? f.choices.value.split(",").map((s) => s.trim()).filter(Boolean) : [],
    scale_min: num(f.scale_min.value), scale_max: num(f.scale_max.value),
    show_if: document.getElementById("d-new-condition").firstChild?.value() ?? null };
  await call(`${base}/questions/`, { method: "POST", body });
  f.reset();
  load();
});
document.getElementById("d-defaults").addEventListener("click", async () => {
  await call(`${base}/default-questions/`, { method: "POST" });
  load();
});
document.getElementById("d-open").addEventListener("click", async () => {
  const out = await call(`${base}/open/`, { method: "POST" });
  if (out.status === "opening") watchOpening(out.cine_task_run);
  else load();
});
document.getElementById("d-close").addEventListener("click", async () => {
  clearTimeout(openingTimer);
  openingTimer = null;
  await call(`${base}/close/`, { method: "POST" });
  document.getElementById("d-opening").hidden = true;
  load();
});

load().catch(() => {});
