// Jobs page: the caller's jobs (admins: optionally everyone's), live through server-sent events.
import {
  IS_ADMIN, TERMINAL, badge, clear, el, fmtAgo, fmtBytes, fmtDuration, fmtTime, gpuText,
  jobTitle, liveEvents, queueText, runtimeOf,
} from "./app.js";

const body = document.getElementById("jobs-body");
const table = document.getElementById("jobs-table");
const empty = document.getElementById("jobs-empty");
const counts = document.getElementById("counts");
const errorBox = document.getElementById("jobs-error");
const filterText = document.getElementById("filter-text");
const filterState = document.getElementById("filter-state");
const filterAll = document.getElementById("filter-all");

let jobs = [];
let stop = null;

function cell(label, content, cls) {
  const empty = content === "—" ? " is-empty" : "";  // hidden on narrow screens
  return el("td", { "data-label": label, class: (cls || "") + empty }, content);
}

function row(job, showUser) {
  const runtime = runtimeOf(job);
  const running = job.started_at && !TERMINAL.has(job.state);
  const tr = el("tr", { dataset: { id: job.id, state: job.state } },
    el("th", { scope: "row", "data-label": "Job" },
      el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, class: "job-link" }, jobTitle(job)),
      el("span", { class: "mono muted small block" }, job.id)),
    showUser ? cell("User", job.user) : null,
    cell("State", badge(job.state)),
    cell("GPUs", gpuText(job), "num"),
    cell("Worker", job.worker || "—", "mono small"),
    cell("Queue", queueText(job) || "—", "queue"),
    cell("Runtime", runtime === null ? "—" : el("span", { class: running ? "ticking" : "", dataset: { start: job.started_at } },
      fmtDuration(runtime)), "num"),
    cell("Image", fmtBytes(job.image_size || null), "num"),  // its size (known once it started), not the upload's
    cell("Output", job.output === "none" ? "logs only" : fmtBytes(job.output_bytes || null), "num"),
    cell("Submitted", el("time", { datetime: new Date(job.created_at * 1000).toISOString(), title: fmtTime(job.created_at) },
      fmtAgo(job.created_at))),
  );
  return tr;
}

function visible(job) {
  const want = filterState.value;
  if (want === "active" && TERMINAL.has(job.state)) return false;
  if (want && want !== "active" && job.state !== want) return false;
  const text = filterText.value.trim().toLowerCase();
  if (text && ![job.name, job.id, job.worker, job.user].some((v) => (v || "").toLowerCase().includes(text))) return false;
  return true;
}

function render() {
  const showUser = Boolean(filterAll && filterAll.checked);
  table.querySelector(".col-user").hidden = !showUser;
  const shown = jobs.filter(visible);
  // Keep rows whose job did not change, so focus and selection survive updates.
  const old = new Map([...body.children].map((tr) => [tr.dataset.id, tr]));
  const rows = shown.map((job) => {
    const sig = JSON.stringify(job) + showUser;
    const existing = old.get(job.id);
    if (existing && existing.dataset.sig === sig) return existing;
    const tr = row(job, showUser);
    tr.dataset.sig = sig;
    return tr;
  });
  rows.forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  while (body.children.length > rows.length) body.lastElementChild.remove();
  empty.hidden = shown.length > 0;
  table.hidden = shown.length === 0;
  const active = jobs.filter((j) => !TERMINAL.has(j.state)).length;
  counts.textContent = `${shown.length} of ${jobs.length} shown · ${active} not ended`;
}

function connect() {
  if (stop) stop();
  const params = new URLSearchParams();
  if (filterAll && filterAll.checked) params.set("all", "1");
  stop = liveEvents(params.toString(), (name, data) => {
    if (name !== "jobs") return;
    clear(errorBox);
    jobs = data.jobs || [];
    render();
  });
}

// Runtimes of running jobs tick every second without a round trip.
setInterval(() => {
  const now = Date.now() / 1000;
  for (const span of body.querySelectorAll(".ticking")) {
    const start = Number(span.dataset.start);
    if (start) span.textContent = fmtDuration(now - start);
  }
}, 1000);

filterText.addEventListener("input", render);
filterState.addEventListener("change", render);
if (filterAll) filterAll.addEventListener("change", () => { jobs = []; render(); connect(); });
if (!IS_ADMIN && filterAll) filterAll.closest(".field-check").hidden = true;
window.addEventListener("pagehide", () => stop && stop());
connect();
