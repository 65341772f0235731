//! Which remote leases the overlay may program: a lease read from the
//! store is believed only if it fits the network config (inside Network,
//! of SubnetLen; SubnetMin/SubnetMax bound what is handed out, not what
//! exists, so a narrowed range strands no node), overlaps neither this
//! node's own subnet nor its underlay, and names a public address that is
//! another node's (not ours, not a loopback or multicast one). A lease
//! that fails is skipped: a `/25` planted inside a node's `/24` would
//! otherwise take half of its pods, and one carrying our own address would
//! replace our cni0 route.

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_subnet::{Lease, NetworkConfig};

use super::plan::{lease_id, Local};

/// Why `lease` must not be programmed, if it must not.
pub fn remote_lease(
    cfg: &NetworkConfig,
    local: &Local,
    own: &Lease,
    lease: &Lease,
) -> Result<(), String> {
    if lease_id(lease) == local.own {
        return Ok(());
    }
    if lease.subnet.is_none() && lease.subnet6.is_none() {
        return Err("the lease names no subnet".into());
    }
    if let Some(sn) = lease.subnet {
        let ok = cfg.network.is_some_and(|n| n.contains(&sn))
            && sn.prefix_len() == cfg.subnet_len
            && sn.trunc() == sn;
        if !ok {
            return Err(format!(
                "subnet {sn} is not a /{} of the network {:?}",
                cfg.subnet_len, cfg.network
            ));
        }
    }
    if let Some(sn) = lease.subnet6 {
        let ok = cfg.ipv6_network.is_some_and(|n| n.contains(&sn))
            && sn.prefix_len() == cfg.ipv6_subnet_len
            && sn.trunc() == sn;
        if !ok {
            return Err(format!(
                "subnet {sn} is not a /{} of the IPv6 network {:?}",
                cfg.ipv6_subnet_len, cfg.ipv6_network
            ));
        }
    }
    let theirs: Vec<IpNet> = lease
        .subnet
        .map(IpNet::V4)
        .into_iter()
        .chain(lease.subnet6.map(IpNet::V6))
        .collect();
    let mut mine: Vec<IpNet> = own
        .subnet
        .map(IpNet::V4)
        .into_iter()
        .chain(own.subnet6.map(IpNet::V6))
        .collect();
    // The first `own_subnets` of `mine` are pod subnets, the rest underlay.
    let own_subnets = mine.len();
    mine.extend(local.underlay_v4.as_ref().map(|(_, n)| IpNet::V4(*n)));
    mine.extend(local.underlay_v6.as_ref().map(|(_, n)| IpNet::V6(*n)));
    for t in &theirs {
        if let Some(m) = mine.iter().find(|m| m.contains(t) || t.contains(*m)) {
            return Err(format!(
                "subnet {t} overlaps {m}, this node's own subnet or underlay"
            ));
        }
    }
    let publics = [
        lease.attrs.public_ip.map(IpAddr::V4),
        lease.attrs.public_ipv6.map(IpAddr::V6),
    ];
    let ours = [
        own.attrs.public_ip.map(IpAddr::V4),
        own.attrs.public_ipv6.map(IpAddr::V6),
    ];
    for ip in publics.into_iter().flatten() {
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(format!("public address {ip} is not a unicast address"));
        }
        if ours.contains(&Some(ip)) {
            return Err(format!(
                "it carries this node's own public address {ip} (a lease conflict)"
            ));
        }
        let pods = theirs.iter().chain(&mine[..own_subnets]);
        if let Some(n) = pods.into_iter().find(|n| n.contains(&ip)) {
            return Err(format!(
                "public address {ip} lies inside the pod subnet {n}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::plan::BackendPlan;
    use plexus_subnet::{LeaseAttrs, VxlanBackendData};

    fn lease(subnet: &str, public: &str) -> Lease {
        Lease {
            subnet: Some(subnet.parse().unwrap()),
            subnet6: None,
            attrs: LeaseAttrs {
                public_ip: Some(public.parse().unwrap()),
                backend_type: "vxlan".into(),
                backend_data: Some(VxlanBackendData {
                    vni: 1,
                    vtep_mac: [2, 0, 0, 0, 0, 9],
                }),
                ..Default::default()
            },
        }
    }

    fn setup() -> (NetworkConfig, Local, Lease) {
        let cfg = NetworkConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#)
            .unwrap();
        let own = lease("10.5.1.0/24", "192.168.0.1");
        let local = Local {
            own: lease_id(&own),
            backend: BackendPlan::Vxlan {
                dev_v4: Some("flannel.1".into()),
                dev_v6: None,
                direct_routing: false,
            },
            underlay_v4: Some(("eth0".into(), "192.168.0.0/24".parse().unwrap())),
            underlay_v6: None,
        };
        (cfg, local, own)
    }

    #[test]
    fn a_good_remote_lease_and_our_own_pass() {
        let (cfg, local, own) = setup();
        assert_eq!(
            remote_lease(&cfg, &local, &own, &lease("10.5.2.0/24", "192.168.0.2")),
            Ok(())
        );
        assert_eq!(remote_lease(&cfg, &local, &own, &own), Ok(()));
        // Below SubnetMin (handed out before the range was narrowed): fine.
        assert_eq!(
            remote_lease(&cfg, &local, &own, &lease("10.5.0.0/24", "192.168.0.4")),
            Ok(())
        );
        // A node on another subnet of the underlay network is fine too.
        assert_eq!(
            remote_lease(&cfg, &local, &own, &lease("10.5.3.0/24", "172.16.0.3")),
            Ok(())
        );
    }

    #[test]
    fn hostile_leases_are_refused() {
        let (cfg, local, own) = setup();
        for (l, why) in [
            (lease("10.6.2.0/24", "192.168.0.2"), "not a /24"),
            (lease("10.5.1.0/25", "192.168.0.2"), "not a /24"),
            (lease("10.5.2.0/24", "192.168.0.1"), "own public address"),
            (lease("10.5.2.0/24", "127.0.0.1"), "not a unicast"),
            (lease("10.5.2.0/24", "10.5.2.7"), "inside the pod subnet"),
            (lease("10.5.2.0/24", "10.5.1.9"), "inside the pod subnet"),
        ] {
            let got = remote_lease(&cfg, &local, &own, &l).unwrap_err();
            assert!(got.contains(why), "{l:?}: {got}");
        }
        // A network that contains the underlay: a lease there overlaps it.
        let wide =
            NetworkConfig::parse(br#"{"Network":"192.168.0.0/16","Backend":{"Type":"vxlan"}}"#)
                .unwrap();
        let mut local5 = local;
        local5.underlay_v4 = Some(("eth0".into(), "192.168.5.0/24".parse().unwrap()));
        let got = remote_lease(&wide, &local5, &own, &lease("192.168.5.0/24", "172.16.0.3"));
        assert!(got.unwrap_err().contains("underlay"));
    }
}
