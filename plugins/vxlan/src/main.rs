//! `plexus-vxlan`: the CNI entry point. All logic lives in the library.

fn main() {
    plexus_cni::plugin::run(&plexus_vxlan::VxlanPlugin)
}
