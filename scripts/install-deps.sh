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
  bird2 gobgpd # real BGP routers for plexus-bgp's interoperability tests
  etcd-server etcd-client # the overlay's store (tests start etcd in a netns)
  util-linux iperf3 curl # nsenter for the overlay tests; bench/overlay.sh: throughput, etcd's JSON API
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
