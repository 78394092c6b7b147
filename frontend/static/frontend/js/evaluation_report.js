// Evaluation report page. While the run is active: a live progress bar (reloads when it has finished). When
// done: plotly box + strip plots of the per-patient Table 1 metrics (with the cohort mean and 95% CI) and a Dice
// vs vessel volume scatter; clicking a patient opens it in the viewer. Data come from json_script (no inline JS).
import { api, el } from "./api.js";
import { runRow } from "./taskruns.js";

const COLORS = { validation: "#4fb3ff", test: "#ff6b6b", train: "#3fb950" };
const ACTIVE = new Set(["queued", "running"]);

async function pollRun(card) {
  const box = document.getElementById("run-progress");
  const runId = card.dataset.run;
  if (!runId) { box.replaceChildren(el("p", { class: "muted" }, "This evaluation has no task run.")); return; }
  try {
    const run = await api(`/api/task-runs/${runId}/`);
    box.replaceChildren(runRow(run, {
      onCancel: async () => { await api(`/api/task-runs/${runId}/cancel/`, { method: "POST", body: {} }); },
    }));
    if (ACTIVE.has(run.state)) setTimeout(() => pollRun(card), 1000);
    else if (run.state === "succeeded") window.location.reload();
  } catch (err) {
    box.replaceChildren(el("div", { class: "flash error", role: "alert" }, err.message));
  }
}

function layout(title, ytitle) {
  return {
    title: { text: title, font: { size: 13, color: "#e6edf3" } },
    paper_bgcolor: "#0b1118", plot_bgcolor: "#0b1118", font: { color: "#8b9bb0", size: 11 },
    margin: { l: 55, r: 12, t: 36, b: 40 }, showlegend: false,
    yaxis: { title: { text: ytitle }, gridcolor: "#223041", zeroline: false },
    xaxis: { gridcolor: "#223041", zeroline: false },
  };
}
const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

function openStudy(event) {
  const point = event.points && event.points[0];
  if (point && point.customdata) window.location.assign(`/studies/${point.customdata[0]}/`);
}

function drawPlots(data) {
  const Plotly = window.Plotly;
  if (!Plotly) return;
  for (const metric of data.metrics) {
    const traces = [];
    for (const cohort of data.cohorts) {
      const name = data.dataset_names[cohort];
      const rows = data.studies.filter((s) => s.cohort === cohort && s[metric.key] !== null);
      if (!rows.length) continue;
      traces.push({
        type: "box", name, y: rows.map((s) => 100 * s[metric.key]), boxpoints: "all", jitter: 0.5, pointpos: 0,
        marker: { color: COLORS[cohort] || "#aaa", size: 6 }, line: { color: COLORS[cohort] || "#aaa", width: 1 },
        fillcolor: "rgba(0,0,0,0)", customdata: rows.map((s) => [s.id, s.pseudonym]),
        hovertemplate: "%{customdata[1]}: %{y:.2f}%<extra></extra>",
      });
      const s = (data.summary[name] || {})[metric.key];
      if (s) {
        const err = s.ci_low === null ? null
          : { type: "data", symmetric: false, array: [100 * (s.ci_high - s.mean)], arrayminus: [100 * (s.mean - s.ci_low)], color: "#e6edf3", thickness: 2, width: 8 };
        traces.push({ type: "scatter", mode: "markers", x: [name], y: [100 * s.mean], error_y: err,
                      marker: { symbol: "line-ew-open", size: 22, color: "#e6edf3", line: { width: 3 } },
                      hovertemplate: `${name} mean ${s.text}<extra></extra>`, name: `${name} mean` });
      }
    }
    const target = document.getElementById(`plot-${metric.key}`);
    Plotly.newPlot(target, traces, layout(metric.label, "%"), config);
    target.on("plotly_click", openStudy);
  }
  const scatter = data.cohorts.map((cohort) => {
    const rows = data.studies.filter((s) => s.cohort === cohort && s.dice !== null);
    return { type: "scatter", mode: "markers", name: data.dataset_names[cohort],
             x: rows.map((s) => s.vessel_volume_ml), y: rows.map((s) => 100 * s.dice),
             marker: { color: COLORS[cohort] || "#aaa", size: 8 }, customdata: rows.map((s) => [s.id, s.pseudonym]),
             hovertemplate: "%{customdata[1]}: Dice %{y:.2f}% at %{x:.3f} mL<extra></extra>" };
  });
  const l = layout("Dice vs reference vessel volume", "Dice (%)");
  l.xaxis.title = { text: "reference vessel volume (mL)" };
  l.showlegend = true;
  l.legend = { orientation: "h", y: -0.25 };
  const target = document.getElementById("plot-dice-volume");
  Plotly.newPlot(target, scatter, l, config);
  target.on("plotly_click", openStudy);
}

const progressCard = document.getElementById("progress-card");
if (progressCard) pollRun(progressCard);
const dataNode = document.getElementById("plot-data");
if (dataNode) drawPlots(JSON.parse(dataNode.textContent));
