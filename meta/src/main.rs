//! Placeholder until the meta plugin lands: answers every call with a CNI error.

fn main() {
    plexus_cni::plugin::run(&plexus_cni::plugin::NotImplemented {
        name: "plexus",
        planned: "being implemented",
    })
}
