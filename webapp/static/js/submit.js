// Submit page: the tarball goes as the raw body of POST /api/v1/jobs (never multipart: the
// server streams it straight to a worker), sent with XMLHttpRequest for its progress events;
// what the job runs with (command, environment, datasets, resources) as the Pink-Job-Spec header.
import { CSRF, ApiError, alertIn, api, clear, el, fmtBytes, fmtDuration } from "./app.js";
import { SPEC_HEADER, parseEnv, shellSplit, specHeader } from "./jobspec.js";

const form = document.getElementById("submit-form");
const input = document.getElementById("file");
const zone = document.getElementById("dropzone");
const chosen = document.getElementById("file-chosen");
const fileError = document.getElementById("file-error");
const box = document.getElementById("progress-box");
const bar = document.getElementById("progress");
const pct = document.getElementById("progress-pct");
const label = document.getElementById("progress-label");
const result = document.getElementById("result");
const submitBtn = document.getElementById("submit-btn");
const cancelBtn = document.getElementById("cancel-upload");
const nameInput = document.getElementById("name");
const datasetBox = document.getElementById("datasets");
const MAX = Number(document.body.dataset.maxUpload) || Infinity;

let file = null;
let xhr = null;
let heldImage = null;  // image id when a worker already holds this tarball's image

const MAGIC = [
  [[0x1f, 0x8b], "gzip", "gunzip"],
  [[0x28, 0xb5, 0x2f, 0xfd], "zstd", "zstd -d"],
  [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], "xz", "unxz"],
  [[0x42, 0x5a, 0x68], "bzip2", "bunzip2"],
];

/** Cheap checks before sending anything; the server checks the whole archive as it streams. */
async function precheck(f) {
  if (f.size === 0) return "This file is empty. Choose the tarball that `docker save` wrote.";
  if (f.size > MAX) return `This file is ${fmtBytes(f.size)}; the largest upload this cluster takes is ${fmtBytes(MAX)}.`;
  const head = new Uint8Array(await f.slice(0, 512).arrayBuffer());
  for (const [magic, name, tool] of MAGIC) {
    if (magic.every((b, i) => head[i] === b)) {
      return `This file is ${name}-compressed. Decompress it first (${tool}) and upload the plain .tar, ` +
        "or write it with `docker save IMAGE -o image.tar`.";
    }
  }
  const ustar = String.fromCharCode(...head.slice(257, 262));
  if (head.length < 512 || ustar !== "ustar") {
    return "This is not a tar archive. Upload the file that `docker save IMAGE -o image.tar` writes.";
  }
  return null;
}

// ----- the image id, read from the tarball without uploading it --------------------------------
// Like the CLI: the id is the sha256 of the config that manifest.json names. If a worker
// already holds that image (one this user uploaded before), nothing needs to be sent.

const text = (bytes) => new TextDecoder().decode(bytes).replace(/\0.*$/s, "");

async function readAt(f, start, length) {
  return new Uint8Array(await f.slice(start, start + length).arrayBuffer());
}

