// Evaluation report page. While the run is active: a live progress bar (reloads when it has finished). When
// done: plotly box + strip plots of the per-patient Table 1 metrics (with the cohort mean and 95% CI) and a Dice
// vs vessel volume scatter; on phantom cohorts also Dice by vessel radius (3D-DLA vs the 3D-DSA baseline, cohort
// mean and 95% CI, groups thinner than one voxel shaded) and residual bone by case (largest cluster, mm^3);
// clicking a patient opens it in the viewer. Data come from json_script (no inline JS).
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

const METHOD_COLORS = { dla: ["#9ecae1", "#4fb3ff"], dsa: ["#fdd0a2", "#ff9f43"] };

function drawTruthPlots(data) {
  const Plotly = window.Plotly;
  if (!Plotly) return;
  const labels = data.bins.map((b) => b.label);
  const traces = [];
  data.datasets.forEach((ds, di) => {
    const shade = data.datasets.length > 1 && di === 0 ? 0 : 1;
    for (const side of ["dla", "dsa"]) {
      const values = ds[side];
      traces.push({
        type: "bar", name: `${data.methods[side]}, ${ds.dataset} (n=${ds.n})`, x: labels,
        y: values.map((v) => (v ? 100 * v[0] : null)),
        error_y: { type: "data", symmetric: false, color: "#e6edf3", thickness: 1.5, width: 4,
                   array: values.map((v) => (v && v[2] !== null ? 100 * (v[2] - v[0]) : 0)),
                   arrayminus: values.map((v) => (v && v[1] !== null ? 100 * (v[0] - v[1]) : 0)) },
        marker: { color: METHOD_COLORS[side][shade] },
        hovertemplate: `${data.methods[side]} ${ds.dataset}, radius %{x}: Dice %{y:.1f}%<extra></extra>`,
      });
    }
  });
  const below = data.bins.map((b, i) => (b.below_voxel ? i : -1)).filter((i) => i >= 0);
  const l = layout(`Dice by vessel radius against the truth (voxel ${data.voxel_mm.toFixed(2)} mm)`, "Dice (%)");
  l.barmode = "group";
  l.showlegend = true;
  l.legend = { orientation: "h", y: -0.25 };
  l.xaxis.title = { text: "vessel radius (the phantom's own radii)" };
  l.yaxis.range = [0, 105];
  if (below.length) {
    l.shapes = [{ type: "rect", xref: "x", yref: "paper", x0: Math.min(...below) - 0.5, x1: Math.max(...below) + 0.5,
                  y0: 0, y1: 1, fillcolor: "rgba(139,155,176,0.12)", line: { width: 0 }, layer: "below" }];
    l.annotations = [{ xref: "x", yref: "paper", x: (Math.min(...below) + Math.max(...below)) / 2, y: 1.0, yanchor: "bottom",
                       text: "thinner than one voxel", showarrow: false, font: { size: 10, color: "#8b9bb0" } }];
  }
  Plotly.newPlot(document.getElementById("plot-truth-radius"), traces, l, config);

  const cases = data.cases;
  const names = cases.map((c) => c.pseudonym);
  const bone = ["dla", "dsa"].map((side) => ({
    type: "bar", name: data.methods[side], x: names,
    y: cases.map((c) => c[`${side}_bone_mm3`] || 0),
    marker: { color: METHOD_COLORS[side][1] },
    customdata: cases.map((c) => [c.study, c.pseudonym, c.motion === null ? "n/a" : (c.motion ? "yes" : "no"),
                                   c[`${side}_bone_distance_mm`] === null ? "n/a" : c[`${side}_bone_distance_mm`].toFixed(1)]),
    hovertemplate: `%{customdata[1]} (motion %{customdata[2]}): ${data.methods[side]} largest cluster %{y:.0f} mm³, %{customdata[3]} mm from a truth vessel<extra></extra>`,
  }));
  const lb = layout("Residual bone by case (largest cluster beyond the vessel margin)", "mm³");
  lb.barmode = "group";
  lb.showlegend = true;
  lb.legend = { orientation: "h", y: -0.35 };
  const threshold = cases.length ? cases[0].bone_min_mm3 : null;
  if (threshold) {
    lb.shapes = [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: threshold, y1: threshold,
                   line: { color: "#d29922", dash: "dash", width: 1 } }];
  }
  const target = document.getElementById("plot-truth-bone");
  Plotly.newPlot(target, bone, lb, config);
  target.on("plotly_click", openStudy);
}

const progressCard = document.getElementById("progress-card");
if (progressCard) pollRun(progressCard);
const dataNode = document.getElementById("plot-data");
if (dataNode) drawPlots(JSON.parse(dataNode.textContent));
const truthNode = document.getElementById("truth-plot-data");
if (truthNode) drawTruthPlots(JSON.parse(truthNode.textContent));
