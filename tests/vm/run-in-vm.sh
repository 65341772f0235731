#!/usr/bin/env bash
# Run a command under a stock Debian kernel in QEMU (TCG, no KVM, no network
# devices), chrooted into this machine's root filesystem shared read-only over
# 9p. The command's exit status becomes this script's exit status.
#
#   tests/vm/run-in-vm.sh [OPTIONS] -- COMMAND [ARGS...]
#
# See tests/vm/README.md for details.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: run-in-vm.sh [OPTIONS] -- COMMAND [ARGS...]

Runs COMMAND inside a QEMU VM (Debian kernel, TCG) chrooted into the host's
root filesystem, which is shared read-only. Exits with COMMAND's exit status.

options:
  --mem MIB          guest memory in MiB (default 2048)
  --cpus N           guest CPUs (default 2)
  --timeout SECS     kill the VM after SECS seconds (default 600); exit 124
  --writable DIR     mount an empty tmpfs on DIR inside the VM (repeatable)
  --overlay DIR      make DIR writable inside the VM: host contents stay
                     visible, writes go to a tmpfs and are discarded (repeatable)
  --env NAME[=VAL]   pass NAME (from the caller's environment, or VAL) to the
                     command (repeatable)
  --module NAME      also insmod kernel module NAME at boot (repeatable)
  --verbose          show kernel boot messages and trace the VM's init
  -h, --help         this help

Always writable inside: /tmp, /run (so /var/run/netns), /dev/shm.
Exit status: COMMAND's; 124 on timeout; 125 if the VM failed before
reporting a status (script, QEMU or kernel failure).
Environment: PLEXUS_VM_KERNEL=<version, e.g. 6.1.0-56-amd64> pins the kernel;
PLEXUS_VM_CACHE=<dir> overrides the cache dir (default tests/vm/.cache).
EOF
}

die() { echo "run-in-vm: error: $*" >&2; exit 125; }
log() { echo "run-in-vm: $*" >&2; }

# ---------------------------------------------------------------- options
MEM=2048
CPUS=2
TIMEOUT=600
VERBOSE=0
WRITABLE=()
OVERLAYS=()
EXTRA_ENV=()
EXTRA_MODULES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mem) MEM=${2:?--mem needs a value}; shift 2 ;;
        --mem=*) MEM=${1#*=}; shift ;;
        --cpus) CPUS=${2:?--cpus needs a value}; shift 2 ;;
        --cpus=*) CPUS=${1#*=}; shift ;;
        --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --writable) WRITABLE+=("${2:?--writable needs a value}"); shift 2 ;;
        --writable=*) WRITABLE+=("${1#*=}"); shift ;;
        --overlay) OVERLAYS+=("${2:?--overlay needs a value}"); shift 2 ;;
        --overlay=*) OVERLAYS+=("${1#*=}"); shift ;;
        --env) EXTRA_ENV+=("${2:?--env needs a value}"); shift 2 ;;
        --env=*) EXTRA_ENV+=("${1#*=}"); shift ;;
        --module) EXTRA_MODULES+=("${2:?--module needs a value}"); shift 2 ;;
        --module=*) EXTRA_MODULES+=("${1#*=}"); shift ;;
        --verbose) VERBOSE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) usage >&2; die "unknown option '$1' (put the command after --)" ;;
    esac
done
[[ $# -gt 0 ]] || { usage >&2; die "no command given"; }
[[ $MEM =~ ^[0-9]+$ ]] || die "--mem must be a number of MiB"
[[ $CPUS =~ ^[0-9]+$ ]] || die "--cpus must be a number"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname "$SCRIPT_PATH")
CACHE=${PLEXUS_VM_CACHE:-$SCRIPT_DIR/.cache}
mkdir -p "$CACHE"
CACHE=$(readlink -f "$CACHE")

# Modules loaded at boot, in addition to --module. Dependencies are resolved
# from modules.dep; modules built into the kernel are skipped.
BOOT_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    netfs fscache 9pnet 9pnet_virtio 9p overlay
    ipvlan dummy ipip vxlan veth bridge macvlan geneve vrf wireguard)

# Quote a string for POSIX sh (single quotes).
shq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

