// Workers page: GPUs used and free, load, datasets, drained; admins drain and undrain. Polls every 5 s.
import { IS_ADMIN, TERMINAL, alertIn, api, clear, el, fmtBytes, jobTitle, toast } from "./app.js";

const grid = document.getElementById("workers");
const errorBox = document.getElementById("workers-error");
const summary = document.getElementById("summary");
let timer = null;

function status(w) {
  if (!w.alive) return el("span", { class: "badge", "data-state": "LOST" }, "Down");
  if (w.drained) return el("span", { class: "badge", "data-state": "CANCELLED" }, "Drained");
  return el("span", { class: "badge", "data-state": "SUCCEEDED" }, "Up");
}

function gpuModels(w) {
  const counts = new Map();
  for (const g of w.gpus) {
    const key = `${g.name || "GPU"}${g.memory_mib ? ` · ${Math.round(g.memory_mib / 1024)} GiB` : ""}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return [...counts].map(([model, n]) => `${n} × ${model}`).join(", ");
}

function gpuBoxes(w) {
  if (!w.gpus.length) return el("p", { class: "muted small" }, "No GPUs: runs CPU-only jobs.");
  const free = new Set(w.gpus_free || []);
  return [
    el("p", { class: "small gpu-models" }, gpuModels(w)),
    el("ul", { class: "gpus", "aria-label": `GPUs of ${w.name}` }, w.gpus.map((g) => {
      const isFree = w.alive && free.has(g.index);
      return el("li", { class: `gpu ${isFree ? "free" : "used"}`, title: `${g.name} ${g.uuid || ""}` },
        el("span", { class: "gpu-idx" }, `GPU ${g.index}`),
        el("span", { class: "gpu-state" }, isFree ? "free" : (w.alive ? "in use" : "—")));
    })),
  ];
}

function card(w, mine) {
  const used = w.alive ? w.gpus.length - (w.gpus_free || []).length : 0;
  const actions = [];
  if (IS_ADMIN) {
    const undo = w.drained;
    actions.push(el("button", {
      type: "button", class: `btn btn-small ${undo ? "" : "btn-quiet"}`,
      "aria-label": `${undo ? "Undrain" : "Drain"} ${w.name}`,
      onclick: async (e) => {
        e.currentTarget.disabled = true;
        try {
          await api(`/workers/${encodeURIComponent(w.name)}/drain${undo ? "?undo=1" : ""}`, { method: "POST" });
          toast(undo ? `${w.name} takes jobs again.` : `${w.name} is drained: it takes no new jobs.`);
        } catch (err) {
          alertIn(errorBox, "error", err.message);
        }
        refresh();
      },
    }, undo ? "Undrain" : "Drain"));
  }
  return el("article", { class: "card worker", "aria-labelledby": `w-${w.name}`, dataset: { worker: w.name } },
    el("div", { class: "card-head" },
      el("h2", { id: `w-${w.name}`, class: "mono" }, w.name), status(w), el("div", { class: "card-tools" }, actions)),
    el("dl", { class: "stats" },
      el("div", {}, el("dt", {}, "GPUs used"), el("dd", {}, `${used} / ${w.gpus.length}`)),
      el("div", {}, el("dt", {}, "Running"), el("dd", {}, String(w.running))),
      el("div", {}, el("dt", {}, "Queued"), el("dd", {}, String(w.queued))),
      el("div", {}, el("dt", {}, "CPUs"), el("dd", {}, String(w.cpus))),
      el("div", {}, el("dt", {}, "Memory"), el("dd", {}, fmtBytes(w.memory_bytes))),
      el("div", {}, el("dt", {}, "Disk free"), el("dd", {}, w.alive ? fmtBytes(w.disk_free_bytes) : "—"))),
    gpuBoxes(w),
    (w.datasets || []).length
      ? el("p", { class: "small" }, "Datasets: ", w.datasets.map((d, i) => [i ? ", " : "", el("code", {}, d)]))
      : null,
    mine.length
      ? el("div", { class: "mine" }, el("h3", {}, "Your jobs here"),
        el("ul", {}, mine.map((j) => el("li", {},
          el("a", { href: `/jobs/${encodeURIComponent(j.id)}` }, jobTitle(j)), " ",
          el("span", { class: "badge", "data-state": j.state }, j.state.toLowerCase())))))
      : null,
    el("p", { class: "muted small" }, `${(w.images || []).length} ${(w.images || []).length === 1 ? "image" : "images"} cached`));
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [{ workers }, { jobs }] = await Promise.all([api("/workers"), api("/jobs?limit=200")]);
    clear(errorBox);
    const active = jobs.filter((j) => !TERMINAL.has(j.state));
    clear(grid, ...workers.map((w) => card(w, active.filter((j) => j.worker === w.name))));
    if (!workers.length) clear(grid, el("div", { class: "card empty" }, el("p", {}, "No worker has registered yet.")));
    const up = workers.filter((w) => w.alive);
    const gpus = up.reduce((n, w) => n + w.gpus.length, 0);
    const free = up.reduce((n, w) => n + (w.drained ? 0 : (w.gpus_free || []).length), 0);
    summary.textContent = `${up.length} of ${workers.length} up · ${free} of ${gpus} GPUs free.`;
  } catch (e) {
    alertIn(errorBox, "error", e.message);
  }
  timer = setTimeout(refresh, 5000);
}

refresh();
