#!/usr/bin/env bash
# Installs the Debian packages migsight's tests, lab and demo need, when they
# are missing. Needs root (or sudo) on Debian/Ubuntu; elsewhere it says what
# is missing and exits non-zero.
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in qemu-system-x86 busybox-static cpio lz4 gzip xz-utils redis-server redis-tools memcached sqlite3 iproute2 systemd; do
    have "$p" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "deps: installing ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "deps: missing packages (${need[*]}) and not root: install them with apt-get" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the daemons on install; the guest carries its own copies.
for s in redis-server memcached; do
    $SUDO systemctl disable --now "$s" >/dev/null 2>&1 || true
done
