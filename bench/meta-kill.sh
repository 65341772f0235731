#!/usr/bin/env bash
# bench/meta-kill.sh: what a runtime's timeout leaves behind. N times: ADD a
# pod through the meta plugin, kill -9 the meta plugin 0-50 ms after its
# delegate started (as a runtime does when a plugin overruns its timeout),
# then DEL it. The
# cluster network's plugin is plexus-bridge (ipMasq: nftables chain) with
# plexus-host-local, behind a wrapper that hands the work to a child that
# first sleeps BENCH_SLOW seconds (default 0.3), so the work outlives the
# killed plugin the way an orphaned delegate or IPAM call does. When every process has exited, counts
# what is left: veths in the node, addresses in the pod, leases, nft chains,
# plexus cache files, and DELs that failed.
#
#   sudo bench/meta-kill.sh [N] [BIN_DIR]
#
# N defaults to 200. BIN_DIR holds plexus, plexusctl, plexus-bridge and
# plexus-host-local (default: target/debug after `cargo build --bins`); give
# a directory built from another commit to compare. Everything lives in a
# throwaway node netns, one pod netns per cycle and a temp dir, removed on
# exit (trap; BENCH_KEEP=1 keeps them for a look).
#
# Measured (debug builds, 100 cycles, BENCH_SLOW=0.3): before the
# per-attachment lock (commit 50308d4) 97 veths, 97 leases and 97 nft chains
# were left; with it, none. The child here is not the plugin itself, so
# PR_SET_PDEATHSIG does not reach it: what saves it is the lock.
set -euo pipefail

N=${1:-200}
# How long the delegate's child works before the real plugin runs: longer
# than the runtime's DEL takes, so an orphan finishes after it.
slow=${BENCH_SLOW:-0.3}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${2:-$root/target/debug}
[[ $(id -u) -eq 0 ]] || { echo "bench/meta-kill.sh: needs root" >&2; exit 1; }
for b in plexus plexusctl plexus-bridge plexus-host-local; do
    [[ -x $bin/$b ]] || { echo "bench/meta-kill.sh: $bin/$b missing (cargo build --bins)" >&2; exit 1; }
done

node="plxbench-kill-node-$$"
# Each cycle has its own pod (and so its own container ID), kept until the
# end: a leak must not be undone by the next cycle or hidden by deleting
# the pod's namespace.
pod() { echo "plxbench-kill-pod-$$-$1"; }
tmp=$(mktemp -d /tmp/plexus-bench-kill.XXXXXX)
cleanup() {
    # Only what this script started: processes running from its temp dir.
    pkill -9 -f "$tmp/" 2>/dev/null || true
    for ((j = -1; j < N; j++)); do ip netns del "$(pod $j)" 2>/dev/null || true; done
    ip netns del "$node" 2>/dev/null || true
    rm -rf "$tmp"
}
[[ -n ${BENCH_KEEP:-} ]] || trap cleanup EXIT
ip netns add "$node"
ip -n "$node" link set lo up

mkdir -p "$tmp/bin" "$tmp/net.d" "$tmp/plexus.d" "$tmp/ipam"
cp "$bin"/plexus "$bin"/plexusctl "$bin"/plexus-bridge "$bin"/plexus-host-local "$tmp/bin/"
cat > "$tmp/bin/slow-bridge" <<EOF
#!/bin/sh
# ADD's work runs in a child that outlives this process, slowly.
( [ "\$CNI_COMMAND" = ADD ] && sleep $slow; exec $tmp/bin/plexus-bridge )
EOF
chmod +x "$tmp/bin/slow-bridge"
cat > "$tmp/plexus.d/10-cluster.conflist" <<EOF
{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"slow-bridge","bridge":"cni-kill0",
 "isGateway":true,"ipMasq":true,"ipam":{"type":"plexus-host-local","ranges":[[{"subnet":"10.77.0.0/16"}]],
 "dataDir":"$tmp/ipam"}}]}
EOF
cat > "$tmp/net.d/00-plexus.conflist" <<EOF
{"cniVersion":"1.0.0","name":"plexus","plugins":[{"type":"plexus","clusterNetwork":"cluster",
 "confDir":"$tmp/plexus.d","cacheDir":"$tmp/cache","logFile":"$tmp/plexus.log","logLevel":"info"}]}
EOF

ctl() {
    ip netns exec "$node" env NETCONFPATH="$tmp/net.d" CNI_PATH="$tmp/bin" \
        PLEXUS_CACHE_DIR="$tmp/outer-cache" "$tmp/bin/plexusctl" cni "$@"
}

# One clean ADD and DEL first: the chains bridge keeps for the network
# itself are the baseline.
ip netns add "$(pod -1)"
ctl add plexus "/var/run/netns/$(pod -1)" >/dev/null
ctl del plexus "/var/run/netns/$(pod -1)" >/dev/null
count_chains() { ip netns exec "$node" nft list ruleset 2>/dev/null | grep -c '^[[:space:]]*chain ' || true; }
base_chains=$(count_chains)

killed=0 del_failed=0
for ((i = 0; i < N; i++)); do
    ip netns add "$(pod $i)"
    ctl add plexus "/var/run/netns/$(pod $i)" >/dev/null 2>&1 &
    ctlpid=$!
    # Kill while the delegate works: once it started, after 0-50 ms more.
    for ((t = 0; t < 400; t++)); do
        pgrep -f "$tmp/bin/slow-bridge" >/dev/null && break
        kill -0 "$ctlpid" 2>/dev/null || break
        sleep 0.005
    done
    sleep "0.0$((RANDOM % 6))"
    # The meta plugin runs as "$tmp/bin/plexus" with no arguments.
    if meta=$(pgrep -f "^$tmp/bin/plexus\$"); [[ -n $meta ]]; then
        kill -9 $meta 2>/dev/null && killed=$((killed + 1)) || true
    fi
    wait "$ctlpid" || true
    ctl del plexus "/var/run/netns/$(pod $i)" >/dev/null 2>&1 || del_failed=$((del_failed + 1))
done

# Let every orphan finish before counting.
while pgrep -f "$tmp/bin/" >/dev/null; do sleep 0.1; done
veths=$(ip -n "$node" -o link show type veth | wc -l)
pod_addrs=0
for ((i = 0; i < N; i++)); do
    pod_addrs=$((pod_addrs + $(ip -n "$(pod $i)" -o -4 addr show scope global | wc -l)))
done
leases=$(find "$tmp/ipam" -type f -regex '.*/[0-9.]+' | wc -l)
chains=$(($(count_chains) - base_chains))
# Temporaries of a plugin killed between create and rename are swept by a
# later DEL or GC once they are 10 minutes old; counted apart.
cache_files=$(find "$tmp/cache" -type f ! -name '.*tmp*' 2>/dev/null | wc -l)
cache_tmp=$(find "$tmp/cache" -type f -name '.*tmp*' 2>/dev/null | wc -l)
find "$tmp/cache" -type f ! -name '.*tmp*' 2>/dev/null | sed "s|$tmp/cache/|left in cacheDir: |" | head -20
echo "cycles=$N killed=$killed del_failed=$del_failed left: veths=$veths pod_addresses=$pod_addrs leases=$leases nft_chains=$chains plexus_cache_files=$cache_files (temporaries: $cache_tmp)"
