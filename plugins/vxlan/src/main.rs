//! Placeholder: plexus-vxlan is planned for a later issue. Until then the binary
//! answers every call with a CNI error that says it is not implemented.

fn main() {
    plexus_cni::plugin::run(&plexus_cni::plugin::NotImplemented {
        name: "plexus-vxlan",
        planned: "the vxlan network model needs its node daemon; it comes in a later issue",
    })
}
