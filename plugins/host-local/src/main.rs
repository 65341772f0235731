//! `plexus-host-local`: the CNI entry point. All logic lives in the library so
//! it can be tested without the binary.

fn main() {
    plexus_cni::plugin::run(&plexus_host_local::HostLocal)
}
