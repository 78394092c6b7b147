// Admin results page: per-method frequencies, paired tests (exact McNemar, Wilcoxon signed-rank), inter-reader
// agreement (Cohen's / Fleiss' kappa, weighted for ordinal scales), reader progress and times, plotly charts.
import { api, el, showError } from "./api.js";

const id = document.getElementById("results").dataset.id;
const COLORS = { dsa: "#f2a33a", dla: "#4fb3ff" };
const fmtS = (s) => (s === null || s === undefined ? "–" : s >= 90 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(0)} s`);
const fmtP = (p) => (p === null || p === undefined ? "–" : p < 0.001 ? p.toExponential(2) : p.toFixed(4));
const fmtK = (k) => (!k ? "–" : k.value === null ? `undefined (${k.reason})` : k.value.toFixed(3));

function summaryRows(q) {
  return Object.entries(q.methods).map(([m, e]) => {
    let text;
    if (q.type === "yes_no") text = e.frequency || "no reads";
    else if (e.choices) text = Object.entries(e.choices).map(([c, v]) => `${c}: ${v.frequency || "–"}`).join("; ");
    else if (q.type === "ordinal" || q.type === "number") text = e.n ? `mean ${e.mean.toFixed(2)}, median ${e.median}` : "no reads";
    else text = `${e.n_comments} comments`;
    return el("tr", {}, el("td", {}, el("b", {}, e.label)), el("td", {}, String(e.n)), el("td", { "data-testid": `freq-${q.key}-${m}` }, text));
  });
}

function chart(node, q) {
  if (!window.Plotly) return;
  let traces = [];
  const layout = { barmode: "group", paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: "#e6edf3", size: 12 }, margin: { t: 10, r: 10, b: 40, l: 50 }, height: 260, legend: { orientation: "h" } };
  const methods = Object.entries(q.methods);
  if (q.type === "yes_no") {
    traces = methods.map(([m, e]) => ({ type: "bar", name: e.label, x: ["yes"], y: [e.n ? (100 * e.positive) / e.n : 0], marker: { color: COLORS[m] } }));
    layout.yaxis = { title: "% of reads", range: [0, 100] };
  } else if (q.type === "ordinal") {
    traces = methods.map(([m, e]) => ({ type: "bar", name: e.label, x: Object.keys(e.levels), y: Object.values(e.levels), marker: { color: COLORS[m] } }));
    layout.yaxis = { title: "reads" };
    layout.xaxis = { title: "score", type: "category" };
  } else if (q.type === "single" || q.type === "multiple") {
    traces = methods.map(([m, e]) => ({ type: "bar", name: e.label, x: Object.keys(e.choices), y: Object.values(e.choices).map((v) => v.count), marker: { color: COLORS[m] } }));
    layout.yaxis = { title: "reads" };
  } else return;
  if (!traces.some((t) => t.y.some((v) => v > 0))) {
    node.replaceChildren(el("p", { class: "muted" }, "No reads to chart yet."));
    return;
  }
  window.Plotly.newPlot(node, traces, layout, { displayModeBar: false, responsive: true });
}

function questionCard(q) {
  const stats = [];
  if (q.paired_test) {
    const t = q.paired_test;
    stats.push(el("p", { class: "rs-stat", "data-testid": `test-${q.key}` }, `${t.test}: `, el("b", {}, `p = ${fmtP(t.p_value)}`),
      ` (n = ${t.n_pairs} pairs, statistic ${t.statistic}${t.b_dsa_only !== undefined ? `, discordant DSA-only ${t.b_dsa_only} / DLA-only ${t.c_dla_only}` : ""})`,
      t.note ? el("span", { class: "muted" }, ` ${t.note}`) : null));
  }
  if (q.agreement) {
    const ordinal = q.type === "ordinal";
    stats.push(el("table", { class: "data" },
      el("thead", {}, el("tr", {}, el("th", {}, "Agreement"), el("th", {}, "items"), el("th", {}, "kappa"),
        ordinal ? el("th", {}, "linear") : null, ordinal ? el("th", {}, "quadratic") : null)),
      el("tbody", {}, ...Object.entries(q.agreement).map(([scope, a]) => el("tr", {},
        el("td", {}, `${scope === "all" ? "all images" : scope.toUpperCase()} ${a.method ? `(${a.method === "cohen" ? "Cohen" : "Fleiss"})` : ""}`),
        el("td", {}, String(a.n_items)), el("td", { "data-testid": `kappa-${q.key}-${scope}` }, a.kappa ? fmtK(a.kappa) : a.note || "–"),
        ordinal ? el("td", {}, fmtK(a.kappa_linear)) : null, ordinal ? el("td", {}, fmtK(a.kappa_quadratic)) : null)))));
  }
  const plot = el("div", { class: "rs-chart" });
  const card = el("section", { class: "card", "data-question": q.key },
    el("h2", {}, q.text, " ", el("span", { class: "muted" }, `(${q.type})`)),
    el("div", { class: "rs-qcard" },
      el("div", {}, el("table", { class: "data" }, el("thead", {}, el("tr", {}, el("th", {}, "Method"), el("th", {}, "reads"), el("th", {}, "result"))),
        el("tbody", {}, ...summaryRows(q))), ...stats),
      plot));
  return { card, plot };
}

api(`/api/reader-studies/${id}/results/`).then((res) => {
  document.getElementById("r-note").textContent = `${res.n_cases} cases · ${res.n_readers} reader${res.n_readers === 1 ? "" : "s"} · ${res.note}`;
  document.querySelector("#r-readers tbody").replaceChildren(...res.readers.map((r) => el("tr", {},
    el("td", {}, r.reader), el("td", { "data-testid": `progress-${r.reader}` }, r.progress),
    el("td", {}, fmtS(r.total_time_s)), el("td", {}, fmtS(r.median_time_per_case_s)))));
  const box = document.getElementById("r-questions");
  for (const q of res.questions) {
    const { card, plot } = questionCard(q);
    box.append(card);
    chart(plot, q);
  }
}).catch((e) => showError(document.getElementById("r-error"), e.message));
