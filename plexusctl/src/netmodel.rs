//! The network model behind a pod interface, named after the delegate
//! plugin that made it: what `plexusctl status` and `plexusctl topology`
//! show so an operator sees "overlay" or "routed" rather than a plugin name.

/// The model of a delegate's first plugin type: Plexus' own plugins and
/// the upstream ones they stand in for map to one name; any other type is
/// shown as itself.
pub fn network_model(plugin_type: &str) -> &str {
    match plugin_type {
        "plexus-vxlan" | "flannel" => "overlay",
        "plexus-bgp-routes" | "calico" => "routed",
        "plexus-bridge" | "bridge" => "bridge",
        "plexus-ipvlan" | "ipvlan" => "ipvlan",
        "macvlan" => "macvlan",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plexus_and_upstream_plugins_share_a_model() {
        for (t, want) in [
            ("plexus-vxlan", "overlay"),
            ("flannel", "overlay"),
            ("plexus-bgp-routes", "routed"),
            ("calico", "routed"),
            ("plexus-bridge", "bridge"),
            ("bridge", "bridge"),
            ("plexus-ipvlan", "ipvlan"),
            ("ipvlan", "ipvlan"),
            ("macvlan", "macvlan"),
            ("ptp", "ptp"),
            ("sriov", "sriov"),
        ] {
            assert_eq!(network_model(t), want, "{t}");
        }
    }
}
