#!/usr/bin/env bash
# The Plexus demo: a three-node cluster on this machine, each pod on three
# networks wired by the plexus meta plugin:
#
#   eth0  the flannel-style overlay (plexus-vxlan, plexusd's subnet lease, VXLAN between nodes)
#   net1  the calico-style routed network (plexus-bgp-routes by annotation, plexusd's blocks, BGP)
#   net2  macvlan on the node's eth1, its address from plexus-cluster-ipam (unique across the cluster)
#
# It installs what it needs, builds (release), starts a real etcd and three
# nodes running plexusd, configures both networks, starts BIRD as the
# operator's router, creates one pod per node, shows the routing tables,
# leases, BGP sessions, blocks and the topology picture, pings between pods
# on different nodes over each network with the hops of one overlay and one
# routed path, then deletes the pods, stops everything it started and shows
# that nothing is left.
#
# Layout, all in network namespaces this script creates (private addresses
# only, nothing in the root namespace, no packet leaves these namespaces):
#
#   lan netns: bridge lan0 (underlay 10.210.0.0/24) ─┬─ etcd   10.210.0.2
#              bridge lan1 (macvlan 192.168.60.0/24) ├─ router 10.210.0.100 (BIRD, AS 65000)
#                                                    └─ n1..n3 10.210.0.11-13 (plexusd, pods)
#
# Needs root. PLEXUS_DEMO_SVG names the SVG file it writes (default
# /tmp/plexus-demo-topology.svg).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it creates network namespaces)" >&2
  exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

step "installing what the demo needs (scripts/install-deps.sh)"
scripts/install-deps.sh
step "building Plexus (release)"
cargo build --release --bins -q
BIN=$PWD/target/release
SVG=${PLEXUS_DEMO_SVG:-/tmp/plexus-demo-topology.svg}

W=$(mktemp -d /tmp/plexus-demo.XXXXXX)
T=plxdemo$$                      # every namespace name starts with this
LAN=$T-lan ETCDNS=$T-etcd ROUTER=$T-router
NODES=(n1 n2 n3)
UNDERLAY=10.210.0
ETCD_IP=$UNDERLAY.2 ROUTER_IP=$UNDERLAY.100
STORE=etcd://$ETCD_IP:2379
POOL=10.96.0.0/16
PIDS=()                          # every process the demo started
PODS_ADDED=()

