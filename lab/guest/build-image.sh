#!/usr/bin/env bash
# Builds the migsight lab guest image, reproducibly and idempotently:
#
#   ${MIGSIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/migsight}/guest/
#       vmlinuz             kernel (Debian linux-image-*-cloud-amd64, bzImage; for -M pc)
#       vmlinux             the same kernel, uncompressed ELF (for -M microvm)
#       initramfs.cpio.gz   busybox + /init + migsight-workload + real programs and their libraries
#       manifest.txt        sha256 of every output and initramfs member, versions, parameters
#       inputs.sha256       hash of all inputs; when it matches, the script does nothing
#
# Run as root on Debian 12 from anywhere in a checkout: lab/guest/build-image.sh
# Environment:
#   MIGSIGHT_CACHE          cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/migsight)
#   MIGSIGHT_KERNEL_PKG     kernel package to use (default: what linux-image-cloud-amd64 depends on)
#   MIGSIGHT_WORKLOAD_BIN   a prebuilt static migsight-workload (default: built here with cargo)
#   CARGO_TARGET_DIR        cargo target dir for the workload build (default <repo>/target)
#   MIGSIGHT_FORCE=1        rebuild even if up to date
# See lab/guest/README.md.
set -euo pipefail
umask 022
export LC_ALL=C
export DEBIAN_FRONTEND=noninteractive

log() { echo "build-image: $*" >&2; }
die() {
    echo "build-image: ERROR: $*" >&2
    exit 1
}
trap 'rc=$?; echo "build-image: ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2; exit $rc' ERR

SELF=$(readlink -f "${BASH_SOURCE[0]}")
GUEST_DIR=$(dirname "$SELF")
REPO=$(cd "$GUEST_DIR/../.." && pwd)
if [ -n "${MIGSIGHT_CACHE:-}" ]; then
    CACHE_ROOT=$MIGSIGHT_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    CACHE_ROOT=$XDG_CACHE_HOME/migsight
elif [ -n "${HOME:-}" ]; then
    CACHE_ROOT=$HOME/.cache/migsight
else
    CACHE_ROOT=/var/cache/migsight # as lab/src/guest.rs when HOME is unset
fi
OUT=$CACHE_ROOT/guest
DEBS=$CACHE_ROOT/debs
INIT_SRC=$GUEST_DIR/init
TARGET_TRIPLE=x86_64-unknown-linux-gnu
# Real programs run by the workload's driver modes, and the Debian packages
# the image needs on the build host.
PROGRAMS=(redis-server memcached sqlite3 xz gzip)
APT_PKGS=(busybox-static cpio lz4 gzip redis-server memcached sqlite3 xz-utils binutils libc6-dev)
# The 16-byte ops-page magic (see lab/workload/README.md); it must not appear
# verbatim anywhere in the initramfs. Written as a grep -P escape, not raw bytes.
MAGIC_RE='migsight-ops\xa7\x3c\x5e\x01'

[ "$(id -u)" = 0 ] || die "must run as root (installs apt packages, creates device nodes)"
for c in apt-get apt-cache dpkg-query dpkg-deb sha256sum flock ldd; do
    command -v "$c" >/dev/null || die "'$c' not found: this script needs a Debian system"
done
[ -f "$INIT_SRC" ] || die "missing $INIT_SRC"
[ -f "$REPO/lab/workload/Cargo.toml" ] || die "cannot find the repository root (looked in $REPO)"

mkdir -p "$OUT" "$DEBS"
exec 9>"$CACHE_ROOT/.guest.lock"
flock 9 || die "cannot lock $CACHE_ROOT/.guest.lock"

# ---------------------------------------------------------------- apt deps --
apt_updated=0
apt_update() {
    if [ $apt_updated = 0 ]; then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
}
missing=()
for p in "${APT_PKGS[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    # Do not start the redis/memcached services on the build host.
    policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    install_ok=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null && install_ok=1
    if [ $install_ok = 0 ]; then
        apt_update
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null && install_ok=1
    fi
    [ $policy_created = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ $install_ok = 1 ] || die "apt-get install ${missing[*]} failed"
fi
for c in busybox cpio gzip lz4 "${PROGRAMS[@]}"; do
    command -v "$c" >/dev/null || die "'$c' still not found after installing packages"
done
is_static() {
    local o
    o=$(ldd "$1" 2>&1 || true)
    grep -qE 'not a dynamic|statically linked' <<<"$o"
}
BUSYBOX=$(readlink -f "$(command -v busybox)")
is_static "$BUSYBOX" ||
    die "$BUSYBOX is not static: install busybox-static (it replaces busybox)"

