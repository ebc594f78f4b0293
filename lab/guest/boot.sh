#!/usr/bin/env bash
# Boots the migsight guest under QEMU (foreground; exec's qemu).
#
#   lab/guest/boot.sh [options] [KEY=value ...] [-- extra qemu args]
#
# Options (environment variable in brackets):
#   --name NAME       QEMU -name, also names the sockets           [GUEST_NAME, default src]
#   --run-dir DIR     where NAME.serial / NAME.qmp sockets go       [GUEST_RUN_DIR, default /tmp/migsight-guest]
#   --mem SIZE        guest RAM                                     [GUEST_MEM, default 512M]
#   --smp N           vCPUs                                          [GUEST_SMP, default 1]
#   --accel A         tcg | kvm                                     [GUEST_ACCEL, default tcg]
#   --machine M       pc | microvm (microvm boots the vmlinux ELF)  [GUEST_MACHINE, default pc]
#   --incoming        add -incoming defer (migration destination)
#   --image-dir DIR   the built image                                [default ${MIGSIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/migsight}/guest]
#   --print           print the command line instead of running it
# The QEMU is $MIGSIGHT_QEMU if set, else qemu-system-x86_64 on PATH.
# KEY=value words (MODE=redis WS_MB=128 RATE=5000 ...) are appended to the
# kernel command line and become the workload's parameters.
set -euo pipefail

NAME=${GUEST_NAME:-src}
RUN_DIR=${GUEST_RUN_DIR:-/tmp/migsight-guest}
MEM=${GUEST_MEM:-512M}
SMP=${GUEST_SMP:-1}
ACCEL=${GUEST_ACCEL:-tcg}
MACHINE=${GUEST_MACHINE:-pc}
if [ -n "${MIGSIGHT_CACHE:-}" ]; then
    IMAGE_DIR=$MIGSIGHT_CACHE/guest
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    IMAGE_DIR=$XDG_CACHE_HOME/migsight/guest
elif [ -n "${HOME:-}" ]; then
    IMAGE_DIR=$HOME/.cache/migsight/guest
else
    IMAGE_DIR=/var/cache/migsight/guest
fi
INCOMING=0
PRINT=0
PARAMS=()
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --name) NAME=$2; shift 2 ;;
        --run-dir) RUN_DIR=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --smp) SMP=$2; shift 2 ;;
        --accel) ACCEL=$2; shift 2 ;;
        --machine) MACHINE=$2; shift 2 ;;
        --image-dir) IMAGE_DIR=$2; shift 2 ;;
        --incoming) INCOMING=1; shift ;;
        --print) PRINT=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *=*) PARAMS+=("$1"); shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "boot.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

INITRD=$IMAGE_DIR/initramfs.cpio.gz
case "$MACHINE" in
    pc) KERNEL=$IMAGE_DIR/vmlinuz; MACH=(-M pc) ;;
    microvm) KERNEL=$IMAGE_DIR/vmlinux; MACH=(-M microvm,isa-serial=on,rtc=on) ;;
    *) echo "boot.sh: --machine must be pc or microvm" >&2; exit 2 ;;
esac
for f in "$KERNEL" "$INITRD"; do
    [ -f "$f" ] || { echo "boot.sh: $f missing; run lab/guest/build-image.sh" >&2; exit 1; }
done
mkdir -p "$RUN_DIR"
SERIAL=$RUN_DIR/$NAME.serial
QMP=$RUN_DIR/$NAME.qmp
rm -f "$SERIAL" "$QMP"

APPEND="console=ttyS0 panic=-1 quiet mitigations=off ${PARAMS[*]:-}"
# $MIGSIGHT_QEMU: another QEMU (e.g. 7.2 as scripts/deps.sh unpacks it).
CMD=("${MIGSIGHT_QEMU:-qemu-system-x86_64}" -name "$NAME,debug-threads=on" -nodefaults -no-user-config -display none
    -smp "$SMP" -m "$MEM" -accel "$ACCEL" -cpu max "${MACH[@]}"
    -kernel "$KERNEL" -initrd "$INITRD" -append "${APPEND% }"
    -chardev "socket,id=ser0,path=$SERIAL,server=on,wait=off" -serial chardev:ser0
    -qmp "unix:$QMP,server=on,wait=off")
[ $INCOMING = 1 ] && CMD+=(-incoming defer)
CMD+=("${EXTRA[@]}")

if [ $PRINT = 1 ]; then
    printf '%q ' "${CMD[@]}"
    echo
    exit 0
fi
exec "${CMD[@]}"