/** name -> [offset, size] of the archive's members (headers only; content is skipped). */
async function tarIndex(f, wanted) {
  const found = new Map();
  let offset = 0;
  let longName = null;
  for (let i = 0; i < 100000 && offset + 512 <= f.size; i++) {
    const h = await readAt(f, offset, 512);
    if (h.every((b) => b === 0)) break;
    const size = parseInt(text(h.slice(124, 136)).trim() || "0", 8);
    const type = String.fromCharCode(h[156] || 48);
    const prefix = text(h.slice(345, 500));
    let name = longName || (prefix ? `${prefix}/` : "") + text(h.slice(0, 100));
    longName = null;
    const body = offset + 512;
    if (type === "L") {
      longName = text(await readAt(f, body, size));
    } else if (type === "x") {
      const pax = text(await readAt(f, body, Math.min(size, 65536)));
      const m = pax.match(/\d+ path=([^\n]*)\n/);
      if (m) longName = m[1];
    } else if (type === "0" || type === "\0") {
      name = name.replace(/^\.\//, "");
      if (wanted(name)) found.set(name, [body, size]);
    }
    offset = body + Math.ceil(size / 512) * 512;
  }
  return found;
}

async function imageIdOf(f) {
  if (!crypto.subtle) return null;  // not a secure context (plain HTTP)
  const members = await tarIndex(f, (n) => n === "manifest.json" || n.endsWith(".json") || n.startsWith("blobs/"));
  const at = members.get("manifest.json");
  if (!at || at[1] > 1 << 20) return null;
  const manifest = JSON.parse(new TextDecoder().decode(await readAt(f, at[0], at[1])));
  if (!Array.isArray(manifest) || manifest.length !== 1 || !manifest[0].Config) return null;
  const config = members.get(String(manifest[0].Config).replace(/^\.\//, ""));
  if (!config || config[1] > 16 << 20) return null;
  const digest = await crypto.subtle.digest("SHA-256", await readAt(f, config[0], config[1]));
  return "sha256:" + [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function checkHeld(f) {
  try {
    const id = await imageIdOf(f);
    if (!id || file !== f) return;
    const { workers } = await api(`/images/${encodeURIComponent(id)}`);
    if (file !== f || !workers.length) return;
    heldImage = id;
    chosen.append(el("span", { class: "held block small", id: "image-held" },
      `Worker ${workers[0]} already has this image: nothing needs to be uploaded.`));
    submitBtn.textContent = "Submit (no upload needed)";
  } catch (e) {
    if (!(e instanceof ApiError || e instanceof SyntaxError)) console.warn("could not read the image id", e);
  }
}

async function choose(f) {
  clear(fileError);
  clear(result);
  file = null;
  heldImage = null;
  submitBtn.textContent = "Upload and submit";
  chosen.hidden = true;
  if (!f) return;
  const problem = await precheck(f);
  if (problem) {
    alertIn(fileError, "error", problem);
    return;
  }
  file = f;
  chosen.hidden = false;
  chosen.classList.remove("refused");
  clear(chosen, el("strong", {}, f.name), ` · ${fmtBytes(f.size)}`);
  if (!nameInput.value) nameInput.placeholder = f.name.replace(/\.tar$/i, "");
  checkHeld(f);
}

input.addEventListener("change", () => choose(input.files[0]));
for (const type of ["dragenter", "dragover"]) {
  zone.addEventListener(type, (ev) => { ev.preventDefault(); zone.classList.add("dragging"); });
}
for (const type of ["dragleave", "drop"]) {
  zone.addEventListener(type, (ev) => { ev.preventDefault(); zone.classList.remove("dragging"); });
}
zone.addEventListener("drop", (ev) => {
  const f = ev.dataTransfer && ev.dataTransfer.files[0];
  if (f) choose(f);
});
// A file dropped next to the zone should not make the browser navigate away to it.
window.addEventListener("dragover", (ev) => ev.preventDefault());
window.addEventListener("drop", (ev) => ev.preventDefault());

function busy(on) {
  submitBtn.disabled = on;
  cancelBtn.hidden = !on;
  input.disabled = on;
  for (const field of form.querySelectorAll("input:not([type=file]), select, textarea")) field.disabled = on;
}

// ----- datasets the workers offer ---------------------------------------------------------------

async function loadDatasets() {
  let datasets;
  try {
    ({ datasets } = await api("/datasets"));
  } catch (e) {
    clear(datasetBox, el("span", { class: "muted small" }, `Could not list the datasets: ${e.message}`));
    return;
  }
  if (!datasets.length) {
    clear(datasetBox, el("span", { class: "muted small" }, "No worker offers a dataset."));
    return;
  }
  clear(datasetBox, ...datasets.map((d) => el("label", { class: "field-check" },
    el("input", { type: "checkbox", name: "data", value: d.name, "aria-describedby": `data-${d.name}` }),
    el("span", { class: "mono" }, d.name),
    el("span", { class: "muted small", id: `data-${d.name}` }, d.available
      ? `on ${d.workers.join(", ")}`
      : `on ${d.workers.join(", ")}: down or drained now`))));
}

/** The Pink-Job-Spec fields the page's inputs ask for (only those filled in). */
function jobSpec(data) {
  const spec = {};
  const command = shellSplit(String(data.get("command") || ""));
  if (command.length) spec.command = command;
  const env = parseEnv(String(data.get("env") || ""));
  if (Object.keys(env).length) spec.env = env;
  const datasets = data.getAll("data");
  if (datasets.length) spec.data = datasets;
  const workdir = String(data.get("workdir") || "").trim();
  if (workdir) {
    if (!workdir.startsWith("/")) throw new Error("The working directory must be an absolute path (starting with /).");
    spec.workdir = workdir;
  }
  const cpus = String(data.get("cpus") || "").trim();
  if (cpus) {
    if (!(Number(cpus) > 0)) throw new Error("CPUs must be a number above 0, e.g. 4 or 0.5.");
    spec.cpus = Number(cpus);
  }
  for (const key of ["memory", "shm_size"]) {
    const size = String(data.get(key) || "").trim();
    if (size) spec[key] = size;  // the server reads docker's size syntax
  }
  return spec;
}

function params() {
  const data = new FormData(form);
  const p = new URLSearchParams();
  const gpus = Number(data.get("gpus"));
  const timeout = Math.round(Number(data.get("timeout")) * Number(document.getElementById("timeout-unit").value));
  if (!Number.isInteger(gpus) || gpus < 0 || gpus > 64) throw new Error("GPUs must be a whole number from 0 to 64.");
  if (!(timeout >= 1 && timeout <= 7 * 86400)) throw new Error("The time limit must be between 1 second and 7 days.");
  p.set("gpus", String(gpus));
  p.set("timeout", String(timeout));
  p.set("output", data.get("output") || "full");
  p.set("name", (data.get("name") || "").trim() || file.name.replace(/\.tar$/i, ""));
  const priority = Number(data.get("priority") || 0);
  if (priority) p.set("priority", String(priority));
  return { query: p, spec: jobSpec(data) };
}

function showProgress(loaded, total, started, samples) {
  const now = performance.now();
  samples.push([now, loaded]);
  while (samples.length > 2 && now - samples[0][0] > 3000) samples.shift();  // last ~3 s
  const [t0, b0] = samples[0];
  const rate = now > t0 ? ((loaded - b0) * 1000) / (now - t0) : 0;
  const percent = total ? Math.floor((loaded * 100) / total) : 0;
  bar.value = percent;
  pct.textContent = `${percent}%`;
  const eta = rate > 0 ? fmtDuration((total - loaded) / rate) : "…";
  label.textContent = loaded >= total
    ? `${fmtBytes(total)} sent in ${fmtDuration((now - started) / 1000)}. The server is checking the archive…`
    : `${fmtBytes(loaded)} of ${fmtBytes(total)} · ${fmtBytes(rate)}/s · ${eta} left`;
  form.dispatchEvent(new CustomEvent("upload-progress", { detail: { loaded, total, rate } }));
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  clear(result);
  if (!file) {
    alertIn(fileError, "error", "Choose an image tarball first.");
    input.focus();
    return;
  }
  let query, spec;
  try {
    ({ query, spec } = params());
  } catch (e) {
    alertIn(result, "error", e.message);
    return;
  }
  const started = performance.now();
  const samples = [];
  box.hidden = false;
  bar.value = 0;
  pct.textContent = "0%";
  label.textContent = `Starting the upload of ${fmtBytes(file.size)}…`;
  busy(true);
  const sentHeld = heldImage;
  if (sentHeld) query.set("image", sentHeld);
  xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/v1/jobs?" + query.toString());
  xhr.setRequestHeader("X-CSRF-Token", CSRF);
  xhr.setRequestHeader("Content-Type", "application/x-tar");
  xhr.setRequestHeader("Accept", "application/json");
  if (Object.keys(spec).length) xhr.setRequestHeader(SPEC_HEADER, specHeader(spec));
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (e) => showProgress(e.loaded, e.lengthComputable ? e.total : file.size, started, samples));
  xhr.addEventListener("load", () => {
    busy(false);
    const data = xhr.response || {};
    if (xhr.status === 201 || xhr.status === 200) {
      const job = data.job;
      box.hidden = true;
      const seconds = (performance.now() - started) / 1000;
      const how = sentHeld
        ? "(the worker had the image: nothing was uploaded). "
        : `(${fmtBytes(file.size)} in ${fmtDuration(seconds)}, ${fmtBytes(file.size / Math.max(seconds, 0.001))}/s). `;
      alertIn(result, "ok", `Job ${job.name || job.id} is ${job.state.toLowerCase()} on ${job.worker} `, how,
        el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, id: "new-job-link" }, "Open the job"));
      form.dispatchEvent(new CustomEvent("upload-done", { detail: { job } }));
      return;
    }
    if (xhr.status === 409 && sentHeld) {
      // The worker no longer has the image after all: send the file.
      heldImage = null;
      submitBtn.textContent = "Upload and submit";
      document.getElementById("image-held")?.remove();
      form.requestSubmit();
      return;
    }
    if (xhr.status === 401) {
      alertIn(result, "error", "Your session has ended. ", el("a", { href: "/login?next=/submit" }, "Log in again"), " and resubmit.");
      return;
    }
    box.hidden = true;
    const message = data.error || `The server refused the upload (${xhr.status}).`;
    // Without a spec a 400 is about the archive; with one it may be about either (it says which).
    const fileRefused = xhr.status === 400 && !Object.keys(spec).length;
    const title = fileRefused ? "The file was refused: " : "Not submitted: ";
    chosen.classList.toggle("refused", fileRefused);
    alertIn(result, "error", title + message);
  });
  xhr.addEventListener("error", () => {
    busy(false);
    box.hidden = true;
    alertIn(result, "error", "The upload broke off (network error or the server went away). Nothing was submitted; try again.");
  });
  xhr.addEventListener("abort", () => {
    busy(false);
    box.hidden = true;
    alertIn(result, "info", "Upload cancelled. Nothing was submitted.");
  });
  if (sentHeld) {
    label.textContent = "The worker has the image already: nothing to upload.";
    xhr.send();  // an empty body + image= is the zero-byte path (docs/api.md)
  } else {
    xhr.send(file);
  }
});

cancelBtn.addEventListener("click", () => { if (xhr) xhr.abort(); });
loadDatasets();
