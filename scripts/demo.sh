#!/usr/bin/env bash
# The Plexus demo: on a machine with no cluster, wire two pods with three
# networks each through the plexus meta plugin, using the example
# configuration in conf/ (cluster network on eth0, the "data" bridge NAD on
# net1, the "storage" macvlan NAD on net2), print their addresses, ping
# across every network, show `plexusctl status`, then delete everything.
#
# Everything happens in throwaway network namespaces (a "node" and two
# "pods"); nothing is configured in the root namespace and no packet leaves
# those namespaces. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it creates network namespaces)" >&2
  exit 1
fi

scripts/install-deps.sh
echo "==> building (release)" >&2
cargo build --release --bins -q
BIN=$PWD/target/release

W=$(mktemp -d /tmp/plexus-demo.XXXXXX)
TAG=plxdemo-$$
NODE=$TAG-node
PODS=(web db)
declare -A ANNOTATION=(
  [web]='[{"name":"data","namespace":"default"},{"name":"storage","namespace":"default","ips":["192.168.50.20/24"],"mac":"02:00:00:00:50:20"}]'
  [db]='data, default/storage'
)

ctl() { # ctl POD OP: plexusctl cni OP plexus <pod netns> inside the node
  local pod=$1 op=$2
  ip netns exec "$NODE" env \
    NETCONFPATH="$W/net.d" CNI_PATH="$BIN:/usr/lib/cni" PLEXUS_CACHE_DIR="$W/cache/runtime" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" \
    CAP_ARGS="$(jq -cn --arg a "${ANNOTATION[$pod]}" '{"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": $a}}')" \
    "$BIN/plexusctl" cni "$op" plexus "/var/run/netns/$TAG-$pod"
}

cleanup() {
  set +e
  for pod in "${PODS[@]}"; do
    [ -e "/var/run/netns/$TAG-$pod" ] && ctl "$pod" del >/dev/null 2>&1
    ip netns del "$TAG-$pod" 2>/dev/null
  done
  ip netns del "$NODE" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

# The example configuration, with its state directories moved into $W.
mkdir -p "$W/net.d" "$W/plexus/net.d" "$W/plexus/attachments"
sed "s|/var/lib/cni/networks|$W/ipam|g" conf/plexus/net.d/10-cluster.conflist >"$W/plexus/net.d/10-cluster.conflist"
for f in conf/plexus/attachments/*; do
  sed "s|/var/lib/cni/networks|$W/ipam|g" "$f" >"$W/plexus/attachments/$(basename "$f")"
done
jq --arg w "$W" '.plugins[0] += {confDir: ($w + "/plexus/net.d"), attachmentsDir: ($w + "/plexus/attachments"),
                                 cacheDir: ($w + "/cache/plexus"), logFile: ($w + "/plexus.log")}' \
  conf/plexus.conflist >"$W/net.d/00-plexus.conflist"

echo "==> node namespace $NODE (eth1 stands for the node's storage NIC)"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip -n "$NODE" link add eth1 type veth peer name eth1-peer
ip -n "$NODE" link set eth1 up
ip -n "$NODE" link set eth1-peer up

for pod in "${PODS[@]}"; do
  ip netns add "$TAG-$pod"
  echo
  echo "==> ADD pod default/$pod, annotation k8s.v1.cni.cncf.io/networks: ${ANNOTATION[$pod]}"
  ctl "$pod" add | jq -c '{cniVersion, ips: [.ips[].address]}'
done

addr() { ip -j -n "$TAG-$1" addr show dev "$2" | jq -r '.[0].addr_info[] | select(.family=="inet") | .local'; }
echo
printf '%-6s %-6s %-18s %s\n' POD IFACE ADDRESS MAC
for pod in "${PODS[@]}"; do
  for ifc in eth0 net1 net2; do
    printf '%-6s %-6s %-18s %s\n' "$pod" "$ifc" "$(addr "$pod" "$ifc")" \
      "$(ip -j -n "$TAG-$pod" link show dev "$ifc" | jq -r '.[0].address')"
  done
done

echo
fail=0
for ifc in eth0 net1 net2; do
  dst=$(addr db "$ifc")
  if ip netns exec "$TAG-web" ping -c1 -W2 -I "$ifc" "$dst" >/dev/null; then
    echo "ping web -> db over $ifc ($dst): ok"
  else
    echo "ping web -> db over $ifc ($dst): FAILED"; fail=1
  fi
done

echo
echo "==> plexusctl status"
"$BIN/plexusctl" status --cache-dir "$W/cache/plexus"

echo
for pod in "${PODS[@]}"; do
  echo "==> DEL pod default/$pod"
  ctl "$pod" del
done
left=$(find "$W/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)
echo "leases left after DEL: $left; links left in the node: $(ip -n "$NODE" -o link show type veth | grep -vc eth1 || true)"
[ "$fail" = 0 ] && [ "$left" = 0 ] && echo "demo: all good" || { echo "demo: something failed (log: $W/plexus.log)"; exit 1; }
