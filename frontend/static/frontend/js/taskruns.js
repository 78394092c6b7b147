// Task-run widgets: a progress bar per run, live-updated by polling /api/task-runs/, with a cancel button, the
// study a run works on, when it started and how long it ran. plainError turns a run's error text into words
// (without the Python class name or list brackets the worker's error field carries).
import { api, el } from "./api.js";

const ACTIVE = new Set(["queued", "running"]);

// "ValidationError: ['patient P1 already has ...']" -> "patient P1 already has ..."
export function plainError(text) {
  let message = String(text || "").trim();
  const failed = /^failed:\s*/.test(message);
  message = message.replace(/^failed:\s*/, "");
  message = message.replace(/^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Conflict|Refused|Denied|Invalid)\w*:\s*/, "");
  const list = message.match(/^\[(['"])(.*)\1\]$/s);
  if (list) message = list[2].split(/['"],\s*['"]/).join(" ");
  return failed ? `failed: ${message}` : message;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h} h ${String(m).padStart(2, "0")} min` : m ? `${m} min ${String(sec).padStart(2, "0")} s` : `${sec} s`;
}

// The study a run works on, from its target (study, draft, volume, label version) or its params/result; looked
// up once per target and cached. Resolves to {id, pseudonym} or null (runs over a cohort, reader studies, ...).
const studyCache = new Map();
function lookup(key, loader) {
  if (!studyCache.has(key)) studyCache.set(key, loader().catch(() => null));
  return studyCache.get(key);
}
const studyById = (id) => lookup(`study:${id}`, async () => {
  const s = await api(`/api/studies/${id}/`);
  return { id: s.id, pseudonym: s.pseudonym };
});
function studyOf(run) {
  const result = run.result || {}, params = run.params || {};
  if (result.study_id && result.pseudonym) return Promise.resolve({ id: result.study_id, pseudonym: result.pseudonym });
  if (params.study_id) return studyById(params.study_id);
  const target = run.target;
  if (!target) return Promise.resolve(null);
  const via = { draft: "drafts", volume: "volumes", labelversion: "label-versions" }[target.type];
  if (target.type === "study") return studyById(target.id);
  if (!via) return Promise.resolve(null);
  return lookup(`${target.type}:${target.id}`, async () => {
    const obj = await api(`/api/${via}/${target.id}/`);
    return obj.study ? studyById(obj.study) : null;
  });
}

function whenText(run) {
  const parts = [];
  if (run.started_at) parts.push(`started ${new Date(run.started_at).toLocaleString()}`);
  else parts.push(`queued ${new Date(run.created_at).toLocaleString()}`);
  if (run.duration_s !== null && run.duration_s !== undefined) {
    parts.push(`${ACTIVE.has(run.state) ? "running for" : "took"} ${fmtDuration(run.duration_s)}`);
  }
  if (run.created_by) parts.push(`by ${run.created_by}`);
  return parts.join(" · ");
}

export function runRow(run, { onCancel } = {}) {
  const pct = Math.round((run.progress || 0) * 100);
  const bar = el("div", { class: `progress ${run.state}`, role: "progressbar", "aria-valuenow": pct,
                          "aria-valuemin": 0, "aria-valuemax": 100 },
                 el("div", { class: "bar", style: `width:${pct}%` }));
  const cancel = ACTIVE.has(run.state) && !run.cancel_requested
    ? el("button", { class: "link danger", onclick: () => onCancel && onCancel(run) }, "Cancel") : null;
  const study = el("span", { class: "run-study", dataset: { testid: "run-study" } });
  studyOf(run).then((s) => {
    if (s) study.replaceChildren(el("a", { href: `/studies/${s.id}/` }, s.pseudonym));
  });
  const message = run.state === "failed" ? plainError(run.message) : run.message || "";
  return el("div", { class: "run", dataset: { runId: run.id, state: run.state } },
    el("div", { class: "run-head" },
      el("strong", {}, `${run.kind} #${run.id}`),
      el("span", { class: `badge ${run.state}` }, run.state),
      study,
      el("span", { class: "muted" }, `${pct}% · ${message}`),
      cancel),
    bar,
    el("div", { class: "run-when muted small", dataset: { testid: "run-when" } }, whenText(run)),
    run.error ? el("pre", { class: "error-text" }, plainError(run.error)) : null);
}

export function startRunList(container, { query = "", intervalMs = 1000, emptyText = "Nothing running." } = {}) {
  let timer = null;
  async function cancel(run) {
    try { await api(`/api/task-runs/${run.id}/cancel/`, { method: "POST", body: {} }); }
    catch (err) { alert(err.message); }
    refresh();
  }
  async function refresh() {
    clearTimeout(timer);
    try {
      const page = await api(`/api/task-runs/${query}`);
      const runs = page.results || [];
      container.replaceChildren(...(runs.length ? runs.map((r) => runRow(r, { onCancel: cancel }))
                                             : [el("p", { class: "muted" }, emptyText)]));
      const anyActive = runs.some((r) => ACTIVE.has(r.state));
      timer = setTimeout(refresh, anyActive ? intervalMs : intervalMs * 5);
    } catch (err) {
      container.replaceChildren(el("div", { class: "flash error", role: "alert" }, `Could not load task runs: ${err.message}`));
      timer = setTimeout(refresh, intervalMs * 5);
    }
  }
  refresh();
  return { refresh, stop: () => clearTimeout(timer) };
}
