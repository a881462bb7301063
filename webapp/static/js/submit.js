// Submit page: the tarball goes as the raw body of POST /api/v1/jobs (never multipart: the
// server streams it straight to a worker), sent with XMLHttpRequest for its progress events;
// what the job runs with (command, environment, datasets, resources) as the Pink-Job-Spec header.
// An input (a folder made into a tar here, or a .tar) goes first, as the body of
// POST /api/v1/inputs; the job then names it with input=.
import { CSRF, ApiError, alertIn, api, clear, el, fmtBytes, fmtDuration } from "./app.js";
import { SPEC_HEADER, parseEnv, shellSplit, specHeader } from "./jobspec.js";
import { folderTar } from "./tarball.js";

const form = document.getElementById("submit-form");
const input = document.getElementById("file");
const zone = document.getElementById("dropzone");
const chosen = document.getElementById("file-chosen");
const fileError = document.getElementById("file-error");
const inputFolder = document.getElementById("input-folder");
const inputTar = document.getElementById("input-tar");
const inputChosen = document.getElementById("input-chosen");
const inputError = document.getElementById("input-error");
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
const MAX_INPUT = Number(document.getElementById("input-card").dataset.maxInput) || Infinity;

let file = null;
let xhr = null;
let heldImage = null;  // image id when a worker already holds this tarball's image
let jobInput = null;  // {blob, id}: the input's tar, and its id once a worker holds it

const MAGIC = [
  [[0x1f, 0x8b], "gzip", "gunzip"],
  [[0x28, 0xb5, 0x2f, 0xfd], "zstd", "zstd -d"],
  [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], "xz", "unxz"],
  [[0x42, 0x5a, 0x68], "bzip2", "bunzip2"],
];

/** The compression of a file ("gzip", "zstd", "xz", "bzip2"), from its first bytes; null for none. */
async function compressionOf(f) {
  const head = new Uint8Array(await f.slice(0, 8).arrayBuffer());
  const found = MAGIC.find(([magic]) => magic.every((b, i) => head[i] === b));
  return found ? found[1] : null;
}

/** Why a file is not a plain tar archive (null when it looks like one), from its first block.
 * With ``compressedOk`` (an image: the server decompresses what `docker load` would), a
 * compressed file passes too. */
async function notATar(f, compressedOk = false) {
  if (f.size === 0) return "This file is empty.";
  const head = new Uint8Array(await f.slice(0, 512).arrayBuffer());
  for (const [magic, name, tool] of MAGIC) {
    if (magic.every((b, i) => head[i] === b)) {
      return compressedOk ? null : `This file is ${name}-compressed. Decompress it first (${tool}).`;
    }
  }
  const ustar = String.fromCharCode(...head.slice(257, 262));
  return head.length < 512 || ustar !== "ustar" ? "This is not a tar archive." : null;
}