node_ip() { echo "$UNDERLAY.$((10 + ${1#n}))"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
etcdctl() { in_ns "$ETCDNS" env ETCDCTL_API=3 /usr/bin/etcdctl --endpoints "http://$ETCD_IP:2379" "$@"; }
# plexusctl inside node n1, where the store is reachable.
ctl() { in_ns "$T-n1" "$BIN/plexusctl" "$@"; }
annotation() { # annotation POD-INDEX: net1 routed, net2 macvlan (cluster IPAM gives the address)
  echo "[{\"name\":\"routed\",\"interface\":\"net1\"},{\"name\":\"macvlan\",\"interface\":\"net2\"}]"
}
meta() { # meta OP NODE POD: plexusctl cni OP plexus <pod netns>, as the runtime on NODE calls the meta plugin
  local op=$1 node=$2 pod=$3
  in_ns "$T-$node" env NETCONFPATH="$W/$node/net.d" CNI_PATH="$BIN:/usr/lib/cni" \
    PLEXUS_CACHE_DIR="$W/$node/runtime-cache" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" \
    CAP_ARGS="$(jq -cn --arg a "$(annotation "${pod#pod}")" '{"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": $a}}')" \
    "$BIN/plexusctl" cni "$op" plexus "/var/run/netns/$T-$pod"
}
wait_until() { # wait_until SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then echo "demo: timed out waiting for $what" >&2; return 1; fi
    sleep 0.2
  done
}
start() { # start NS LOG COMMAND...: run COMMAND in NS in the background, remember its pid
  local ns=$1 log=$2; shift 2
  ip netns exec "$ns" "$@" >"$log" 2>&1 &
  PIDS+=($!)
}

cleanup() {
  local rc=$?
  set +e
  for pod in "${PODS_ADDED[@]}"; do
    meta del "${pod%%:*}" "${pod#*:}" >/dev/null 2>&1
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$T-"); do ip netns del "$ns"; done
  if ((rc != 0)); then
    echo "demo: failed; logs kept in $W" >&2
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT

step "underlay: bridges lan0 (nodes, etcd, router) and lan1 (the macvlan segment) in $LAN"
ip netns add "$LAN"
for br in lan0 lan1; do
  ip -n "$LAN" link add $br type bridge
  ip -n "$LAN" link set $br up
done
plug() { # plug NS IFNAME BRIDGE HOST-END [ADDRESS/LEN]
  ip -n "$LAN" link add "$4" type veth peer name "$2" netns "$1"
  ip -n "$LAN" link set "$4" master "$3" up
  [ -n "${5:-}" ] && ip -n "$1" addr add "$5" dev "$2"
  ip -n "$1" link set "$2" up
}
for ns in "$ETCDNS" "$ROUTER" "${NODES[@]/#/$T-}"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
plug "$ETCDNS" eth0 lan0 v-etcd "$ETCD_IP/24"
plug "$ROUTER" eth0 lan0 v-router "$ROUTER_IP/24"
for n in "${NODES[@]}"; do
  plug "$T-$n" eth0 lan0 "v-$n" "$(node_ip "$n")/24"
  plug "$T-$n" eth1 lan1 "m-$n"
  in_ns "$T-$n" sysctl -qw net.ipv4.ip_forward=1
done

step "etcd at $ETCD_IP:2379 (the cluster store)"
start "$ETCDNS" "$W/etcd.log" /usr/bin/etcd --name demo --data-dir "$W/etcd" \
  --listen-client-urls "http://$ETCD_IP:2379" --advertise-client-urls "http://$ETCD_IP:2379" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster demo=http://127.0.0.1:2380
wait_until 30 "etcd" etcdctl endpoint health
# The underlay's ports take a moment to forward: wait until every node reaches the store.
for n in "${NODES[@]}"; do
  wait_until 20 "$n reaching etcd" in_ns "$T-$n" ping -c1 -W1 "$ETCD_IP"
done

step "overlay: flannel's network config at /coreos.com/network/config (conf/overlay/network-config.json)"
etcdctl put /coreos.com/network/config "$(jq -c . conf/overlay/network-config.json)" >/dev/null
etcdctl get /coreos.com/network/config --print-value-only
step "routed network: pool $POOL, AS 64512 with the node-to-node mesh, the router $ROUTER_IP (AS 65000) as a global peer"
ctl --store "$STORE" pool add default "$POOL"
ctl --store "$STORE" bgp set --as 64512
ctl --store "$STORE" bgp peer add "$ROUTER_IP" --as 65000

step "BIRD in $ROUTER: the operator's router, announcing 172.16.100.0/24, peering with every node"
{
  echo "router id $ROUTER_IP;"
  echo 'protocol device {}'
  echo 'protocol kernel k4 { ipv4 { import none; export none; }; }'
  echo 'protocol static office { ipv4; route 172.16.100.0/24 blackhole; }'
  echo 'template bgp plexus { local as 65000; ipv4 { import all; export where proto = "office"; }; }'
  for n in "${NODES[@]}"; do echo "protocol bgp node_$n from plexus { neighbor $(node_ip "$n") as 64512; }"; done
} >"$W/bird.conf"
start "$ROUTER" "$W/bird.log" bird -f -c "$W/bird.conf" -s "$W/bird.ctl" -P "$W/bird.pid"
wait_until 20 "BIRD's control socket" test -S "$W/bird.ctl"

step "plexusd on ${NODES[*]} (both networks: the store holds flannel's config and a pool), and each node's CNI config"
for n in "${NODES[@]}"; do
  d=$W/$n
  mkdir -p "$d/run" "$d/net.d" "$d/attachments"
  jq --arg d "$d" '.plugins[0] += {subnetFile: ($d + "/run/subnet.env"), dataDir: ($d + "/vxlan"),
                                   ipam: {dataDir: ($d + "/ipam")}}' \
    conf/overlay/10-plexus-vxlan.conflist >"$d/net.d/cbr0.conflist"
  jq --arg d "$d" '.plugins[0] += {clusterNetwork: "cbr0", confDir: ($d + "/net.d"), attachmentsDir: ($d + "/attachments"),
                                   cacheDir: ($d + "/meta-cache"), logFile: ($d + "/plexus.log")}' \
    conf/plexus.conflist >"$d/net.d/00-plexus.conflist"
  sed "s|/run/plexus|$d/run|" conf/cluster/attachments/routed.json >"$d/attachments/routed.json"
  sed "s|/run/plexus|$d/run|" conf/cluster/attachments/macvlan.json >"$d/attachments/macvlan.json"
  start "$T-$n" "$d/plexusd.log" "$BIN/plexusd" --node-name "$n" --store "$STORE" \
    --public-ip "$(node_ip "$n")" --iface eth0 --run-dir "$d/run"
done
for n in "${NODES[@]}"; do
  wait_until 30 "plexusd on $n" test -e "$W/$n/run/ready"
done
bgp_up() { # every session of node $1 Established (2 mesh peers + the router)
  in_ns "$T-$1" "$BIN/plexusctl" bgp status --json --run-dir "$W/$1/run" |
    jq -e '(.peers | length) == 3 and all(.peers[]; .state == "Established")'
}
for n in "${NODES[@]}"; do
  wait_until 60 "BGP sessions of $n" bgp_up "$n"
done
echo "every plexusd is ready and its BGP sessions are Established"

step "pods: one per node through the meta plugin (eth0 overlay, net1 routed by annotation, net2 macvlan from cluster IPAM)"
for i in 1 2 3; do
  n=n$i pod=pod$i
  ip netns add "$T-$pod"
  ip -n "$T-$pod" link set lo up
  PODS_ADDED+=("$n:$pod")
  echo "ADD $pod on $n, k8s.v1.cni.cncf.io/networks: $(annotation $i)"
  meta add "$n" "$pod" >/dev/null
done

addr() { ip -j -n "$T-$1" addr show dev "$2" | jq -r '[.[0].addr_info[] | select(.family == "inet") | .local][0]'; }
step "addresses"
printf '%-6s %-4s %-16s %-16s %s\n' POD NODE eth0 net1 net2
for i in 1 2 3; do
  printf '%-6s %-4s %-16s %-16s %s\n' "pod$i" "n$i" "$(addr pod$i eth0)" "$(addr pod$i net1)" "$(addr pod$i net2)"
done

step "n1's routing table: flannel.1 routes to the other nodes' subnets, /32s to its routed pods (proto 112), its block (113), routes learned over BGP (114, bird)"
ip -n "$T-n1" route show
step "subnet leases in etcd (flannel's layout)"
etcdctl get --prefix /coreos.com/network/subnets/ | paste - - | sed 's|/coreos.com/network/subnets/||'
step "plexusctl bgp status on n1"
ctl bgp status --run-dir "$W/n1/run"
step "BIRD's view (birdc show route)"
in_ns "$ROUTER" birdc -s "$W/bird.ctl" show route | sed 1d
step "plexusctl ipam show --blocks (the routed pool, and the cluster-IPAM range net2 takes its addresses from)"
ctl --store "$STORE" ipam show --blocks
step "plexusctl status on n1 (the meta plugin's attachments and their network model)"
ctl status --cache-dir "$W/n1/meta-cache"

TOPO=(topology --store "$STORE")
for n in "${NODES[@]}"; do TOPO+=(--run-dir "$n=$W/$n/run" --cache-dir "$n=$W/$n/meta-cache"); done
step "plexusctl topology (the SVG goes to $SVG)"
ctl "${TOPO[@]}" --format svg --output "$SVG"
ctl "${TOPO[@]}"

step "pings between pods on different nodes over each network"
fail=0
for pair in "1 2" "1 3" "2 3"; do
  set -- $pair
  for ifc in eth0 net1 net2; do
    dst=$(addr "pod$2" "$ifc")
    if in_ns "$T-pod$1" ping -c1 -W2 "$dst" >/dev/null; then
      echo "pod$1 (n$1) -> pod$2 (n$2) over $ifc, $dst: ok"
    else
      echo "pod$1 (n$1) -> pod$2 (n$2) over $ifc, $dst: FAILED"; fail=1
    fi
  done
done

step "hops pod1 -> pod2 over the overlay (eth0: pod1's gateway cni0 on n1, flannel.1 on n2, pod2)"
in_ns "$T-pod1" busybox traceroute -n -q 1 -w 1 -m 5 "$(addr pod2 eth0)" 2>&1 || fail=1
step "hops pod1 -> pod2 over the routed network (net1: n1, then n2 over the underlay, pod2)"
in_ns "$T-pod1" busybox traceroute -n -q 1 -w 1 -m 5 "$(addr pod2 net1)" 2>&1 || fail=1

step "deleting the pods"
for i in 1 2 3; do
  meta del "n$i" "pod$i"
  ip netns del "$T-pod$i"
  echo "pod$i deleted"
done
PODS_ADDED=()

step "what the pods left: links, routed addresses, IPAM leases, meta cache files"
left=0
for n in "${NODES[@]}"; do
  links=$(ip -n "$T-$n" -o link show | awk -F': ' '{print $2}' | grep -Ev '^(lo|eth0|eth1|flannel\.1|cni0)(@|$)' || true)
  routes=$(ip -n "$T-$n" route show proto 112)
  files=$(find "$W/$n/meta-cache" "$W/$n/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' 2>/dev/null || true)
  echo "$n: links [${links//$'\n'/ }] pod routes [${routes//$'\n'/; }] files [${files//$'\n'/ }]"
  [ -z "$links$routes$files" ] || left=1
done
in_use=$(ctl --store "$STORE" ipam show --json | jq '[.pools[].inUse] | add')
echo "routed addresses in use: $in_use"
[ "$in_use" = 0 ] || left=1
cluster_in_use=$(ctl --store "$STORE" ipam show --json | jq '[.clusterRanges[].used] | add // 0')
echo "cluster-IPAM addresses in use: $cluster_in_use"
[ "$cluster_in_use" = 0 ] || left=1

step "stopping plexusd, BIRD and etcd (pids ${PIDS[*]}) and removing the namespaces"
for pid in "${PIDS[@]}"; do kill "$pid"; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
running=0
for pid in "${PIDS[@]}"; do
  if kill -0 "$pid" 2>/dev/null; then echo "pid $pid still running"; running=$((running + 1)); left=1; fi
done
PIDS=()
for ns in $(ip netns list | awk '{print $1}' | grep "^$T-"); do ip netns del "$ns"; done
nss=$(ip netns list | grep -c "^$T-" || true)
echo "namespaces left: $nss; processes left: $running"
[ "$nss" = 0 ] || left=1

echo
if [ "$fail" = 0 ] && [ "$left" = 0 ]; then
  echo "demo: all good (the topology picture is in $SVG)"
else
  echo "demo: something failed (logs in $W)"
  trap - EXIT
  exit 1
fi
