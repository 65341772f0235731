#!/usr/bin/env bash
# scripts/build-dist.sh: the CNI plugin binaries as we ship them.
#
#   scripts/build-dist.sh            prints the directory holding the binaries
#
# Plugins are exec'd once per pod and per call, so what matters is start-up
# time and peak RSS, not throughput. Hence, for the plugin binaries only:
#   - `--profile dist` (Cargo.toml): release with opt-level "z". Smaller code
#     means fewer page faults: a plugin's peak RSS is mostly the pages of its
#     own text it touches.
#   - static glibc and a non-PIE executable (`+crt-static`,
#     `relocation-model=static`): no dynamic loader, no libc/libm/libgcc
#     mappings, no relocations to apply at start. The reference plugins are
#     static Go binaries too.
# The flags go through RUSTFLAGS with an explicit `--target`, which keeps them
# off build scripts and proc-macros (those must stay dynamic). The meta plugin
# and plexusctl are not built here: they use the system resolver (NSS) for
# API-server names, which static glibc cannot load reliably.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    cargo build -q --profile dist --target "$triple" \
    -p plexus-bridge -p plexus-host-local -p plexus-ipvlan -p plexus-vxlan -p plexus-bgp-routes -p plexus-cluster-ipam \
    2> >(grep -v -e "statically linked applications requires at runtime" -e "^warning: .*getaddrinfo" >&2)
echo "$PWD/target/$triple/dist"
