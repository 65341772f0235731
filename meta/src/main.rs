//! The `plexus` CNI plugin binary; everything lives in the library.

fn main() {
    plexus_cni::plugin::run(&plexus_meta::Meta::with_api())
}
