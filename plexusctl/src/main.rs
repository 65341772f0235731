fn main() { eprintln!("plexusctl: not implemented yet (placeholder)"); std::process::exit(1) }
