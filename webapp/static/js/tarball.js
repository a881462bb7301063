// A folder picked on the submit page as a tar archive, the job's input: a Blob of parts, the
// headers and the File objects themselves, so the browser reads the files only as it sends
// them. ustar headers, with PAX records for names that are long or not ASCII and for sizes
// from 8 GiB; the folder's contents at the top (the job sees them at /in), each folder before
// its contents and sorted by name as the CLI does; no owners (uid/gid 0, no names), files 0644,
// folders 0755 with the newest mtime of the files in them, so the same files give the same bytes.

const BLOCK = 512;
const RECORD = 10240;
const MAX_OCTAL_SIZE = 8 ** 11;  // what the 11 digits of a ustar size hold
const utf8 = new TextEncoder();

const padding = (size) => new Uint8Array((BLOCK - (size % BLOCK)) % BLOCK);

function octal(h, offset, width, n) {
  h.set(utf8.encode(n.toString(8).padStart(width - 1, "0") + "\0"), offset);
}

function ustar(name, type, size, mode, mtime) {
  const h = new Uint8Array(BLOCK);
  h.set(utf8.encode(name), 0);
  octal(h, 100, 8, mode);
  octal(h, 108, 8, 0);  // uid
  octal(h, 116, 8, 0);  // gid
  octal(h, 124, 12, size);
  octal(h, 136, 12, mtime);
  h[156] = type.charCodeAt(0);
  h.set(utf8.encode("ustar\u000000"), 257);  // magic and version
  octal(h, 329, 8, 0);  // device numbers
  octal(h, 337, 8, 0);
  h.fill(0x20, 148, 156);  // the checksum counts its own field as spaces
  const sum = h.reduce((a, b) => a + b, 0);
  h.set(utf8.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  return h;
}

/** "LEN key=value\n", LEN counting the whole record, its own digits included. */
function paxRecord(key, value) {
  const rest = utf8.encode(` ${key}=${value}\n`).length;
  let n = rest;
  while (n !== rest + String(n).length) n = rest + String(n).length;
  return `${n} ${key}=${value}\n`;
}

/** The parts of one member: a PAX header when needed, the ustar header, data, padding. */
function member(name, type, mode, mtime, file = null) {
  const size = file ? file.size : 0;
  let records = "";
  if (utf8.encode(name).length > 100 || /[^\x20-\x7e]/.test(name)) records += paxRecord("path", name);
  if (size >= MAX_OCTAL_SIZE) records += paxRecord("size", String(size));
  const parts = [];
  if (records) {
    const data = utf8.encode(records);
    parts.push(ustar("././@PaxHeader", "x", data.length, 0o644, mtime), data, padding(data.length));
    name = name.replace(/[^\x20-\x7e]/g, "?").slice(0, 100);
  }
  parts.push(ustar(name, type, size < MAX_OCTAL_SIZE ? size : 0, mode, mtime));
  if (file) parts.push(file, padding(size));
  return parts;
}

/** Compare paths as lists of names, each by its UTF-8 bytes: a folder sorts before its contents. */
function byNames(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    for (let j = 0; j < Math.min(x.length, y.length); j++) if (x[j] !== y[j]) return x[j] - y[j];
    if (x.length !== y.length) return x.length - y.length;
  }
  return a.length - b.length;
}

/** Files from <input type=file webkitdirectory> -> {blob, files, bytes}: the archive, how many
 * files and how many bytes of them it holds. */
export function folderTar(files) {
  const entries = new Map();  // path in the archive -> {file, mtime}
  for (const file of files) {
    const names = file.webkitRelativePath.split("/").slice(1);  // without the folder picked
    const mtime = Math.floor(file.lastModified / 1000);
    for (let i = 1; i < names.length; i++) {
      const dir = names.slice(0, i).join("/");
      const seen = entries.get(dir);
      entries.set(dir, { file: null, mtime: Math.max(mtime, seen ? seen.mtime : 0) });
    }
    entries.set(names.join("/"), { file, mtime });
  }
  const paths = [...entries.keys()]
    .map((path) => [path, path.split("/").map((n) => utf8.encode(n))])
    .sort((a, b) => byNames(a[1], b[1]));
  const parts = paths.flatMap(([path]) => {
    const { file, mtime } = entries.get(path);
    return file ? member(path, "0", 0o644, mtime, file) : member(`${path}/`, "5", 0o755, mtime);
  });
  const body = new Blob(parts);
  const end = 2 * BLOCK + ((RECORD - ((body.size + 2 * BLOCK) % RECORD)) % RECORD);
  return {
    blob: new Blob([body, new Uint8Array(end)], { type: "application/x-tar" }),
    files: files.length,
    bytes: [...files].reduce((n, f) => n + f.size, 0),
  };
}
