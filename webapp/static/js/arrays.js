// Job arrays in the jobs list: each array's jobs folded into one row with its counts per state.

const ORDER = ["UPLOADING", "QUEUED", "STARTING", "RUNNING", "EXPORTING", "SUCCEEDED", "FAILED", "TIMED_OUT",
  "CANCELLED", "LOST"];

/** {RUNNING: 2, QUEUED: 5} -> "5 queued, 2 running", in the states' order. */
export function countsText(counts) {
  return ORDER.filter((s) => counts[s]).map((s) => `${counts[s]} ${s.replace("_", " ").toLowerCase()}`).join(", ");
}

/** Jobs (newest first) -> items: {job} for a single job, {array} for all listed jobs of an
 * array, where its newest job was: {id, name, user, size, limit, created_at, counts, jobs}. */
export function foldArrays(jobs) {
  const items = [];
  const arrays = new Map();
  for (const job of jobs) {
    if (!job.array_id) {
      items.push({ job });
      continue;
    }
    let array = arrays.get(job.array_id);
    if (!array) {
      array = { id: job.array_id, name: job.name, user: job.user, size: job.array_size, limit: job.array_limit,
        created_at: job.created_at, counts: {}, jobs: [] };
      arrays.set(job.array_id, array);
      items.push({ array });
    }
    array.counts[job.state] = (array.counts[job.state] || 0) + 1;
    array.created_at = Math.min(array.created_at, job.created_at);
    array.jobs.push(job);
  }
  return items;
}
