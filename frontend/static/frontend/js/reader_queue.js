// The reader's queue: their reader studies with progress, a resume link and every case by position.
import { api, el, showError } from "./api.js";

const box = document.getElementById("reading-studies");

api("/api/reading-studies/").then((studies) => {
  if (!studies.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No reader study is assigned to you yet."));
    return;
  }
  box.replaceChildren(...studies.map((s) => {
    const pct = s.total ? (100 * s.submitted) / s.total : 0;
    const finished = s.submitted === s.total;
    const bar = el("div", {});
    bar.style.width = `${pct.toFixed(1)}%`; // CSSOM, not an inline style attribute (CSP)
    return el("section", { class: "card rq-study", "data-testid": "reading-study" },
      el("h2", {}, s.title, " ", el("span", { class: "badge" }, s.status)),
      el("div", {}, el("b", {}, s.progress), " cases submitted"),
      el("div", { class: "rq-bar" }, bar),
      s.instructions ? el("p", { class: "muted" }, s.instructions) : null,
      s.resume ? el("a", { href: `/reading/${s.resume}/`, class: "button", "data-testid": "resume" },
        finished ? "Review cases →" : s.submitted ? "Resume reading →" : "Start reading →") : null,
      el("div", { class: "rq-items" }, ...s.queue.map((item) =>
        el("a", { href: `/reading/${item.token}/`, class: item.submitted ? "done" : item.started ? "started" : "",
                  title: item.submitted ? "submitted" : item.started ? "started" : "not started" }, String(item.position)))));
  }));
}).catch((err) => showError(box, err.message));
