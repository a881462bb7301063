#!/usr/bin/env bash
# Install everything PINK needs on a fresh Debian 12 machine, as root. Safe to run again.
#
#   bash scripts/bootstrap.sh
#
# Debian packages (docker engine, etcd, OpenSSH, nginx, busybox for sample images, fast
# compressors), a running docker engine (started by hand where there is no systemd), and a
# Python virtual environment in .venv with the project installed in editable mode.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

PACKAGES=(
    docker.io etcd-server etcd-client openssh-server openssh-client nginx busybox-static
    zstd pigz openssl iproute2 procps python3-venv curl ca-certificates git tar chromium
    debootstrap prometheus
)

# Timings from bash's own clock (microseconds), so a bare machine needs no bc or python.
now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { local us=$(( $(now_us) - $1 )); printf '%d.%d' $((us / 1000000)) $(((us / 100000) % 10)); }
step_start=0
step() { step_start=$(now_us); echo "==> $*"; }
done_step() { echo "    done in $(secs "$step_start")s"; }
total_start=$(now_us)

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap.sh must run as root (it installs Debian packages and starts dockerd)" >&2
    exit 2
fi

# ---------------------------------------------------------------- Debian packages
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' own services (etcd on 2379, nginx on 80, sshd on 22, dockerd) from
    # starting on install: PINK runs its own instances on its own ports (prometheus: the metrics
    # tests start their own on a free port).
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    cleanup_policy() { if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi; }
    trap cleanup_policy EXIT
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    cleanup_policy
    trap - EXIT
    done_step
else
    echo "==> Debian packages: all ${#PACKAGES[@]} already installed"
fi

# Services the packages may have started on an earlier install (only through their own init
# scripts and pidfiles, so nothing else is touched).
for svc in etcd nginx; do
    if [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
        step "stop the $svc that its package started"
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        done_step
    fi
done

# ---------------------------------------------------------------- docker engine
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "==> docker engine: answering"
else
    step "start dockerd (log /var/log/dockerd.log)"
    # No systemd here: run the engine in its own session so it outlives this script.
    setsid /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 120); do
        if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then break; fi
        sleep 0.5
    done
    if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        echo "dockerd did not answer within 60s; last lines of /var/log/dockerd.log:" >&2
        tail -n 30 /var/log/dockerd.log >&2 || true
        exit 1
    fi
    done_step
fi

# ---------------------------------------------------------------- Python environment
if [ ! -x .venv/bin/python ]; then
    step "create .venv"
    python3 -m venv .venv
    done_step
fi
step "pip install -r requirements.txt"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
done_step
# Every command a distribution declares is in .venv/bin (an older pink declared pink-aio too,
# and reinstalling pink removes it although pink_dev provides it now).
commands_present() {  # DIST_INFO
    local name
    for name in $(sed -n '/^\[console_scripts\]/,/^\[/s/^\([A-Za-z0-9_.-]*\) *=.*/\1/p' "$1/entry_points.txt" 2>/dev/null); do
        [ -x ".venv/bin/$name" ] || return 1
    done
}
# An editable install only changes when its pyproject.toml does (new entry points).
editable_install() {  # DIST (as its .dist-info folder spells it) FOLDER WHAT-IT-BRINGS
    local dist=$1 folder=$2 what=$3 dist_info
    dist_info=$(ls -d .venv/lib/python3*/site-packages/"$dist"-*.dist-info 2>/dev/null | head -n 1 || true)
    if [ -n "$dist_info" ] && [ "$(cat "$dist_info/direct_url.json" 2>/dev/null | grep -c "file://$folder\"")" = 1 ] \
            && [ ! "$folder/pyproject.toml" -nt "$dist_info" ] && commands_present "$dist_info"; then
        echo "==> $dist already installed in .venv (editable, $folder)"
    else
        step "pip install -e $folder ($what)"
        .venv/bin/python -m pip install -q --disable-pip-version-check -e "$folder"
        done_step
    fi
}
editable_install pink "$ROOT" "pink, pink-admin, pink-ssh-gate, pink-worker"
# The dev cluster (pink-aio, the tests' and the bench's launchers): never installed on servers.
editable_install pink_dev "$ROOT/dev" "pink_dev, pink-aio"

echo "==> bootstrap finished in $(secs "$total_start")s ($ROOT)"
