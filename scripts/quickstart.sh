#!/usr/bin/env bash
# PINK in one command: install, start an all-in-one cluster, run a sample job, show its output.
#
#   bash scripts/quickstart.sh            (as root, on Debian 12)
#
# Everything lives in .aio/ (stop it with: .venv/bin/pink-aio down [--purge]).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
AIO_DIR=${PINK_AIO_DIR:-$ROOT/.aio}
HTTPS_PORT=${PINK_AIO_HTTPS_PORT:-8443}
PY=$ROOT/.venv/bin/python

now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { local us=$(( $(now_us) - $1 )); printf '%d.%d' $((us / 1000000)) $(((us / 100000) % 10)); }
t0=$(now_us)
if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
say() { printf '\n%s[%6ss] %s%s\n' "$BOLD" "$(secs "$t0")" "$*" "$PLAIN"; }
fail() { printf '\nquickstart FAILED: %s\n' "$*" >&2; exit 1; }

say "1/5 install what PINK needs (scripts/bootstrap.sh)"
bash scripts/bootstrap.sh

say "2/5 start the all-in-one cluster in $AIO_DIR"
"$PY" -m pink_dev.aio up --dir "$AIO_DIR" --https-port "$HTTPS_PORT" \
    || fail "pink-aio up did not finish; logs are in $AIO_DIR/*/*.log"
export PINK_CLI_CONFIG=$AIO_DIR/cli.json

say "3/5 build a sample image (busybox, no registry needed)"
SCRIPT='echo "hello from PINK job on $(uname -n)" > /out/result.txt
echo "sha256 of 1..100000: $(seq 1 100000 | sha256sum | cut -d" " -f1)" >> /out/result.txt
cat /out/result.txt'
SAMPLE=$AIO_DIR/sample.tar
"$PY" -m pink_dev.sampleimage --tag pink-quickstart:latest --script "$SCRIPT" --out "$SAMPLE" >/dev/null \
    || fail "could not build the sample image (is dockerd running? see /var/log/dockerd.log)"
echo "    $SAMPLE ($(du -h "$SAMPLE" | cut -f1))"

say "4/5 submit it and wait for the job to end (pink submit --wait)"
set +e
JOB_JSON=$("$ROOT/.venv/bin/pink" submit "$SAMPLE" --name quickstart --wait -o json)
rc=$?
set -e
JOB_ID=$(printf '%s' "$JOB_JSON" | "$PY" -c 'import json,sys
d = json.load(sys.stdin); j = d.get("job", d); print(j["id"])' 2>/dev/null || true)
STATE=$(printf '%s' "$JOB_JSON" | "$PY" -c 'import json,sys
d = json.load(sys.stdin); j = d.get("job", d); print(j["state"], j.get("reason") or "")' 2>/dev/null || true)
[ -n "$JOB_ID" ] || fail "pink submit exited with $rc and printed no job: $JOB_JSON"
echo "    job $JOB_ID: $STATE"
[ "$rc" -eq 0 ] || fail "job $JOB_ID did not succeed (pink exit $rc); see: $ROOT/.venv/bin/pink logs $JOB_ID"

say "5/5 download its output archive and read out/result.txt"
ARCHIVE=$AIO_DIR/out.tar.zst
rm -f "$ARCHIVE"
"$ROOT/.venv/bin/pink" download "$JOB_ID" -o "$ARCHIVE"
# The archive holds the container's filesystem; its members may or may not start with ./
MEMBER=$(tar --zstd -tf "$ARCHIVE" | grep -E '^(\./)?out/result\.txt$' | head -n 1 || true)
[ -n "$MEMBER" ] || fail "out/result.txt is not in $ARCHIVE"
echo "    $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)), $MEMBER says:"
echo
tar --zstd -xOf "$ARCHIVE" "$MEMBER" | sed 's/^/    | /'

say "done in $(secs "$t0")s. The cluster keeps running:"
echo "    export PINK_CLI_CONFIG=$PINK_CLI_CONFIG     # then: .venv/bin/pink ls"
echo "    web UI: https://127.0.0.1:$HTTPS_PORT/ (user demo, password in $AIO_DIR/demo-password)"
echo "    stop:   .venv/bin/pink-aio down --dir $AIO_DIR [--purge]"
