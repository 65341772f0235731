//! Placeholder until its issue lands: answers every call with a CNI error.

fn main() {
    plexus_cni::plugin::run(&plexus_cni::plugin::NotImplemented {
        name: "plexus-ipvlan",
        planned: "being implemented",
    })
}
