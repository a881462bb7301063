// Usage page (admins): GET /api/v1/usage as two tables, per user and per day, with totals.
import { alertIn, api, clear, el, fmtBytes } from "./app.js";

const form = document.getElementById("usage-form");
const since = document.getElementById("usage-since");
const until = document.getElementById("usage-until");
const who = document.getElementById("usage-user");
const errorBox = document.getElementById("usage-error");

const day = (d) => d.toISOString().slice(0, 10);
const hours = (s) => (s / 3600).toFixed(s && s < 36 ? 3 : 1);
const states = (m) => Object.entries(m).sort().map(([k, n]) => `${k.toLowerCase().replace("_", " ")} ${n}`).join(", ");

function row(first, u, total = false) {
  const cell = total ? "th" : "td";
  return el("tr", { class: total ? "total" : "" },
    el(cell, { "data-label": "", scope: total ? "row" : undefined }, first),
    el("td", { class: "num", "data-label": "Jobs" }, String(u.jobs)),
    el("td", { "data-label": "By end" }, states(u.states)),
    el("td", { class: "num", "data-label": "GPU-hours" }, hours(u.gpu_seconds)),
    el("td", { class: "num", "data-label": "CPU-hours" }, hours(u.cpu_seconds)),
    el("td", { class: "num", "data-label": "In" }, fmtBytes(u.bytes_in)),
    el("td", { class: "num", "data-label": "Out" }, fmtBytes(u.bytes_out)));
}

function fill(id, rows, key, total) {
  const table = document.getElementById(id);
  clear(table.tBodies[0], ...(rows.length ? rows.map((u) => row(u[key], u))
    : [el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No jobs ended in this window."))]));
  clear(table.tFoot, row("Total", total, true));
}

async function load() {
  const q = new URLSearchParams({ since: since.value, until: until.value });
  if (who.value.trim()) q.set("user", who.value.trim());
  clear(errorBox);
  try {
    const answer = await api(`/usage?${q}`);
    fill("usage-by-user", answer.by_user, "user", answer.total);
    fill("usage-by-day", answer.by_day, "day", answer.total);
  } catch (e) {
    alertIn(errorBox, "error", e.message);
  }
}

const now = new Date();
until.value = day(now);
since.value = day(new Date(now.getTime() - 29 * 86400e3));
form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
load();