# ---------------------------------------------------------------- host packages
APT_UPDATED=0
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "need root to install: $* (or install them yourself)"
    log "installing $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; then
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 || die "apt-get install $* failed"
    fi
}
apt_update() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get update -q >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
}
busybox_ok() {
    [[ -x /bin/busybox && $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null) == "install ok installed" ]]
}

# Serialise cache updates between concurrent runs.
exec 9>"$CACHE/.lock"
flock 9

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
busybox_ok || need+=(busybox-static)
[[ ${#need[@]} -eq 0 ]] || apt_install "${need[@]}"
BUSYBOX=/bin/busybox

# ---------------------------------------------------------------- kernel
pick_kernel() {
    local dep
    dep=$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null | sed -n 's/^Depends: *//p' | head -n1) || true
    if [[ -z $dep ]]; then
        apt_update
        dep=$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null | sed -n 's/^Depends: *//p' | head -n1) || true
    fi
    # e.g. "linux-image-6.1.0-56-amd64 (= 6.1.192-2)"
    tr ',' '\n' <<<"$dep" | sed -n 's/^ *linux-image-\([0-9][^ ]*-amd64\)\( .*\)\?$/\1/p' | head -n1
}

KVER=${PLEXUS_VM_KERNEL:-}
if [[ -z $KVER ]]; then
    # Reuse the newest kernel already in the cache if apt knows nothing newer
    # (keeps working offline).
    KVER=$(pick_kernel || true)
    if [[ -z $KVER ]]; then
        KVER=$(ls -1 "$CACHE" 2>/dev/null | sed -n 's/^kernel-\(.*\)$/\1/p' | sort -V | tail -n1)
        [[ -n $KVER ]] || die "cannot determine a Debian kernel: linux-image-amd64 has no linux-image-*-amd64 dependency"
        log "apt knows no kernel; using cached $KVER"
    fi
fi
download_kernel() {  # $1 = version, $2 = download dir
    local pkg=linux-image-$1
    apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 || return 1
    log "downloading $pkg"
    (cd "$2" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2)
}
KROOT=$CACHE/kernel-$KVER
if [[ ! -f $KROOT/.complete ]]; then
    dl=$(mktemp -d "$CACHE/dl.XXXXXX")
    if ! download_kernel "$KVER" "$dl"; then
        # Stale package lists may name a kernel the mirror no longer has.
        [[ $APT_UPDATED -eq 0 ]] || { rm -rf "$dl"; die "cannot download linux-image-$KVER"; }
        apt_update
        if [[ -z ${PLEXUS_VM_KERNEL:-} ]]; then
            KVER=$(pick_kernel || true)
            [[ -n $KVER ]] || { rm -rf "$dl"; die "cannot determine a Debian kernel after apt-get update"; }
            KROOT=$CACHE/kernel-$KVER
        fi
        if [[ ! -f $KROOT/.complete ]]; then
            download_kernel "$KVER" "$dl" || { rm -rf "$dl"; die "cannot download linux-image-$KVER"; }
        fi
    fi
    if [[ ! -f $KROOT/.complete ]]; then
        rm -rf "$KROOT"
        mkdir -p "$KROOT"
        dpkg -x "$dl"/*.deb "$KROOT" || { rm -rf "$dl" "$KROOT"; die "dpkg -x failed"; }
        # The package ships no modules.dep (its postinst runs depmod); make one.
        if command -v depmod >/dev/null; then
            depmod -b "$KROOT" "$KVER" || die "depmod failed"
        else
            "$BUSYBOX" depmod -b "$KROOT" "$KVER" || die "depmod failed"
        fi
        touch "$KROOT/.complete"
    fi
    rm -rf "$dl"
fi
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
MODROOT=$KROOT/lib/modules/$KVER
[[ -f $VMLINUZ && -f $MODROOT/modules.dep ]] || die "incomplete kernel in $KROOT (delete it and retry)"

# ---------------------------------------------------------------- initramfs
# The init script baked into the (cached) initramfs. Per-run settings come
# from a second cpio archive appended to it (/plexus-run/conf, /plexus-run/cmd).
read -r -d '' INIT_SCRIPT <<'INIT' || true
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt/host /sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
. /plexus-run/conf
[ "$VERBOSE" = 1 ] && set -x
msg() { echo "plexus-vm: $*"; }
fail() { msg "error: $*"; echo "$TOKEN 125"; poweroff -f; sleep 10; }

while read -r m; do
    insmod "/lib/plexus-modules/$m.ko" || msg "warning: insmod $m failed"
done < /lib/plexus-modules/order

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt/host \
    || fail "cannot mount the host root over 9p"
R=/mnt/host

# Full module tree of this kernel (from the host cache), so the kernel can
# autoload modules (e.g. netfilter) through /sbin/modprobe.
if [ -d "$R$MODDIR" ]; then
    mkdir -p /lib/modules
    mount --bind "$R$MODDIR" /lib/modules && ln -sf /bin/busybox /sbin/modprobe
fi

# Paths (cwd, CARGO_TARGET_DIR...) that the tmpfs mounts below would hide.
i=0
for p in $KEEP; do
    i=$((i + 1)); mkdir -p "/keep/$i"; mount --bind "$R$p" "/keep/$i"
done

mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t devtmpfs devtmpfs "$R/dev"
[ -d "$R/dev/pts" ] && mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
[ -d "$R/dev/shm" ] && mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mkdir -p "$R/run/netns" "$R/run/lock"
if [ -d "$R/var/run" ] && [ ! -L "$R/var/run" ]; then
    mount -t tmpfs -o mode=0755 tmpfs "$R/var/run"; mkdir -p "$R/var/run/netns"
fi

writable() {
    if [ ! -d "$R$1" ]; then
        mkdir -p "$R$1" 2>/dev/null || fail "--writable $1: no such directory on the read-only host root"
    fi
    mount -t tmpfs -o mode=0755 tmpfs "$R$1" || fail "cannot mount tmpfs on $1"
}
overlay() {
    [ -d "$R$1" ] || fail "--overlay $1: no such directory"
    d=/ovl/$(echo "$1" | tr / _)
    mkdir -p "$d" && mount -t tmpfs tmpfs "$d" && mkdir -p "$d/lower" "$d/upper" "$d/work" \
        && mount --bind "$R$1" "$d/lower" \
        && mount -t overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" overlay "$R$1" \
        || fail "cannot mount an overlay on $1"
}
. /plexus-run/mounts

i=0
for p in $KEEP; do
    i=$((i + 1))
    [ -d "$R$p" ] || mkdir -p "$R$p" 2>/dev/null || true
    mount --bind "/keep/$i" "$R$p" 2>/dev/null || true
done

# ttyS0 = command stdout, ttyS1 = command stderr, ttyS2 = console + status.
for t in /dev/ttyS0 /dev/ttyS1; do stty -F "$t" raw -echo 2>/dev/null || true; done
mkfifo /out /err
cat /out > /dev/ttyS0 & po=$!
cat /err > /dev/ttyS1 & pe=$!
sh /plexus-run/cmd < /dev/null > /out 2> /err
rc=$?
# Let the output drain; do not hang on daemons the command left behind.
n=0
while [ $n -lt 50 ] && { kill -0 $po 2>/dev/null || kill -0 $pe 2>/dev/null; }; do
    sleep 0.1; n=$((n + 1))
done
kill $po $pe 2>/dev/null
echo "$TOKEN $rc"
poweroff -f
sleep 10
INIT

BB_HASH=$(sha256sum "$BUSYBOX" | cut -c1-16)
SCRIPT_HASH=$(cat "$SCRIPT_PATH" <(printf '%s\n' "${EXTRA_MODULES[@]}") | sha256sum | cut -c1-16)
INITRAMFS=$CACHE/initramfs-$KVER-$SCRIPT_HASH-$BB_HASH.cpio.gz

# Module name -> path relative to $MODROOT (names compare with - and _ equal).
declare -A MODPATH=() MODDEPS=()
load_modules_dep() {
    local line path deps name
    while IFS= read -r line; do
        path=${line%%:*}
        deps=${line#*:}
        name=${path##*/}; name=${name%%.ko*}; name=${name//-/_}
        MODPATH[$name]=$path
        MODDEPS[$name]=$deps
    done < "$MODROOT/modules.dep"
}
is_builtin() {
    local n=${1//-/_}
    sed 's/.*\///; s/\.ko.*//; s/-/_/g' "$MODROOT/modules.builtin" | grep -x -- "$n" >/dev/null
}
ORDER=()
declare -A SEEN=()
visit() {  # depth-first: dependencies before the module
    local name=${1//-/_} d dn
    [[ -n ${SEEN[$name]:-} ]] && return 0
    SEEN[$name]=1
    if [[ -z ${MODPATH[$name]:-} ]]; then
        is_builtin "$name" && return 0
        die "kernel module '$name' not found in $KVER"
    fi
    for d in ${MODDEPS[$name]}; do
        dn=${d##*/}; dn=${dn%%.ko*}
        visit "$dn"
    done
    ORDER+=("$name")
}

if [[ ! -f $INITRAMFS ]]; then
    log "building initramfs for $KVER"
    load_modules_dep
    for m in "${BOOT_MODULES[@]}" "${EXTRA_MODULES[@]}"; do visit "$m"; done
    stage=$(mktemp -d "$CACHE/initramfs.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,mnt/host,lib/plexus-modules,plexus-run}
    cp "$BUSYBOX" "$stage/bin/busybox"
    printf '%s\n' "$INIT_SCRIPT" > "$stage/init"
    chmod 755 "$stage/init"
    for m in "${ORDER[@]}"; do
        src=$MODROOT/${MODPATH[$m]}
        dst=$stage/lib/plexus-modules/$m.ko
        case "$src" in
            *.ko) cp "$src" "$dst" ;;
            *.ko.xz) xz -dc "$src" > "$dst" ;;
            *.ko.zst)
                command -v zstd >/dev/null || apt_install zstd
                zstd -q -dc "$src" > "$dst" ;;
            *.ko.gz) gzip -dc "$src" > "$dst" ;;
            *) die "unknown module format: $src" ;;
        esac
        echo "$m" >> "$stage/lib/plexus-modules/order"
    done
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) \
        | gzip -6 > "$INITRAMFS.tmp"
    mv "$INITRAMFS.tmp" "$INITRAMFS"
    rm -rf "$stage"
    trap - EXIT
    # Drop initramfs images made by other versions of this script.
    find "$CACHE" -maxdepth 1 -name "initramfs-*.cpio.gz" ! -name "${INITRAMFS##*/}" -mmin +60 -delete 2>/dev/null || true
