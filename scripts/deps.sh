#!/usr/bin/env bash
# Installs what migsight's tests, lab and demo need, when it is missing, on
# Debian 12 (bookworm). Needs root (or sudo); elsewhere it says what is
# missing and exits non-zero.
#
# Two QEMU releases, because operators run both ends of the range:
#   - QEMU 10.x system-wide, from Debian's bookworm-backports suite (what
#     Debian 13 and Proxmox VE 9 ship): `qemu-system-x86_64` on PATH;
#   - QEMU 7.2 (Debian 12's own) unpacked from its Debian packages into
#     ${MIGSIGHT_CACHE:-~/.cache/migsight}/qemu-7.2, run through the wrapper
#     qemu-7.2/bin/qemu-system-x86_64 (it passes -L for 7.2's firmware).
#     Point MIGSIGHT_QEMU at that wrapper to make the lab or the demo use 7.2;
#     the tests find it there (or at $MIGSIGHT_QEMU_7_2).
#
#   bash scripts/deps.sh            # both QEMUs and the lab's packages
#   bash scripts/deps.sh --print-qemu-7.2   # the wrapper's path, for scripts
set -euo pipefail

CACHE=${MIGSIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/migsight}
Q72=$CACHE/qemu-7.2
if [ "${1:-}" = "--print-qemu-7.2" ]; then
    echo "$Q72/bin/qemu-system-x86_64"
    exit 0
fi

log() { echo "deps: $*" >&2; }
die() { echo "deps: ERROR: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="MISSING"; fi
fi
as_root() {
    [ "$SUDO" = MISSING ] && die "need root for: $* (run as root, or install sudo)"
    $SUDO "$@"
}
export DEBIAN_FRONTEND=noninteractive
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

apt_updated=0
apt_update() {
    if [ $apt_updated = 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
}

# ------------------------------------------------------------ lab packages --
need=()
for p in busybox-static cpio lz4 gzip xz-utils redis-server redis-tools memcached sqlite3 iproute2 systemd; do
    have "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_update
    as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian starts the daemons on install; the guest carries its own copies.
    for s in redis-server memcached; do
        as_root systemctl disable --now "$s" >/dev/null 2>&1 || true
    done
fi

# ---------------------------------------------------------------- QEMU 10 --
BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding Debian's bookworm-backports suite ($BACKPORTS)"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
        as_root tee "$BACKPORTS" >/dev/null
    apt_updated=0
fi
case "$(version_of qemu-system-x86)" in
    1:10.*) ;;
    *)
        log "installing QEMU 10 (qemu-system-x86 from bookworm-backports)"
        apt_update
        as_root apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null ||
            die "could not install qemu-system-x86 from bookworm-backports"
        ;;
esac
case "$(qemu-system-x86_64 --version 2>/dev/null | head -n1)" in
    *"version 10."*) ;;
    *) die "qemu-system-x86_64 is not QEMU 10 after installing: $(qemu-system-x86_64 --version 2>&1 | head -n1)" ;;
esac

# --------------------------------------------------------------- QEMU 7.2 --
if ! "$Q72/bin/qemu-system-x86_64" --version 2>/dev/null | grep -q "version 7\.2"; then
    log "unpacking QEMU 7.2 (Debian 12's packages) into $Q72"
    apt_update
    # The bookworm (not backports) versions, newest first.
    pick() { apt-cache madison "$1" | awk -F'|' '$3 ~ /bookworm(-security)?\/main/ && $2 ~ /1:7\.2/ {gsub(/ /,"",$2); print $2; exit}'; }
    V_X86=$(pick qemu-system-x86)
    V_COMMON=$(pick qemu-system-common)
    V_DATA=$(pick qemu-system-data)
    [ -n "$V_X86" ] && [ -n "$V_COMMON" ] && [ -n "$V_DATA" ] ||
        die "no QEMU 7.2 packages in the bookworm suite (apt-cache madison qemu-system-x86)"
    # Its shared libraries: the Depends of the 7.2 package, minus QEMU's own.
    deps=$(apt-cache show "qemu-system-x86=$V_X86" | awk -F': ' '/^Depends:/ {print $2; exit}' |
        tr ',' '\n' | sed -e 's/(.*)//' -e 's/|.*//' -e 's/ //g' | grep -v '^qemu-' | grep -v '^$' || true)
    missing=()
    for p in $deps; do have "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing QEMU 7.2's libraries: ${missing[*]}"
        as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -qq "qemu-system-x86=$V_X86" "qemu-system-common=$V_COMMON" "qemu-system-data=$V_DATA" 2>/dev/null) ||
        die "apt-get download of QEMU 7.2 ($V_X86) failed"
    rm -rf "$Q72.tmp"
    mkdir -p "$Q72.tmp/bin"
    for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$Q72.tmp/root"; done
    notfound=$(ldd "$Q72.tmp/root/usr/bin/qemu-system-x86_64" | grep "not found" || true)
    [ -z "$notfound" ] || die "QEMU 7.2 lacks libraries: $notfound"
    # seabios's bios-256k.bin is found through the second -L.
    cat >"$Q72.tmp/bin/qemu-system-x86_64" <<EOF
#!/bin/sh
# QEMU $V_X86 unpacked by migsight's scripts/deps.sh; its own firmware first.
exec "$Q72/root/usr/bin/qemu-system-x86_64" -L "$Q72/root/usr/share/qemu" -L /usr/share/seabios "\$@"
EOF
    chmod +x "$Q72.tmp/bin/qemu-system-x86_64"
    rm -rf "$Q72"
    mv "$Q72.tmp" "$Q72"
    "$Q72/bin/qemu-system-x86_64" --version | head -n1 | grep -q "version 7\.2" ||
        die "the unpacked QEMU 7.2 does not run: $("$Q72/bin/qemu-system-x86_64" --version 2>&1 | head -n3)"
fi

# ---------------------------------------------------------------- libvirt --
# For libvirt-managed VMs (`migsight plan/migrate libvirt:NAME`) and their
# end-to-end test, which runs two libvirt daemons of its own
# (scripts/libvirt/pair.sh): the daemon, virsh and the QEMU driver, from
# bookworm-backports like QEMU 10 (libvirt 11.x: multifd with zstd, and
# post-copy preemption). Only the daemon binary: no libvirt-daemon-system,
# so no system daemon, network or firewall is set up.
case "$(version_of libvirt-daemon-driver-qemu)" in
    1[1-9].*) ;;
    *)
        log "installing libvirt 11 (libvirt-daemon, libvirt-clients, libvirt-daemon-driver-qemu from bookworm-backports)"
        apt_update
        as_root apt-get install -y -qq --no-install-recommends -t bookworm-backports \
            libvirt-daemon libvirt-clients libvirt-daemon-driver-qemu >/dev/null ||
            die "could not install libvirt from bookworm-backports"
        ;;
esac
# The QEMU driver wants these even with user = "root" in qemu.conf; only
# libvirt-daemon-system would create them.
getent group kvm >/dev/null || as_root groupadd --system kvm
id libvirt-qemu >/dev/null 2>&1 ||
    as_root useradd --system --gid kvm --home-dir /var/lib/libvirt --no-create-home \
        --shell /usr/sbin/nologin libvirt-qemu
command -v unshare >/dev/null || die "unshare (util-linux) is missing"