# ------------------------------------------------------------------ kernel --
resolve_kernel() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ { print $2; exit }'
}
KPKG=${MIGSIGHT_KERNEL_PKG:-}
if [ -z "$KPKG" ]; then
    KPKG=$(resolve_kernel)
    if [ -z "$KPKG" ]; then
        apt_update
        KPKG=$(resolve_kernel)
    fi
    if [ -z "$KPKG" ]; then
        # No meta package: the newest concrete cloud kernel apt knows about.
        KPKG=$(apt-cache pkgnames linux-image- | grep -E '^linux-image-[0-9][^ ]*-cloud-amd64$' | sort -V | tail -n1 || true)
    fi
fi
[ -n "$KPKG" ] || die "no linux-image-*-cloud-amd64 package known to apt (check /etc/apt/sources.list)"
KVER=$(apt-cache policy "$KPKG" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
if [ -z "$KVER" ] || [ "$KVER" = "(none)" ]; then
    apt_update
    KVER=$(apt-cache policy "$KPKG" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
fi
[ -n "$KVER" ] && [ "$KVER" != "(none)" ] || die "apt has no candidate version of $KPKG"
KDEB=$DEBS/${KPKG}_${KVER//:/%3a}_amd64.deb

# -------------------------------------------------------- workload binary --
if [ -n "${MIGSIGHT_WORKLOAD_BIN:-}" ]; then
    WL_BIN=$(readlink -f "$MIGSIGHT_WORKLOAD_BIN")
    [ -x "$WL_BIN" ] || die "MIGSIGHT_WORKLOAD_BIN=$MIGSIGHT_WORKLOAD_BIN is not an executable"
else
    command -v cargo >/dev/null || die "cargo not found (install Rust via rustup, or set MIGSIGHT_WORKLOAD_BIN)"
    TDIR=${CARGO_TARGET_DIR:-$REPO/target}
    log "cargo build -p migsight-workload (static, --target $TARGET_TRIPLE, target dir $TDIR)"
    # --target keeps RUSTFLAGS away from build scripts and proc macros.
    # (libc6-dev provides the static glibc; CARGO_ENCODED_RUSTFLAGS would override RUSTFLAGS.)
    (cd "$REPO" && env -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$TDIR" RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --quiet --target "$TARGET_TRIPLE" -p migsight-workload) ||
        die "building migsight-workload failed (cargo's error is above; the $TARGET_TRIPLE target must be installed: rustup target add $TARGET_TRIPLE)"
    WL_BIN=$TDIR/$TARGET_TRIPLE/release/migsight-workload
fi
[ -x "$WL_BIN" ] || die "workload binary $WL_BIN missing"
is_static "$WL_BIN" ||
    die "$WL_BIN is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static' --target $TARGET_TRIPLE"

# ------------------------------------------- host files for the initramfs --
# "src dst" pairs: the programs (under /usr/bin/<name>), their shared
# libraries (at the paths ldd resolves, the loader's default search path),
# the ELF interpreter, and libgcc_s (glibc dlopens it for thread cancellation).
declare -A FILES=()
for p in "${PROGRAMS[@]}"; do
    src=$(readlink -f "$(command -v "$p")")
    FILES["/usr/bin/$p"]=$src
    while read -r path; do
        [ -n "$path" ] || continue
        FILES["$path"]=$(readlink -f "$path")
    done < <(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    if ldd "$src" | grep -q 'not found'; then
        die "$src: unresolved shared libraries: $(ldd "$src" | grep 'not found' | tr -s ' \t' ' ')"
    fi
done
for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
    if [ -e "$d/libgcc_s.so.1" ]; then
        FILES["/lib/x86_64-linux-gnu/libgcc_s.so.1"]=$(readlink -f "$d/libgcc_s.so.1")
        break
    fi
done
mapfile -t DSTS < <(printf '%s\n' "${!FILES[@]}" | sort)

# --------------------------------------------------------- inputs / stamp --
pkgver() { dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null || true; }
INPUTS=$(
    echo "format=1"
    echo "script $(sha256sum <"$SELF" | cut -d' ' -f1)"
    echo "init $(sha256sum <"$INIT_SRC" | cut -d' ' -f1)"
    echo "workload $(sha256sum <"$WL_BIN" | cut -d' ' -f1)"
    echo "busybox $(sha256sum <"$BUSYBOX" | cut -d' ' -f1)"
    echo "kernel $KPKG=$KVER"
    pkgver busybox-static redis-server memcached sqlite3 xz-utils gzip libc6
    for d in "${DSTS[@]}"; do echo "file $d $(sha256sum <"${FILES[$d]}" | cut -d' ' -f1)"; done
)
INPUTS_HASH=$(printf '%s\n' "$INPUTS" | sha256sum | cut -d' ' -f1)

print_hashes() {
    (cd "$OUT" && sha256sum vmlinuz vmlinux initramfs.cpio.gz manifest.txt)
}
outputs_ok() {
    [ -f "$OUT/inputs.sha256" ] && [ "$(cat "$OUT/inputs.sha256")" = "$INPUTS_HASH" ] || return 1
    local f want have
    for f in vmlinuz vmlinux initramfs.cpio.gz; do
        [ -f "$OUT/$f" ] || return 1
        want=$(awk -v f="$f" 'length($1) == 64 && $2 == f { print $1; exit }' "$OUT/manifest.txt" 2>/dev/null)
        have=$(sha256sum <"$OUT/$f" | cut -d' ' -f1)
        [ -n "$want" ] && [ "$want" = "$have" ] || return 1
    done
}
if [ "${MIGSIGHT_FORCE:-0}" != 1 ] && outputs_ok; then
    log "up to date: $OUT (inputs $INPUTS_HASH)"
    print_hashes
    exit 0
fi

# ------------------------------------------------------------------- build --
STAGE=$(mktemp -d "$CACHE_ROOT/.guest-build.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# Kernel: download once into the deb cache (apt verifies it against the
# signed archive index), extract boot/vmlinuz-*.
if [ ! -s "$KDEB" ]; then
    log "apt-get download $KPKG=$KVER"
    (cd "$STAGE" && apt-get download -q -o APT::Sandbox::User=root "$KPKG=$KVER" >/dev/null) ||
        { apt_update; (cd "$STAGE" && apt-get download -q -o APT::Sandbox::User=root "$KPKG=$KVER" >/dev/null); } ||
        die "apt-get download $KPKG=$KVER failed"
    mv "$STAGE"/"${KPKG}"_*.deb "$KDEB"
fi
mkdir -p "$STAGE/kernel"
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$STAGE/kernel" --wildcards './boot/vmlinuz-*' './boot/config-*' ||
    die "extracting the kernel from $KDEB failed"
KIMG=$(ls "$STAGE"/kernel/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$KIMG" ] || die "no boot/vmlinuz-* in $KDEB"
KREL=${KIMG##*/vmlinuz-}
cp "$KIMG" "$STAGE/vmlinuz"
# vmlinux for -M microvm: the bzImage payload is a legacy LZ4 frame (02 21 4c 18).
LZ4_OFF=$(grep -obUaP '\x02\x21\x4c\x18' "$STAGE/vmlinuz" | head -n1 | cut -d: -f1 || true)
[ -n "$LZ4_OFF" ] || die "no LZ4 payload found in $KIMG (kernel not LZ4-compressed?)"
tail -c +$((LZ4_OFF + 1)) "$STAGE/vmlinuz" | lz4 -dc >"$STAGE/vmlinux" 2>/dev/null || true
head -c 4 "$STAGE/vmlinux" | grep -qaP '^\x7fELF' || die "extracting vmlinux from $KIMG failed"

# Root file system.
R=$STAGE/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc,proc,sys,dev,tmp,run,root,var/tmp}
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 0700 "$R/root"
cp "$BUSYBOX" "$R/bin/busybox"
chmod 0755 "$R/bin/busybox"
for a in $("$R/bin/busybox" --list | sort); do
    [ "$a" = busybox ] || [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"
done
install -m 0755 "$INIT_SRC" "$R/init"
if command -v strip >/dev/null; then
    # Without symbols and build-id the binary no longer depends on the
    # checkout's path: the same source gives the same image from any clone.
    strip --strip-all --remove-section=.note.gnu.build-id -o "$R/bin/migsight-workload" "$WL_BIN"
else
    cp "$WL_BIN" "$R/bin/migsight-workload"
fi
chmod 0755 "$R/bin/migsight-workload"
for d in "${DSTS[@]}"; do
    mkdir -p "$R$(dirname "$d")"
    cp -L "${FILES[$d]}" "$R$d"
    chmod 0755 "$R$d"
done
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat >"$R/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files
EOF
printf '127.0.0.1 localhost\n::1 localhost\n' >"$R/etc/hosts"
printf 'migsight-guest\n' >"$R/etc/hostname"
# (The kernel's built-in initramfs also provides /dev/console; devtmpfs covers the rest.)
mknod -m 0600 "$R/dev/console" c 5 1 || log "warning: mknod /dev/console failed (no CAP_MKNOD?)"
mknod -m 0666 "$R/dev/null" c 1 3 || log "warning: mknod /dev/null failed"

# The magic must not be in any file of the image (only in the live page).
if grep -rlaP "$MAGIC_RE" "$R" >"$STAGE/magic-hits" 2>/dev/null; then
    die "the ops-page magic appears verbatim in: $(tr '\n' ' ' <"$STAGE/magic-hits")"
fi

# Reproducible newc archive: sorted names, zero mtimes, uid/gid 0, renumbered
# inodes, no device numbers of the build host, gzip without name/time.
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) >"$STAGE/initramfs.cpio" ||
    die "cpio failed"
if grep -qaP "$MAGIC_RE" "$STAGE/initramfs.cpio"; then
    die "the ops-page magic appears verbatim in the initramfs"
fi
gzip -n -9 <"$STAGE/initramfs.cpio" >"$STAGE/initramfs.cpio.gz"

# Manifest. Lines "<sha256>  <name>" are in sha256sum format (the outputs,
# then the initramfs members as "initramfs:<path>"); the rest are "key value".
sum() { sha256sum <"$1" | cut -d' ' -f1; }
{
    echo "# migsight guest image, built by lab/guest/build-image.sh"
    echo "format 1"
    echo "inputs_sha256 $INPUTS_HASH"
    echo "kernel_package $KPKG=$KVER"
    echo "kernel_release $KREL"
    echo "# outputs (sha256sum format)"
    for f in vmlinuz vmlinux initramfs.cpio.gz; do
        echo "$(sum "$STAGE/$f")  $f"
    done
    echo "initramfs_uncompressed_sha256 $(sum "$STAGE/initramfs.cpio")"
    echo "initramfs_bytes $(stat -c %s "$STAGE/initramfs.cpio.gz") compressed, $(stat -c %s "$STAGE/initramfs.cpio") uncompressed"
    echo "workload_build_sha256 $(sum "$WL_BIN") (unstripped; the image holds a stripped copy)"
    pkgver busybox-static redis-server memcached sqlite3 xz-utils gzip libc6 | sed 's/^/package /'
    echo "qemu_append console=ttyS0 panic=-1 quiet mitigations=off MODE=synthetic WS_MB=64 RATE=2000"
    echo "# workload parameters: param NAME DEFAULT RANGE (kernel command line KEY=value; lab/workload/README.md)"
    cat <<'EOF'
param MODE synthetic idle|synthetic|redis|memcached|sqlite|gzip|xz
param WS_MB 64 1..(MemAvailable - 24 MiB - COLD_MB); MemAvailable ~ RAM - 86..108 MiB
param RATE 2000 0..100000000|max (page writes/s; 0 = none)
param BYTES 512 1..4096
param ENTROPY 8 1..8
param PATTERN random random|seq|hotcold
param LAYOUT scatter scatter|run
param COMPUTE 0 0..4294967296
param COLD_MB 0 0..
param COLD_ENTROPY 8 0..8
param SEED 1 0..2^64-1
param VALUE_BYTES 1024 1..1048576
param KEYS 10000 1..100000000
param WRITE_PCT 50 0..100
param LEVEL 6(gzip)/1(xz) 1..9
param OPS_RATE 0 0..100000000 (0 = unlimited)
param PIPELINE 1 1..1024
param CHUNK_MB 16 1..4096
param ROWS_PER_TXN 4 1..10000
param MEM_MB 256 16..
EOF
    echo "# initramfs members (regular files, sha256sum format)"
    (cd "$R" && find . -mindepth 1 -type f | sort | while read -r f; do
        echo "$(sha256sum <"$f" | cut -d' ' -f1)  initramfs:${f#.}"
    done)
    echo "busybox_applet_symlinks $(find "$R/bin" -type l | wc -l)"
} >"$STAGE/manifest.txt"

# Install atomically-ish: outputs first, then the manifest, then the stamp.
rm -f "$OUT/inputs.sha256"
for f in vmlinuz vmlinux initramfs.cpio.gz manifest.txt; do
    mv -f "$STAGE/$f" "$OUT/$f"
done
echo "$INPUTS_HASH" >"$OUT/inputs.sha256"
log "built $OUT (kernel $KREL from $KPKG=$KVER)"
print_hashes