/** Cheap checks before sending anything; the server checks the whole archive as it streams. */
async function precheck(f) {
  if (f.size > MAX) return `This file is ${fmtBytes(f.size)}; the largest upload this cluster takes is ${fmtBytes(MAX)}.`;
  const problem = await notATar(f, true);
  return problem && `${problem} Upload the .tar that \`docker save IMAGE -o image.tar\` writes (or that .tar compressed with gzip, zstd, xz or bzip2).`;
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
  // A compressed archive would have to be read whole to find its manifest: it is uploaded,
  // and the server reads the id as it decompresses it.
  if (await compressionOf(f)) return null;
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

// ----- the job's input: a folder, made into a tar here, or a .tar -------------------------------

function setInput(blob, ...what) {
  if (blob && blob.size > MAX_INPUT) {
    alertIn(inputError, "error", `This input is ${fmtBytes(blob.size)} as a tar; the largest this cluster takes is ${fmtBytes(MAX_INPUT)}.`);
    inputFolder.value = "";
    inputTar.value = "";
    blob = null;
  }
  jobInput = blob && { blob, id: null };
  inputChosen.classList.remove("refused");
  inputChosen.hidden = !blob;
  if (blob) {
    clear(inputChosen, ...what, " ", el("button", {
      type: "button", class: "btn btn-small", id: "input-clear",
      onclick: () => { inputFolder.value = ""; inputTar.value = ""; setInput(null); inputFolder.focus(); },
    }, "Remove"));
  }
}

inputFolder.addEventListener("change", () => {
  clear(inputError);
  inputTar.value = "";
  const files = [...inputFolder.files];
  if (!files.length) {
    setInput(null);
    return;
  }
  const tar = folderTar(files);
  setInput(tar.blob, el("strong", {}, `${files[0].webkitRelativePath.split("/")[0]}/`),
    ` · ${tar.files} file${tar.files === 1 ? "" : "s"}, ${fmtBytes(tar.bytes)} · at /in in the container`);
});

inputTar.addEventListener("change", async () => {
  clear(inputError);
  inputFolder.value = "";
  setInput(null);
  const f = inputTar.files[0];
  if (!f) return;
  const problem = await notATar(f);
  if (problem) {
    inputTar.value = "";
    alertIn(inputError, "error", `${problem} Pick a plain .tar of the input's files, or the folder itself.`);
    return;
  }
  setInput(f, el("strong", {}, f.name), ` · ${fmtBytes(f.size)} · its files at /in in the container`);
});

function busy(on) {
  submitBtn.disabled = on;
  cancelBtn.hidden = !on;
  for (const field of form.querySelectorAll("input, select, textarea, #input-clear")) field.disabled = on;
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
  if (data.get("notify")) spec.notify = true;
  const webhook = String(data.get("webhook") || "").trim();
  if (webhook) spec.webhook = webhook;
  const retries = Number(data.get("retry_lost") || 0);
  if (!Number.isInteger(retries) || retries < 0 || retries > 10) throw new Error("Retries if lost must be a whole number from 0 to 10.");
  if (retries) spec.retry_lost = retries;
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
  const output = data.get("output") || "full";
  if (output === "path") {
    const dir = String(data.get("output_dir") || "").trim();
    if (!/^\/[A-Za-z0-9_.@+\/-]+$/.test(dir)) throw new Error("The output directory must be an absolute path such as /out.");
    p.set("output", `path:${dir}`);
  } else {
    p.set("output", output);
  }
  p.set("name", (data.get("name") || "").trim() || file.name.replace(/\.tar$/i, ""));
  const priority = Number(data.get("priority") || 0);
  if (priority) p.set("priority", String(priority));
  const userPriority = Number(data.get("user_priority") || 0);
  if (userPriority) p.set("user_priority", String(userPriority));
  const array = String(data.get("array") || "").trim();
  if (array) {
    if (!/^[\d,\s-]+(%\d+)?$/.test(array)) throw new Error("Job array: give indexes like 0-99, 1,3,5-7, with %N at the end to run at most N at once.");
    p.set("array", array);  // the server says exactly what is wrong with a range
  }
  return { query: p, spec: jobSpec(data) };
}

function showProgress(what, loaded, total, started, samples) {
  const now = performance.now();
  samples.push([now, loaded]);
  while (samples.length > 2 && now - samples[0][0] > 3000) samples.shift();  // last ~3 s
  const [t0, b0] = samples[0];
  const rate = now > t0 ? ((loaded - b0) * 1000) / (now - t0) : 0;
  const percent = total ? Math.floor((loaded * 100) / total) : 0;
  bar.value = percent;
  pct.textContent = `${percent}%`;
  const eta = rate > 0 ? fmtDuration((total - loaded) / rate) : "…";
  const prefix = what === "input" ? "Input: " : "";
  label.textContent = prefix + (loaded >= total
    ? `${fmtBytes(total)} sent in ${fmtDuration((now - started) / 1000)}. The server is checking the archive…`
    : `${fmtBytes(loaded)} of ${fmtBytes(total)} · ${fmtBytes(rate)}/s · ${eta} left`);
  form.dispatchEvent(new CustomEvent("upload-progress", { detail: { what, loaded, total, rate } }));
}

/** POST ``body`` (the image or the input) with XMLHttpRequest, for its upload progress; resolves
 * to {status, data, seconds}, rejects with an Error named "network" or "abort". */
function post(path, query, body, headers, what) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const samples = [];
    bar.value = 0;
    pct.textContent = "0%";
    xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1${path}?${query}`);
    xhr.setRequestHeader("X-CSRF-Token", CSRF);
    xhr.setRequestHeader("Content-Type", "application/x-tar");
    xhr.setRequestHeader("Accept", "application/json");
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => showProgress(what, e.loaded, e.lengthComputable ? e.total : body.size, started, samples));
    xhr.addEventListener("load", () => resolve({ status: xhr.status, data: xhr.response || {}, seconds: (performance.now() - started) / 1000 }));
    for (const kind of ["error", "abort"]) {
      xhr.addEventListener(kind, () => reject(Object.assign(new Error(kind), { name: kind === "error" ? "network" : "abort" })));
    }
    xhr.send(body);  // null: an empty body
  });
}

/** The input on a worker where the job fits (next to its image when one holds it): sent unless
 * this page sent it before and a worker still holds it. Returns {status, data, sent}. */
async function sendInput(query, spec) {
  const placement = new URLSearchParams({ gpus: query.get("gpus") });
  if (spec.data) placement.set("data", spec.data.join(","));
  for (const key of ["cpus", "memory"]) if (spec[key] !== undefined) placement.set(key, String(spec[key]));
  if (heldImage) placement.set("image", heldImage);
  if (jobInput.id) {
    try {
      const { workers } = await api(`/inputs/${encodeURIComponent(jobInput.id)}?${placement}`);
      if (workers.length) return { status: 200, data: { input: jobInput.id }, sent: 0 };
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;  // the server cannot tell: send it again
    }
  }
  label.textContent = `Starting the upload of the input (${fmtBytes(jobInput.blob.size)})…`;
  const answer = await post("/inputs", placement, jobInput.blob, {}, "input");
  if (answer.status === 201 || answer.status === 200) jobInput.id = answer.data.input;
  return { ...answer, sent: jobInput.blob.size };
}

/** The job: the tarball, or nothing when a worker holds the image (and the image after all when
 * it no longer does: 409). */
async function sendJob(query, spec) {
  const headers = Object.keys(spec).length ? { [SPEC_HEADER]: specHeader(spec) } : {};
  for (;;) {
    const held = heldImage;
    if (held) query.set("image", held);
    else query.delete("image");
    label.textContent = held ? "The worker has the image already: nothing to upload." : `Starting the upload of ${fmtBytes(file.size)}…`;
    // An empty body + image= is the zero-byte path (docs/api.md).
    const answer = await post("/jobs", query, held ? null : file, headers, "image");
    if (answer.status !== 409 || !held) return { ...answer, held };
    heldImage = null;  // the worker no longer has the image after all: send the file
    submitBtn.textContent = "Upload and submit";
    document.getElementById("image-held")?.remove();
  }
}

function refused(answer, title, what) {
  box.hidden = true;
  if (answer.status === 401) {
    alertIn(result, "error", "Your session has ended. ", el("a", { href: "/login?next=/submit" }, "Log in again"), " and resubmit.");
    return;
  }
  for (const node of [chosen, inputChosen]) node.classList.toggle("refused", node === what);
  alertIn(result, "error", title + (answer.data.error || `The server refused it (${answer.status}).`));
}

form.addEventListener("submit", async (ev) => {
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
  box.hidden = false;
  busy(true);
  try {
    let inputNote = "";
    if (jobInput) {
      const sent = await sendInput(query, spec);
      if (sent.status !== 201 && sent.status !== 200) {
        refused(sent, "The input was refused: ", inputChosen);
        return;
      }
      query.set("input", sent.data.input);
      inputNote = sent.sent ? `Input: ${fmtBytes(sent.sent)} sent. ` : "Input: already on the worker, nothing sent. ";
    }
    const answer = await sendJob(query, spec);
    if (answer.status !== 201 && answer.status !== 200) {
      // Without a spec or an input a 400 is about the archive; with them it may be about either (it says which).
      const fileRefused = answer.status === 400 && !Object.keys(spec).length && !jobInput;
      refused(answer, fileRefused ? "The file was refused: " : "Not submitted: ", fileRefused ? chosen : null);
      return;
    }
    const job = answer.data.job;
    box.hidden = true;
    const how = answer.held
      ? "(the worker had the image: nothing was uploaded). "
      : `(${fmtBytes(file.size)} in ${fmtDuration(answer.seconds)}, ${fmtBytes(file.size / Math.max(answer.seconds, 0.001))}/s). `;
    const made = answer.data.array;
    if (made) {
      alertIn(result, "ok", `Array ${job.name || made.id} of ${made.size} jobs is queued `, how, inputNote,
        el("a", { href: `/arrays/${encodeURIComponent(made.id)}`, id: "new-array-link" }, "Open the array"));
    } else {
      alertIn(result, "ok", `Job ${job.name || job.id} is ${job.state.toLowerCase()} on ${job.worker} `, how, inputNote,
        el("a", { href: `/jobs/${encodeURIComponent(job.id)}`, id: "new-job-link" }, "Open the job"));
    }
    form.dispatchEvent(new CustomEvent("upload-done", { detail: { job } }));
  } catch (e) {
    box.hidden = true;
    if (e.name === "abort") alertIn(result, "info", "Upload cancelled. Nothing was submitted.");
    else if (e.name === "network") alertIn(result, "error", "The upload broke off (network error or the server went away). Nothing was submitted; try again.");
    else alertIn(result, "error", `Not submitted: ${e.message}`);
  } finally {
    busy(false);
  }
});

cancelBtn.addEventListener("click", () => { if (xhr) xhr.abort(); });
loadDatasets();
