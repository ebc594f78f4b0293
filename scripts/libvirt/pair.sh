#!/usr/bin/env bash
# Two independent libvirt daemons on this host, so a guest can be
# live-migrated through libvirt without a second machine (tests, demo).
#
#   bash scripts/libvirt/pair.sh start BASE   # prints the two connection URIs
#   bash scripts/libvirt/pair.sh stop BASE    # destroys their guests, stops both, by PID
#
# A guest for them: migsight_libvirt::domain::GuestDomain (the tests and
# `migsight lab --via libvirt` define theirs with it).
#
# Each instance (BASE/a, BASE/b) has its own etc/run/lib/cache/log
# directories, bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt and /var/log/libvirt inside a private mount namespace
# (`unshare -m`), so neither touches the host's libvirt nor the other. What
# makes two daemons on one host migrate between each other:
#   - a distinct host_uuid each (libvirt refuses "migration to the same host"
#     when they match);
#   - disjoint migration port ranges;
#   - no security driver, no per-domain namespaces, no ownership changes, QEMU
#     as root, stdio to files (no virtlogd), so nothing else needs to run.
# Nothing here reaches outside BASE except the two daemons and their QEMUs;
# `stop` finds every one of them by the PID files under BASE.
set -euo pipefail

die() { echo "libvirt-pair: ERROR: $*" >&2; exit 1; }

uri_of() { echo "qemu+unix:///system?socket=$1/run/libvirt-sock"; }

start_one() {
    local dir=$1 ports=$2
    mkdir -p "$dir"/{etc,run,lib,cache,log}
    local uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$dir/etc/libvirtd.conf" <<CONF
unix_sock_dir = "$dir/run"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "$uuid"
log_outputs = "3:file:$dir/log/libvirtd.log"
CONF
    cat >"$dir/etc/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
stdio_handler = "file"
migration_port_min = ${ports%-*}
migration_port_max = ${ports#*-}
CONF
    # The daemon runs in its own mount namespace with the directories above
    # in place of the system's; libvirtd writes its PID file itself.
    rm -f "$dir/libvirtd.pid"
    setsid unshare -m --propagation private sh -c '
        d=$1
        mount --bind "$d/etc" /etc/libvirt 2>/dev/null || { mkdir -p /etc/libvirt && mount --bind "$d/etc" /etc/libvirt; }
        for p in run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt; do
            mkdir -p "${p#*:}" && mount --bind "$d/${p%%:*}" "${p#*:}"
        done
        exec libvirtd -f "$d/etc/libvirtd.conf" -p "$d/libvirtd.pid"
    ' sh "$dir" </dev/null >"$dir/log/stdout.log" 2>&1 &
    local t=0
    until [ -S "$dir/run/libvirt-sock" ] && [ -s "$dir/libvirtd.pid" ]; do
        sleep 0.2
        t=$((t + 1))
        if [ $t -gt 300 ]; then
            cat "$dir/log/stdout.log" >&2 || true
            die "libvirtd in $dir did not start within 60 s"
        fi
    done
    # The first connection probes QEMU's capabilities (a few seconds under TCG).
    virsh -q -c "$(uri_of "$dir")" version >/dev/null ||
        die "libvirtd in $dir does not answer: $(tail -n 20 "$dir/log/libvirtd.log" 2>/dev/null)"
}

stop_one() {
    local dir=$1 uri pid
    [ -d "$dir" ] || return 0
    uri=$(uri_of "$dir")
    if [ -S "$dir/run/libvirt-sock" ]; then
        for dom in $(timeout 20 virsh -q -c "$uri" list --all --name 2>/dev/null || true); do
            timeout 20 virsh -q -c "$uri" destroy "$dom" >/dev/null 2>&1 || true
            timeout 20 virsh -q -c "$uri" undefine "$dom" >/dev/null 2>&1 || true
        done
    fi
    # Any QEMU libvirt started here (destroy failed, or the daemon is gone).
    for f in "$dir"/run/qemu/*.pid; do
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q qemu-system; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [ -s "$dir/libvirtd.pid" ]; then
        pid=$(cat "$dir/libvirtd.pid")
        if [ -r "/proc/$pid/comm" ] && grep -q libvirtd "/proc/$pid/comm"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/libvirtd.pid"
    fi
}

case "${1:-}" in
start)
    base=${2:?usage: pair.sh start BASE}
    command -v libvirtd >/dev/null || die "libvirtd is not installed (bash scripts/deps.sh)"
    command -v virsh >/dev/null || die "virsh is not installed (bash scripts/deps.sh)"
    [ "$(id -u)" -eq 0 ] || die "needs root (mount namespaces, QEMU as root)"
    mkdir -p "$base"
    base=$(cd "$base" && pwd)
    # Clean up a half-started pair if one half fails.
    trap 'stop_one "$base/a"; stop_one "$base/b"' ERR
    start_one "$base/a" 49152-49215
    start_one "$base/b" 49216-49279
    trap - ERR
    echo "A=$(uri_of "$base/a")"
    echo "B=$(uri_of "$base/b")"
    ;;
stop)
    base=${2:?usage: pair.sh stop BASE}
    [ -d "$base" ] || exit 0
    base=$(cd "$base" && pwd)
    stop_one "$base/a"
    stop_one "$base/b"
    ;;
*)
    die "usage: pair.sh start BASE | stop BASE"
    ;;
esac
