"""OpenAPI 3 document of the JSON API (served at /api/v1/openapi.json)."""

_JOB = {"$ref": "#/components/schemas/Job"}
_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(schema: dict, description: str = "ok") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, where: str = "query", kind: str = "string", required: bool = False, text: str = "") -> dict:
    return {"name": name, "in": where, "required": required, "schema": {"type": kind}, "description": text}


_ID = _param("job_id", "path", required=True)
_ARRAY_ID = _param("array_id", "path", required=True)
_ARRAY = {"$ref": "#/components/schemas/Array"}
_ARRAY_TEXT = ("a job array: indexes (0-99, 1,3,5-7), optionally %N at the end: at most N of its jobs at once "
               "(at most web.max_array_size jobs); each job gets PINK_ARRAY_ID, PINK_ARRAY_INDEX, PINK_ARRAY_SIZE")
_SHA256 = "^sha256:[0-9a-f]{64}$"


def _id_param(name: str) -> dict:
    """An image or input id in the path: sha256:<64 hex digits> (400 otherwise)."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": _SHA256}}

_ARGV = {"type": "array", "items": {"type": "string"}, "maxItems": 1024}
_OUTPUT = {"type": "string", "pattern": "^(full|changes|none|path:/.+)$",
           "description": "full (the container's filesystem, default) | changes (what the job added or changed, "
                          "plus .pink-deleted listing what it deleted) | path:/DIR (DIR alone, empty and writable "
                          "for the job; not /, /in, /data or a system directory) | none"}
_SIZE = {"oneOf": [{"type": "integer"}, {"type": "string"}],
         "description": 'bytes, or docker\'s syntax: "512m", "16g" (b/k/m/g/t, powers of 1024)'}

_USAGE = {"type": "object", "properties": {
    "day": {"type": "string", "description": "YYYY-MM-DD; empty in sums over days"},
    "user": {"type": "string", "description": "empty in sums over users"},
    "jobs": {"type": "integer"},
    "states": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "jobs by end state"},
    "gpu_seconds": {"type": "number"},
    "cpu_seconds": {"type": "number", "description": "the job's CPUs (the worker's when unlimited) x run time"},
    "bytes_in": {"type": "integer", "description": "uploaded image + input size"},
    "bytes_out": {"type": "integer", "description": "output archive"}}}

SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "PINK API", "version": "1", "description": "Run docker images on GPU servers, at most once."},
    "servers": [{"url": "/api/v1"}],
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            # The browser UI; state-changing requests also need header X-CSRF-Token.
            "session": {"type": "apiKey", "in": "cookie", "name": "pink_session"},
        },
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "JobSpec": {
                "type": "object", "additionalProperties": False,
                "description": "What a job runs with: the Pink-Job-Spec header of POST /jobs (ASCII JSON, at most "
                               "32 KiB). Any field may be sent here; the scalars may instead be query parameters "
                               "(not both).",
                "properties": {
                    "command": {**_ARGV, "minItems": 1, "description": "argv replacing the image's CMD (no shell)"},
                    "entrypoint": {**_ARGV, "description": "argv replacing the image's ENTRYPOINT; [] clears it"},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 128,
                            "description": "names [A-Za-z_][A-Za-z0-9_]*, not PINK_*; values the owner's only"},
                    "workdir": {"type": "string", "maxLength": 4096, "description": "absolute path"},
                    "data": {"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"},
                             "maxItems": 32, "uniqueItems": True,
                             "description": "datasets, mounted read-only at /data/NAME (GET /datasets)"},
                    "cpus": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 4096},
                    "memory": {**_SIZE, "description": "memory limit, at least 6 MiB; " + _SIZE["description"]},
                    "shm_size": {**_SIZE, "description": "size of /dev/shm, at least 1 MiB; " + _SIZE["description"]},
                    "input": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$",
                              "description": "an input you uploaded (POST /inputs), mounted read-only at /in"},
                    "gpus": {"type": "integer"}, "timeout": {"type": "integer"}, "output": _OUTPUT,
                    "name": {"type": "string"}, "priority": {"type": "integer"},
                    "retry_lost": {"type": "integer", "minimum": 0, "maximum": 10,
                                   "description": "re-run the job up to N times if it ends LOST"},
                    "notify": {"type": "boolean", "description": "e-mail its end to your address (PATCH /me)"},
                    "webhook": {"type": "string", "maxLength": 2000,
                                "description": "POST its end here (a URL on the operator's notify.webhook_allow)"},
                    "array": {"type": "string", "description": _ARRAY_TEXT},
                    "array_args": {"type": "array", "items": {**_ARGV, "minItems": 1}, "minItems": 1,
                                   "description": "a job array, one job per argv (its command), indexes 0..N-1; "
                                                  "array may then only be %N"},
                },
            },
            "Array": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "user": {"type": "string"}, "name": {"type": "string"},
                    "size": {"type": "integer"}, "limit": {"type": "integer", "description": "0: no limit"},
                    "image_id": {"type": "string"}, "created_at": {"type": "number"},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"},
                               "description": "state -> how many of its jobs are in it"},
                    "ended": {"type": "boolean", "description": "every job has ended"},
                    "workers": {"type": "array", "items": {"type": "string"}},
                    "job_ids": {"type": "array", "items": {"type": "string"}, "description": "by index"},
                    "jobs": {"type": "array", "items": _JOB, "description": "GET /arrays/{array_id} only"},
                },
            },
            "Job": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "user": {"type": "string"}, "name": {"type": "string"},
                    "state": {"type": "string", "enum": ["UPLOADING", "QUEUED", "STARTING", "RUNNING", "EXPORTING",
                                                         "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST"]},
                    "worker": {"type": "string"}, "gpus": {"type": "integer"},
                    "gpu_indices": {"type": "array", "items": {"type": "integer"}},
                    "timeout_s": {"type": "integer"}, "output": {"type": "string"}, "priority": {"type": "integer"},
                    "image_id": {"type": "string"},
                    "image_bytes": {"type": "integer", "description": "bytes uploaded for this job (0: its worker "
                                                                      "held the image)"},
                    "image_size": {"type": "integer", "description": "the image's size (its layers, unpacked) as "
                                                                     "its worker counts it when the job starts"},
                    "created_at": {"type": "number"}, "updated_at": {"type": "number"},
                    "history": {"type": "array", "items": {"type": "object"}},
                    "exit_code": {"type": "integer", "nullable": True}, "reason": {"type": "string"},
                    "output_bytes": {"type": "integer"}, "output_sha256": {"type": "string"},
                    "output_entries": {"type": "array", "maxItems": 50, "description":
                                       "top entries of the archive (changes and path: modes), largest first",
                                       "items": {"type": "object", "properties": {
                                           "name": {"type": "string"}, "bytes": {"type": "integer"},
                                           "type": {"type": "string", "enum": ["file", "dir", "link", "deleted"]}}}},
                    "discard_output": {"type": "boolean", "description": "cancelled with discard=1: no archive"},
                    "log_bytes": {"type": "integer"}, "gpu_seconds": {"type": "number"},
                    "gpu_util_mean": {"type": "number", "nullable": True,
                                      "description": "GPU utilisation in percent, mean over the run's NVML samples"},
                    "gpu_util_max": {"type": "number", "nullable": True},
                    "gpu_mem_peak_bytes": {"type": "integer", "nullable": True,
                                           "description": "most memory one of its GPUs held"},
                    "started_at": {"type": "number", "nullable": True}, "finished_at": {"type": "number", "nullable": True},
                    "resubmit_of": {"type": "string"}, "queue_position": {"type": "integer", "nullable": True},
                    "waiting_reason": {"type": "string"},
                    "estimated_start_at": {"type": "number", "nullable": True, "description":
                                           "a queued job: when it starts at the latest if the jobs ahead of it "
                                           "use their full time limits (an upper bound under today's queue); null: "
                                           "not queued, or unknown (worker down or drained, waits for something no "
                                           "time limit frees)"},
                    "output_expires_at": {"type": "number", "nullable": True,
                                          "description": "when the worker deletes the archive and log (then: 410)"},
                    "command": {**_ARGV, "nullable": True, "description": "null: the image's CMD"},
                    "entrypoint": {**_ARGV, "nullable": True, "description": "null: the image's; []: none"},
                    "env": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": 'values to the job\'s owner only; "***" for anyone else'},
                    "workdir": {"type": "string", "description": "empty: the image's"},
                    "datasets": {"type": "array", "items": {"type": "string"}},
                    "input": {"type": "string", "description": "the input at /in (sha256:<hex>); empty: none"},
                    "cpus": {"type": "number", "description": "as placed; 0: no limit"},
                    "memory_bytes": {"type": "integer", "description": "as placed; 0: no limit"},
                    "shm_bytes": {"type": "integer", "description": "0: docker's 64 MiB"},
                    "retry_lost": {"type": "integer", "description": "retries left if it ends LOST"},
                    "retry_of": {"type": "string", "description": "the LOST job this one re-runs"},
                    "retried_by": {"type": "string", "description": "the job that re-ran this LOST one"},
                    "retry_note": {"type": "string", "description": "why a retry waits, or was given up"},
                    "retry_given_up": {"type": "boolean"},
                    "notify": {"type": "boolean"}, "webhook": {"type": "string"},
                    "notified_at": {"type": "number", "nullable": True,
                                    "description": "when its end was announced (e-mail, webhook)"},
                    "notify_note": {"type": "string", "description": "what failed announcing it"},
                    "accounted_at": {"type": "number", "nullable": True,
                                     "description": "when it was added to its user's usage rollup (GET /usage)"},
                    "array_id": {"type": "string", "description": "its job array; empty: none"},
                    "array_index": {"type": "integer", "nullable": True, "description": "PINK_ARRAY_INDEX"},
                    "array_size": {"type": "integer"},
                    "array_limit": {"type": "integer", "description": "most of the array's jobs at once; 0: no limit"},
                    "array_slot": {"type": "integer", "description": "the run slot it holds while claimed; -1: none"},
                },
            },
        },
    },
    "security": [{"bearer": []}, {"session": []}],
    "paths": {
        "/tokens": {
            "post": {"summary": "Log in: trade a user name and password for a bearer token", "security": [],
                     "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                         "username": {"type": "string"}, "password": {"type": "string"}, "name": {"type": "string"},
                         "days": {"type": "number", "description": "how long the token works (default web.token_days, "
                                                                   "at most web.token_max_days)"}}}}}},
                     "responses": {"201": _ok({"type": "object"}), "400": _ERR, "401": _ERR, "429": _ERR}},
            "get": {"summary": "List your tokens", "responses": {"200": _ok({"type": "object"})}},
        },
        "/tokens/{token_id}": {"delete": {"summary": "Revoke a token", "parameters": [_param("token_id", "path", required=True)],
                                          "responses": {"204": {"description": "revoked"}, "404": _ERR}}},
        "/me": {"get": {"summary": "Who am I, and my job-end e-mail setting",
                        "responses": {"200": _ok({"type": "object"}), "401": _ERR}},
                "patch": {"summary": "Set the address job-end e-mails go to, and whether every job sends one",
                          "requestBody": {"content": {"application/json": {"schema": {
                              "type": "object", "additionalProperties": False, "properties": {
                                  "email": {"type": "string", "description": '"" removes it'},
                                  "notify_all": {"type": "boolean"}}}}}},
                          "responses": {"200": _ok({"type": "object"}), "400": _ERR, "401": _ERR, "409": _ERR}}},
        "/jobs": {
            "post": {
                "summary": "Submit a job: the body is the raw `docker save` tarball, plain or gzip/zstd/xz/bzip2-compressed (or empty with image=)",
                "parameters": [
                    _param("gpus", kind="integer", text="GPUs (0 = CPU only)"),
                    _param("timeout", kind="integer", text="seconds before SIGTERM"),
                    _param("output", text=_OUTPUT["description"]), _param("name"), _param("priority", kind="integer"),
                    _param("image", text="sha256:<hex> of an image a worker already holds"),
                    _param("omitted_layers", text="comma-separated diff_ids of the bottom layers this "
                                                  "(thin) archive leaves out; see POST /layers"),
                    _param("cpus", kind="number", text="CPUs (default: the worker's share)"),
                    _param("memory", text="memory limit: bytes or 16g (default: the worker's share)"),
                    _param("shm_size", text="size of /dev/shm: bytes or 1g (default: docker's 64 MiB)"),
                    _param("workdir", text="working directory, an absolute path"),
                    _param("data", text="comma-separated datasets to mount at /data/NAME"),
                    _param("input", text="sha256:<hex> of an input you uploaded (POST /inputs), mounted at /in"),
                    _param("retry_lost", kind="integer", text="re-run the job up to N (0-10) times if it ends LOST"),
                    _param("notify", text="1: e-mail the job's end to your address (PATCH /me)"),
                    _param("webhook", text="POST the job's end (JSON) to this URL, on the operator's allow-list"),
                    _param("array", text=_ARRAY_TEXT),
                    _param("array_args", text="a job array: JSON list of argv lists, one job each"),
                    {"name": "Pink-Job-Spec", "in": "header", "required": False,
                     "description": "the job spec as JSON: command, entrypoint, env and any other field",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}},
                    _param("Idempotency-Key", "header", text="retries with the same key return the same job"),
                ],
                "requestBody": {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"201": _ok({"type": "object", "properties": {"job": _JOB, "array": _ARRAY},
                                          "description": "array: with array= or array_args= (job is its first)"}),
                              "200": _ok({"type": "object", "properties": {"job": _JOB, "array": _ARRAY}},
                                         "same Idempotency-Key"),
                              "400": _ERR, "401": _ERR, "409": _ERR, "411": _ERR, "413": _ERR, "429": _ERR, "503": _ERR},
            },
            "get": {"summary": "List your jobs, newest first, a page at a time (only the page is read)",
                    "parameters": [_param("state", text="only jobs in this state (filters the page)"),
                                   _param("limit", kind="integer", text="jobs per page, 1-1000 (default 200)"),
                                   _param("before", text="only jobs older than this job id: the `next` of the "
                                                         "previous page"),
                                   _param("all", text="1: everyone's (admins)")],
                    "responses": {"200": _ok({"type": "object", "properties": {
                        "jobs": {"type": "array", "items": _JOB},
                        "next": {"type": "string", "nullable": True,
                                 "description": "before= of the next (older) page; null: this was the last"}}}),
                        "400": _ERR}},
        },
        "/usage": {"get": {
            "summary": "Usage of the jobs that ended in a window (UTC days, by their end): yours; admins "
                       "anyone's (user=) or everyone's. From rollups that outlive job-record retention",
            "parameters": [_param("since", text="first day, YYYY-MM-DD (default 29 days ago)"),
                           _param("until", text="last day, YYYY-MM-DD (default today)"),
                           _param("user", text="only this user (others than yourself: admins)")],
            "responses": {"200": _ok({"type": "object", "properties": {
                "since": {"type": "string"}, "until": {"type": "string"},
                "rows": {"type": "array", "items": _USAGE, "description": "one per day and user"},
                "by_user": {"type": "array", "items": _USAGE}, "by_day": {"type": "array", "items": _USAGE},
                "total": _USAGE}}), "400": _ERR, "403": _ERR}}},
        "/arrays/{array_id}": {"get": {
            "summary": "A job array: its counts per state and its jobs", "parameters": [_ARRAY_ID],
            "responses": {"200": _ok({"type": "object", "properties": {"array": _ARRAY}}), "404": _ERR}}},
        "/arrays/{array_id}/cancel": {"post": {
            "summary": "Cancel every job of the array that has not ended (the waiting ones first)",
            "parameters": [_ARRAY_ID],
            "responses": {"200": _ok({"type": "object", "properties": {
                "array": _ARRAY, "cancelled": {"type": "array", "items": {"type": "string"}}}}),
                "404": _ERR, "503": _ERR}}},
        "/jobs/{job_id}": {
            "get": {"summary": "One job (410 once deleted, saying by whom and when)", "parameters": [_ID],
                    "responses": {"200": _ok({"type": "object", "properties": {"job": _JOB}}), "404": _ERR,
                                  "410": _ERR}},
            "delete": {"summary": "Delete an ended job (the owner or an admin): its record now, its archive and log "
                                  "on the worker soon after; reads of it then answer 410",
                       "parameters": [_ID],
                       "responses": {"200": _ok({"type": "object", "properties": {"deleted": {
                           "type": "object", "properties": {
                               "id": {"type": "string"}, "user": {"type": "string"}, "by": {"type": "string"},
                               "at": {"type": "number"}, "worker": {"type": "string"}}}}}),
                           "404": _ERR, "409": {**_ERR, "description": "the job has not ended: cancel it first"},
                           "410": _ERR}},
        },
        "/jobs/{job_id}/cancel": {"post": {
            "summary": "Cancel a job. A running job is stopped by its worker, which exports what it wrote "
                       "(state EXPORTING, then CANCELLED with the archive) unless discard=1",
            "parameters": [_ID, _param("discard", text="1: keep nothing the job wrote (it ends CANCELLED at once)")],
            "responses": {"200": _ok({"type": "object", "properties": {"job": _JOB}}), "400": _ERR, "404": _ERR,
                          "409": _ERR, "410": _ERR}}},
        "/jobs/{job_id}/logs": {"get": {"summary": "The container's log", "parameters": [
            _ID, _param("offset", kind="integer"), _param("follow", text="1: stream until the job ends")],
            "responses": {"200": {"description": "log text", "content": {"text/plain": {}}}, "400": _ERR,
                          "404": _ERR, "410": _ERR}}},
        "/jobs/{job_id}/output": {"get": {"summary": "Download the output archive (zstd tar); Range supported",
                                          "parameters": [_ID, _param("Range", "header")],
                                          "responses": {"200": {"description": "archive"}, "206": {"description": "part"},
                                                        "404": _ERR, "409": _ERR, "410": _ERR,
                                                        "416": {"description": "bad range"}}}},
        "/images/{image_id}": {"get": {"summary": "Which workers hold an image", "parameters": [_id_param("image_id")],
                                       "responses": {"200": _ok({"type": "object", "properties": {
                                           "image": {"type": "string"},
                                           "workers": {"type": "array", "items": {"type": "string"}}}}),
                                           "400": _ERR}}},
        "/layers": {"post": {
            "summary": "How many bottom layers of an image each worker holds that you may leave out of an upload",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["diff_ids"], "properties": {
                    "diff_ids": {"type": "array", "maxItems": 500, "items": {"type": "string", "pattern": _SHA256},
                                 "description": "the image's layer diff_ids, bottom first"}}}}}},
            "responses": {"200": _ok({"type": "object", "properties": {"workers": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"}, "layers": {"type": "integer"}}}}}}),
                "400": _ERR}}},
        "/inputs": {"post": {
            "summary": "Upload a job's input, a plain tar (read-only at /in), to the worker a job with these "
                       "placement parameters would go to; the query parameters and Pink-Job-Spec header of "
                       "POST /jobs are taken (gpus, data, cpus, memory and image matter)",
            "parameters": [_param("sha256", text="sha256:<hex>: the input's id as the client computed it (a "
                                                 "mismatch is a 400)"),
                           _param("gpus", kind="integer"), _param("data"), _param("cpus", kind="number"),
                           _param("memory"), _param("image", text="prefer the worker holding this image")],
            "requestBody": {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"201": _ok({"type": "object", "properties": {
                "input": {"type": "string"}, "worker": {"type": "string"}, "bytes": {"type": "integer"}}}),
                "400": _ERR, "401": _ERR, "411": _ERR, "413": _ERR, "503": _ERR}}},
        "/inputs/{input_id}": {"get": {
            "summary": "Which workers in service hold an input you uploaded (then a job with it sends nothing)",
            "parameters": [_id_param("input_id")],
            "responses": {"200": _ok({"type": "object", "properties": {
                "input": {"type": "string"}, "workers": {"type": "array", "items": {"type": "string"}}}}),
                "400": _ERR}}},
        "/workers": {"get": {"summary": "Workers, GPUs and load", "responses": {"200": _ok({"type": "object"})}}},
        "/datasets": {"get": {
            "summary": "The datasets jobs may ask for, with the workers that have each",
            "responses": {"200": _ok({"type": "object", "properties": {"datasets": {"type": "array", "items": {
                "type": "object", "properties": {
                    "name": {"type": "string"}, "workers": {"type": "array", "items": {"type": "string"}},
                    "available": {"type": "boolean", "description": "an alive, undrained worker has it"}}}}}})}}},
        "/workers/{name}/drain": {"post": {"summary": "Drain (or ?undo=1 undrain) a worker (admins)",
                                           "parameters": [_param("name", "path", required=True), _param("undo")],
                                           "responses": {"200": _ok({"type": "object"}), "403": _ERR}}},
        "/workers/{name}/gpus/{index}/quarantine": {
            "post": {"summary": "Quarantine one GPU of a worker (admins): it gets no new jobs; jobs on it run on",
                     "parameters": [_param("name", "path", required=True),
                                    _param("index", "path", kind="integer", required=True)],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["reason"], "properties": {
                             "reason": {"type": "string", "minLength": 1, "maxLength": 500}}}}}},
                     "responses": {"200": _ok({"type": "object"}), "400": _ERR, "403": _ERR, "404": _ERR}},
            "delete": {"summary": "Release an admin's quarantine of one GPU (admins); released: false when there was none",
                       "parameters": [_param("name", "path", required=True),
                                      _param("index", "path", kind="integer", required=True)],
                       "responses": {"200": _ok({"type": "object"}), "403": _ERR, "404": _ERR}}},
        "/workers/{name}/slots": {
            "put": {"summary": "Set a worker's job slots live (admins): it runs at most this many jobs at once, "
                               "instead of its configured max_parallel_jobs, until reset; running jobs go on",
                    "parameters": [_param("name", "path", required=True)],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["slots"], "properties": {
                            "slots": {"type": "integer", "minimum": 1, "maximum": 256}}}}}},
                    "responses": {"200": _ok({"type": "object", "properties": {
                        "worker": {"type": "string"}, "slots": {"type": "integer"},
                        "configured": {"type": "integer", "nullable": True}, "by": {"type": "string"}}}),
                        "400": _ERR, "403": _ERR, "404": _ERR}},
            "delete": {"summary": "Reset a worker's job slots to its configured max_parallel_jobs (admins); "
                                  "reset: false when none was set",
                       "parameters": [_param("name", "path", required=True)],
                       "responses": {"200": _ok({"type": "object", "properties": {
                           "worker": {"type": "string"}, "slots": {"type": "integer", "nullable": True},
                           "configured": {"type": "integer", "nullable": True}, "reset": {"type": "boolean"}}}),
                           "403": _ERR, "404": _ERR}}},
        "/jobs/{job_id}/resubmit": {"post": {
            "summary": "Run an ended job again as a new job (resubmit_of) from the image a worker holds, with what "
                       "it ran with but the fields the optional body changes (non-admins may not raise priority "
                       "above 0)",
            "parameters": [_ID, _param("Idempotency-Key", "header")],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/JobSpec"}}}},
            "responses": {"201": _ok({"type": "object", "properties": {"job": _JOB}}),
                          "200": _ok({"type": "object", "properties": {"job": _JOB}}, "same Idempotency-Key"),
                          "400": _ERR, "403": _ERR, "404": _ERR, "409": _ERR, "410": _ERR, "503": _ERR}}},
        "/events": {"get": {
            "summary": "Server-sent events: `jobs` ({jobs: [...]}) when your jobs change, or `job` with ?job=ID",
            "parameters": [_param("job", text="one job's events only"), _param("all", text="1: everyone's (admins)"),
                           _param("limit", kind="integer")],
            "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {}}}, "400": _ERR,
                          "404": _ERR}}},
        "/me/password": {"post": {
            "summary": "Change your password (other browser sessions end; with revoke_tokens, your tokens too)",
            "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                "old_password": {"type": "string"}, "new_password": {"type": "string", "minLength": 8},
                "revoke_tokens": {"type": "boolean"}}}}}},
            "responses": {"200": _ok({"type": "object"}), "400": _ERR, "403": _ERR}}},
        "/users": {
            "get": {"summary": "List users (admins)",
                    "responses": {"200": _ok({"type": "object"}), "403": _ERR}},
            "post": {"summary": "Create a user (admins)",
                     "requestBody": {"content": {"application/json": {"schema": {
                         "type": "object", "required": ["username", "password"], "properties": {
                             "username": {"type": "string", "pattern": "^[a-z_][a-z0-9_.-]{0,31}$"},
                             "password": {"type": "string", "minLength": 8}, "admin": {"type": "boolean"}}}}}},
                     "responses": {"201": _ok({"type": "object"}), "400": _ERR, "403": _ERR, "409": _ERR}},
        },
        "/users/{name}": {
            "patch": {"summary": "Disable or enable a user (admins): disabling ends their sessions and stops their tokens",
                      "parameters": [_param("name", "path", required=True)],
                      "requestBody": {"content": {"application/json": {"schema": {
                          "type": "object", "properties": {"disabled": {"type": "boolean"}}, "required": ["disabled"]}}}},
                      "responses": {"200": _ok({"type": "object"}), "400": _ERR, "403": _ERR, "404": _ERR, "409": _ERR}},
            "delete": {"summary": "Delete a user with their tokens and sessions; their jobs stay (admins)",
                       "parameters": [_param("name", "path", required=True)],
                       "responses": {"204": {"description": "deleted"}, "403": _ERR, "404": _ERR, "409": _ERR}},
        },
        "/users/{name}/tokens": {"get": {"summary": "A user's tokens (admins)",
                                         "parameters": [_param("name", "path", required=True)],
                                         "responses": {"200": _ok({"type": "object"}), "403": _ERR, "404": _ERR}}},
        "/users/{name}/tokens/{token_id}": {"delete": {
            "summary": "Revoke a user's token (admins)",
            "parameters": [_param("name", "path", required=True), _param("token_id", "path", required=True)],
            "responses": {"204": {"description": "revoked"}, "403": _ERR, "404": _ERR}}},
    },
}

_UNSAFE = ("post", "put", "patch", "delete")
_CSRF = {**_ERR, "description": "a browser session without its X-CSRF-Token (or an operation not allowed)"}


def _complete(spec: dict) -> dict:
    """The answers any operation may give, added to each: 401 without a valid token or session,
    403 to a session's state-changing request without its CSRF token, 413 for a body over
    web.max_body_bytes (app-wide), 503 while etcd is unavailable; and HEAD of the output."""
    for ops in spec["paths"].values():
        for method, op in list(ops.items()):
            responses = op["responses"]
            if op.get("security") != []:
                responses.setdefault("401", _ERR)
                if method in _UNSAFE:
                    responses.setdefault("403", _CSRF)
            if method in _UNSAFE or "requestBody" in op:
                responses.setdefault("413", _ERR)
            responses.setdefault("503", _ERR)
    output = spec["paths"]["/jobs/{job_id}/output"]
    output["head"] = {**output["get"], "summary": "The output archive's headers (size, X-Pink-Sha256)"}
    return spec


_complete(SPEC)
