// Jobs page: the caller's jobs (admins: optionally everyone's), live through server-sent events.
import {
  IS_ADMIN, TERMINAL, alertIn, api, badge, clear, el, fmtAgo, fmtBytes, fmtDuration, fmtTime, gpuText,
  jobTitle, liveEvents, queueText, runtimeOf, startsByText,
} from "./app.js";
import { countsText, foldArrays } from "./arrays.js";

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
// "Older jobs": pages before the live list (GET /jobs?before=ID), and the cursor of the next one.
const PAGE = 200;  // what the live list shows (the events' default limit)
const olderButton = document.getElementById("jobs-older");
let older = [];
let olderNext = "";

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
    cell("Queue", queueText(job) ? [queueText(job), startsByText(job) ? el("span", {
      class: "eta block small muted", title: "at the latest, if the jobs ahead use their full time limits",
    }, startsByText(job, true)) : null] : "—", "queue"),
    cell("Runtime", runtime === null ? "—" : el("span", { class: running ? "ticking" : "", dataset: { start: job.started_at } },
      fmtDuration(runtime)), "num"),
    cell("Image", fmtBytes(job.image_size || null), "num"),  // its size (known once it started), not the upload's
    cell("Output", job.output === "none" ? "logs only" : fmtBytes(job.output_bytes || null), "num"),
    cell("Submitted", el("time", { datetime: new Date(job.created_at * 1000).toISOString(), title: fmtTime(job.created_at) },
      fmtAgo(job.created_at))),
  );
  return tr;
}

/** One row for the listed jobs of an array, with its counts per state and a link to its page. */
function arrayRow(array, showUser) {
  const submitted = array.created_at;
  const workers = [...new Set(array.jobs.map((j) => j.worker).filter(Boolean))].sort();
  const sent = array.jobs.reduce((n, j) => n + (j.image_bytes || 0), 0);
  const shown = array.jobs.length === array.size ? `${array.size} jobs` : `${array.jobs.length} of ${array.size} jobs`;
  return el("tr", { dataset: { id: `array:${array.id}`, array: array.id }, class: "array-row" },
    el("th", { scope: "row", "data-label": "Job" },
      el("a", { href: `/arrays/${encodeURIComponent(array.id)}`, class: "job-link array-link" },
        `${array.name || "Job array"} [array, ${shown}]`),
      el("span", { class: "mono muted small block" }, array.id)),
    showUser ? cell("User", array.user) : null,
    cell("State", countsText(array.counts), "array-counts"),
    cell("GPUs", gpuText(array.jobs[0]), "num"),
    cell("Worker", workers.join(", ") || "—", "mono small"),
    cell("Queue", array.limit ? `at most ${array.limit} at once` : "—", "queue"),
    cell("Runtime", "—", "num"),
    cell("Image", fmtBytes(sent || null), "num"),
    cell("Output", "—", "num"),
    cell("Submitted", el("time", { datetime: new Date(submitted * 1000).toISOString(), title: fmtTime(submitted) },
      fmtAgo(submitted))),
  );
}

function visible(job) {
  const want = filterState.value;
  if (want === "active" && TERMINAL.has(job.state)) return false;
  if (want && want !== "active" && job.state !== want) return false;
  const text = filterText.value.trim().toLowerCase();
  if (text && ![job.name, job.id, job.worker, job.user, job.array_id].some((v) => (v || "").toLowerCase().includes(text))) return false;
  return true;
}

function render() {
  const showUser = Boolean(filterAll && filterAll.checked);
  table.querySelector(".col-user").hidden = !showUser;
  const all = [...jobs, ...older.filter((j) => !jobs.some((k) => k.id === j.id))];
  const shown = all.filter(visible);
  // Keep rows whose job did not change, so focus and selection survive updates.
  const old = new Map([...body.children].map((tr) => [tr.dataset.id, tr]));
  // The jobs of an array fold into one row (its page lists them).
  const rows = foldArrays(shown).map(({ job, array }) => {
    const sig = JSON.stringify(job || array) + showUser;
    const existing = old.get(job ? job.id : `array:${array.id}`);
    if (existing && existing.dataset.sig === sig) return existing;
    const tr = job ? row(job, showUser) : arrayRow(array, showUser);
    tr.dataset.sig = sig;
    return tr;
  });
  rows.forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  while (body.children.length > rows.length) body.lastElementChild.remove();
  empty.hidden = shown.length > 0;
  table.hidden = shown.length === 0;
  const active = all.filter((j) => !TERMINAL.has(j.state)).length;
  counts.textContent = `${shown.length} of ${all.length} shown · ${active} not ended`;
  olderButton.hidden = older.length ? !olderNext : jobs.length < PAGE;
}

async function loadOlder() {
  const before = older.length ? olderNext : jobs[jobs.length - 1].id;
  const params = new URLSearchParams({ limit: String(PAGE), before });
  if (filterAll && filterAll.checked) params.set("all", "1");
  try {
    const answer = await api(`/jobs?${params}`);
    older = [...older, ...answer.jobs];
    olderNext = answer.next || "";
    render();
  } catch (e) {
    alertIn(errorBox, "error", e.message);
  }
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
if (filterAll) filterAll.addEventListener("change", () => { jobs = []; older = []; render(); connect(); });
olderButton.addEventListener("click", loadOlder);
if (!IS_ADMIN && filterAll) filterAll.closest(".field-check").hidden = true;
window.addEventListener("pagehide", () => stop && stop());
connect();
