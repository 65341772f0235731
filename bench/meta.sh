#!/usr/bin/env bash
# The meta plugin's overhead: ADD+DEL of a pod with eth0 + 2 secondary
# networks (the example cluster network and the storage/data NADs from
# conf/) through `plexus`, versus running the same three delegate lists
# directly with `plexusctl cni` (same configs, interface names, CNI_ARGS and
# capability args, taken from the plan plexus wrote). Alternating rounds,
# medians, ratio. Everything happens in throwaway network namespaces.
#
#   sudo bench/meta.sh [ROUNDS]          (default 30)
#   PLEXUS_BIN_DIR=target/release sudo -E bench/meta.sh 50
#   PARALLEL=1 ...                       (parallelSecondary: true)
set -euo pipefail

ROUNDS=${1:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PLEXUS_BIN_DIR:-$ROOT/target/release}
[ -x "$BIN/plexus" ] || BIN=$ROOT/target/debug
[ -x "$BIN/plexus" ] && [ -x "$BIN/plexusctl" ] || {
    echo "build first: cargo build --release -p plexus -p plexusctl" >&2
    exit 1
}
[ -x /usr/lib/cni/bridge ] || { echo "needs containernetworking-plugins in /usr/lib/cni" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/plexus-bench.XXXXXX)
NODE=plxbench-node-$$
POD=plxbench-pod-$$
cleanup() {
    ip netns del "$POD" 2>/dev/null || true
    ip netns del "$NODE" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "$NODE"
ip netns add "$POD"
ip -n "$NODE" link set lo up
ip -n "$POD" link set lo up
ip -n "$NODE" link add uplink0 type veth peer name uplink0p
ip -n "$NODE" link set uplink0 up
ip -n "$NODE" link set uplink0p up

# The example configuration, localized (IPAM dir, macvlan uplink, paths).
python3 - "$ROOT/conf" "$TMP" "${PARALLEL:-0}" <<'EOF'
import json, os, sys, shutil
src, tmp, parallel = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def localize(t):
    return t.replace("/var/lib/cni/networks", f"{tmp}/ipam").replace(
        '\\"master\\":\\"eth1\\"', '\\"master\\":\\"uplink0\\"')
for sub, dst in [("plexus/net.d", "plexus-net.d"), ("plexus/attachments", "attachments")]:
    os.makedirs(f"{tmp}/{dst}")
    for f in os.listdir(f"{src}/{sub}"):
        open(f"{tmp}/{dst}/{f}", "w").write(localize(open(f"{src}/{sub}/{f}").read()))
conf = json.load(open(f"{src}/plexus.conflist"))
p = conf["plugins"][0]
p.update(confDir=f"{tmp}/plexus-net.d", attachmentsDir=f"{tmp}/attachments",
         cacheDir=f"{tmp}/pcache", logFile=f"{tmp}/plexus.log", logLevel="warn",
         parallelSecondary=parallel)
os.makedirs(f"{tmp}/net.d")
json.dump(conf, open(f"{tmp}/net.d/00-plexus.conflist", "w"))
EOF

export NETCONFPATH=$TMP/net.d CNI_PATH=$BIN:/usr/lib/cni PLEXUS_CACHE_DIR=$TMP/cache
CAPS='{"io.kubernetes.cri.pod-annotations":{"k8s.v1.cni.cncf.io/networks":"storage,data"}}'
ARGS='K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench'
NETNS=/var/run/netns/$POD
in_node() { nsenter --net="/var/run/netns/$NODE" "$@"; }

# One ADD through plexus to get the plan: the exact delegate calls.
in_node env CAP_ARGS="$CAPS" CNI_ARGS="$ARGS" "$BIN/plexusctl" cni add plexus "$NETNS" >/dev/null
mkdir -p "$TMP/direct.d"
python3 - "$TMP" > "$TMP/calls" <<'EOF'
import json, os, sys
tmp = sys.argv[1]
[plan] = [f for f in os.listdir(f"{tmp}/pcache/plans")]
plan = json.load(open(f"{tmp}/pcache/plans/{plan}"))
for i, a in enumerate(plan["attachments"]):
    json.dump(a["config"], open(f"{tmp}/direct.d/{i}.conflist", "w"))
    args = ";".join(f"{k}={v}" for k, v in a["cniArgs"])
    print("\t".join([a["config"]["name"], a["ifname"], args, json.dumps(a["capabilityArgs"])]))
EOF
in_node env CAP_ARGS="$CAPS" CNI_ARGS="$ARGS" "$BIN/plexusctl" cni del plexus "$NETNS"

now() { date +%s%N; }

via_plexus() {
    in_node env CAP_ARGS="$CAPS" CNI_ARGS="$ARGS" "$BIN/plexusctl" cni add plexus "$NETNS" >/dev/null
    in_node env CAP_ARGS="$CAPS" CNI_ARGS="$ARGS" "$BIN/plexusctl" cni del plexus "$NETNS"
}

# Direct: one node-netns entry, then the three lists ADDed in order and
# DELeted in reverse, exactly as plexus calls them.
direct_script=$(cat <<EOF
set -e
export NETCONFPATH=$TMP/direct.d
while IFS=\$'\t' read -r net ifname args caps; do
    CNI_IFNAME=\$ifname CNI_ARGS=\$args CAP_ARGS=\$caps "$BIN/plexusctl" cni add "\$net" "$NETNS" >/dev/null
done < "$TMP/calls"
tac "$TMP/calls" | while IFS=\$'\t' read -r net ifname args caps; do
    CNI_IFNAME=\$ifname CNI_ARGS=\$args CAP_ARGS=\$caps "$BIN/plexusctl" cni del "\$net" "$NETNS"
done
EOF
)
direct() { in_node bash -c "$direct_script"; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: > "$TMP/t_plexus"
: > "$TMP/t_direct"
via_plexus; direct # warm caches
for ((i = 0; i < ROUNDS; i++)); do
    t0=$(now); via_plexus; t1=$(now); direct; t2=$(now)
    echo $(((t1 - t0) / 1000)) >> "$TMP/t_plexus"
    echo $(((t2 - t1) / 1000)) >> "$TMP/t_direct"
done
mp=$(median < "$TMP/t_plexus")
md=$(median < "$TMP/t_direct")
# The direct side enters the node netns once per round (one nsenter for
# six plexusctl runs); plexus needs two (ADD, DEL).
echo "binaries: $BIN  rounds: $ROUNDS  parallelSecondary: ${PARALLEL:-0}"
echo "pod: eth0 (bridge) + net1 (macvlan) + net2 (bridge), ADD+DEL per round"
awk -v p="$mp" -v d="$md" 'BEGIN {
    printf "median via plexus : %8.1f ms\n", p / 1000
    printf "median direct     : %8.1f ms\n", d / 1000
    printf "ratio plexus/direct: %.3f (overhead %+.1f%%)\n", p / d, (p / d - 1) * 100
}'
