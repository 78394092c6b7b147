// Dashboard: the user's active task runs (live) and, for annotators, the studies to label.
import { api, el } from "./api.js";
import { startRunList } from "./taskruns.js";

startRunList(document.getElementById("active-runs"), { query: "?active=1&exclude_kind=cine", emptyText: "Nothing running right now." });

const studies = document.getElementById("studies-list");
if (studies) {
  api("/api/studies/?page_size=10").then((page) => {
    const items = (page.results || []).map((s) =>
      el("li", {}, el("a", { href: `/studies/${s.id}/` }, s.pseudonym), " ",
         el("span", { class: "muted" }, `${s.cohort} · ${s.label_status || "no labels"}`)));
    if (items.length) {
      studies.replaceChildren(...items);
      document.querySelector("#studies-card [data-empty]")?.remove();
    }
  }).catch(() => {});
}

const readerList = document.getElementById("reader-list");
if (readerList) {
  api("/api/reading-studies/").then((studies) => {
    const items = (studies || []).filter((s) => s.status !== "draft").map((s) =>
      el("li", {},
        s.resume ? el("a", { href: `/reading/${s.resume}/` }, s.title) : el("span", {}, s.title), " ",
        el("span", { class: "muted" }, `${s.progress} scored${s.status === "closed" ? " · closed" : ""}`)));
    if (items.length) readerList.replaceChildren(...items);
  }).catch(() => {});
}
