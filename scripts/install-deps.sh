#!/usr/bin/env bash
# Install everything the build, the tests and the demo need on a fresh Debian
# machine. Idempotent: a package already present is not fetched again.
set -euo pipefail

PACKAGES=(
  containernetworking-plugins # reference plugins for differential and chain tests
  iproute2 iputils-ping nftables iptables
  busybox-static qemu-system-x86 # the test VM (tests/vm)
  time jq
  podman runc # a real libcni client for the meta plugin test
  bird2 gobgpd frr # real BGP routers for the interoperability tests; FRR's bgpd and bfdd run alone
  etcd-server etcd-client # the overlay's store (tests start etcd in a netns)
  util-linux iperf3 curl # nsenter for the overlay tests; bench/overlay.sh: throughput, etcd's JSON API
  fping # many pings from one process: the multi-network tests' reachability checks, bench/cluster.sh
  graphviz # plexusctl topology --format svg (the demo draws the cluster)
  python3-venv # deploy/validate.sh: kubernetes-validate in its own venv (below)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# deploy/validate.sh: kubectl for `kubectl kustomize` (Debian's kubernetes-client
# unless a kubectl is already there: its kustomize is older, and deploy/ is
# written so that both build it), and PyPI's kubernetes-validate, pinned, which
# ships the Kubernetes OpenAPI schemas, in a venv of its own.
if ! command -v kubectl >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install kubernetes-client (kubectl)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
KUBERNETES_VALIDATE_VERSION=1.37.0
venv=${PLEXUS_TOOLS_VENV:-/opt/plexus-tools/venv}
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE_VERSION"; then
  echo "install-deps: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