fi
flock -u 9

# ---------------------------------------------------------------- per-run config
WORK=$(mktemp -d "${TMPDIR:-/tmp}/run-in-vm.XXXXXX")
QEMU_PID=
cleanup() {
    [[ -n $QEMU_PID ]] && kill "$QEMU_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TOKEN="PLEXUS-VM-EXIT-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
CWD=$(pwd -P)

# Paths that the tmpfs on /tmp and /run would hide but the command needs.
KEEP=()
add_keep() {
    local p
    p=$(readlink -f "$1" 2>/dev/null) || return 0
    [[ -d $p ]] || p=$(dirname "$p")
    case "$p" in /tmp/*|/run/*|/var/run/*) ;; *) return 0 ;; esac
    [[ $p == *[[:space:]]* ]] && { log "warning: cannot expose $p inside the VM (whitespace)"; return 0; }
    KEEP+=("$p")
}
add_keep "$CWD"
[[ -n ${CARGO_TARGET_DIR:-} ]] && add_keep "$CARGO_TARGET_DIR"
[[ $1 == /* ]] && add_keep "$1"

mkdir -p "$WORK/root/plexus-run"
{
    echo "TOKEN=$TOKEN"
    echo "VERBOSE=$VERBOSE"
    echo "MODDIR=$(shq "$KROOT/lib/modules")"
    echo "KEEP=$(shq "${KEEP[*]}")"
} > "$WORK/root/plexus-run/conf"
{
    for d in "${WRITABLE[@]}"; do
        [[ $d == /* ]] || d=$CWD/$d
        echo "writable $(shq "$d")"
    done
    for d in "${OVERLAYS[@]}"; do
        [[ $d == /* ]] || d=$CWD/$d
        echo "overlay $(shq "$d")"
    done
} > "$WORK/root/plexus-run/mounts"

# Environment passed to the command.
ENVV=()
declare -A ENV_SEEN=()
add_env() {
    [[ -n ${ENV_SEEN[$1]:-} ]] && return 0
    ENV_SEEN[$1]=1
    ENVV+=("$(shq "$1=$2")")
}
for e in "${EXTRA_ENV[@]}"; do
    if [[ $e == *=* ]]; then add_env "${e%%=*}" "${e#*=}"
    elif [[ -n ${!e+x} ]]; then add_env "$e" "${!e}"
    fi
done
while IFS= read -r name; do
    case "$name" in
        PATH|RUST_*|CARGO_TARGET_DIR|CARGO_MANIFEST_DIR|PLEXUS_*|TERM|LANG|LC_*|TZ|NO_COLOR|USER|LOGNAME|HOME)
            [[ $name == PLEXUS_VM_* ]] && continue
            add_env "$name" "${!name}" ;;
    esac
done < <(compgen -e)
[[ -n ${ENV_SEEN[PATH]:-} ]] || add_env PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
[[ -n ${ENV_SEEN[HOME]:-} ]] || add_env HOME /root
add_env PLEXUS_IN_VM 1

{
    printf 'exec /bin/busybox env -i'
    printf ' %s' "${ENVV[@]}"
    # shellcheck disable=SC2016
    printf ' /bin/busybox chroot /mnt/host /bin/sh -c %s sh' \
        "$(shq 'cd "$1" || { echo "run-in-vm: cannot cd to $1 inside the VM" >&2; exit 125; }; shift; exec "$@"')"
    printf ' %s' "$(shq "$CWD")"
    for a in "$@"; do printf ' %s' "$(shq "$a")"; done
    printf '\n'
} > "$WORK/root/plexus-run/cmd"

(cd "$WORK/root" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -1 > "$WORK/run.cpio.gz"
cat "$INITRAMFS" "$WORK/run.cpio.gz" > "$WORK/initrd"

# ---------------------------------------------------------------- boot
mkfifo "$WORK/out" "$WORK/err" "$WORK/ctl"
cat "$WORK/out" &
P_OUT=$!
cat "$WORK/err" >&2 &
P_ERR=$!
(
    status=
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        if [[ $line == "$TOKEN "* ]]; then
            status=${line#"$TOKEN "}
            printf '%s\n' "$status" > "$WORK/status"
        elif [[ -z $status || $VERBOSE == 1 ]]; then
            printf '%s\n' "$line" >&2
        fi
    done
) < "$WORK/ctl" &
P_CTL=$!

if [[ $VERBOSE == 1 ]]; then KCMD="console=ttyS2 loglevel=7"; else KCMD="console=ttyS2 quiet loglevel=1"; fi
KCMD+=" panic=-1 rdinit=/init mitigations=off nokaslr tsc=unstable"

START=$(date +%s.%N)
set +e
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg -cpu max -m "$MEM" -smp "$CPUS" \
    -nodefaults -no-user-config -display none -monitor none -no-reboot \
    -nic none \
    -kernel "$VMLINUZ" -initrd "$WORK/initrd" -append "$KCMD" \
    -serial "file:$WORK/out" -serial "file:$WORK/err" -serial "file:$WORK/ctl" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    </dev/null >/dev/null &
QEMU_PID=$!
wait "$QEMU_PID"
QRC=$?
QEMU_PID=
set -e
# Unblock any reader whose fifo QEMU never opened (e.g. QEMU failed early).
for f in out err ctl; do exec {fd}<>"$WORK/$f"; exec {fd}>&-; done
wait "$P_OUT" "$P_ERR" "$P_CTL" 2>/dev/null || true
ELAPSED=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
[[ $VERBOSE == 1 ]] && log "VM ran for ${ELAPSED}s"

if [[ -s $WORK/status ]]; then
    status=$(<"$WORK/status")
    [[ $status =~ ^[0-9]+$ ]] || die "bad status '$status' from the VM"
    exit "$status"
fi
if [[ $QRC -eq 124 || $QRC -eq 137 ]]; then
    echo "run-in-vm: error: timed out after ${TIMEOUT}s (use --timeout); the VM was killed" >&2
    exit 124
fi
die "the VM stopped after ${ELAPSED}s without reporting an exit status (qemu exit $QRC; rerun with --verbose)"
