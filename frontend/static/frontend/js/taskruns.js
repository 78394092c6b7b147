// Task-run widgets: a progress bar per run, live-updated by polling /api/task-runs/, with a cancel button.
import { api, el } from "./api.js";

const ACTIVE = new Set(["queued", "running"]);

export function runRow(run, { onCancel } = {}) {
  const pct = Math.round((run.progress || 0) * 100);
  const bar = el("div", { class: `progress ${run.state}`, role: "progressbar", "aria-valuenow": pct,
                          "aria-valuemin": 0, "aria-valuemax": 100 },
                 el("div", { class: "bar", style: `width:${pct}%` }));
  const cancel = ACTIVE.has(run.state) && !run.cancel_requested
    ? el("button", { class: "link danger", onclick: () => onCancel && onCancel(run) }, "Cancel") : null;
  return el("div", { class: "run", dataset: { runId: run.id, state: run.state } },
    el("div", { class: "run-head" },
      el("strong", {}, `${run.kind} #${run.id}`),
      el("span", { class: `badge ${run.state}` }, run.state),
      el("span", { class: "muted" }, `${pct}% · ${run.message || ""}`),
      cancel),
    bar,
    run.error ? el("pre", { class: "error-text" }, run.error) : null);
}

export function startRunList(container, { query = "", intervalMs = 1000, emptyText = "Nothing running." } = {}) {
  let timer = null;
  async function cancel(run) {
    try { await api(`/api/task-runs/${run.id}/cancel/`, { method: "POST", body: {} }); }
    catch (err) { alert(err.message); }
    refresh();
  }
  async function refresh() {
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
