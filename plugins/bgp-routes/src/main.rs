//! Placeholder: plexus-bgp-routes is planned for a later issue. Until then the binary
//! answers every call with a CNI error that says it is not implemented.

fn main() {
    plexus_cni::plugin::run(&plexus_cni::plugin::NotImplemented {
        name: "plexus-bgp-routes",
        planned: "the bgp-routes network model needs its node daemon; it comes in a later issue",
    })
}
