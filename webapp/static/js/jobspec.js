// What a job runs with, as the submit page reads it from its fields and the job page shows it.
// The page sends it as the Pink-Job-Spec header, a JSON object (docs/api.md), as the CLI does;
// the server checks every field and answers 400 naming a wrong one.

export const SPEC_HEADER = "Pink-Job-Spec";

/** A command line split into words as the CLI's Python shlex.split does it: whitespace
 * separates; '...' keeps everything; "..." keeps all but \" and \\; \x outside quotes is x. */
export function shellSplit(line) {
  const words = [];
  let word = null;  // null between words, so '' makes an empty word
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") quote = ""; else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = "";
      else if (c === "\\" && (line[i + 1] === '"' || line[i + 1] === "\\")) word += line[++i];
      else word += c;
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word ??= "";
      if (c === "'" || c === '"') quote = c;
      else if (c === "\\") {
        if (i + 1 >= line.length) throw new Error("The command ends with a lone backslash.");
        word += line[++i];
      } else word += c;
    }
  }
  if (quote) throw new Error(`The command has a ${quote} quote that is not closed.`);
  if (word !== null) words.push(word);
  return words;
}

/** Words back into one line a shell (and shellSplit) reads as the same words. */
export function shellJoin(words) {
  return words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replaceAll("'", "'\"'\"'")}'`)).join(" ");
}

/** KEY=VALUE lines (docker's --env-file format: # comments and blank lines are skipped; the
 * value is taken as written) → {KEY: VALUE}. */
export function parseEnv(text) {
  const env = {};
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "").trimStart();
    if (!line || line.startsWith("#")) return;
    const at = line.indexOf("=");
    const name = at < 0 ? line : line.slice(0, at);
    if (at < 1 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new Error(`Environment, line ${i + 1}: write NAME=VALUE, the name of letters, digits and _.`);
    }
    if (name.startsWith("PINK_")) throw new Error(`Environment, line ${i + 1}: PINK sets the PINK_* variables itself.`);
    env[name] = line.slice(at + 1);
  });
  return env;
}

/** The header's value: JSON with every non-ASCII character escaped (headers are bytes). */
export function specHeader(spec) {
  return JSON.stringify(spec).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
