//! flannel's subnet leases as plexusd reads them from the store (and as
//! flanneld writes them): the key `<ip>-<len>[&<ip6>-<len6>]` under
//! `<prefix>/subnets/` and the value JSON (`PublicIP`, `BackendType`,
//! `BackendData` ...), plexus-subnet's `Lease::from_kv`; then the kernel
//! entries the overlay would program for such a remote lease.
//!
//! Input: the key on the first line, the value after it. Must hold: no
//! panic; the key and the value, written as plexusd writes them, read back
//! as the same lease.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_fuzz::{first_line, invariant};
use plexus_subnet::{Lease, LeaseAttrs};
use plexusd::overlay::plan::{entries_for, BackendPlan, Local};

fuzz_target!(|data: &[u8]| {
    let Some((key, value)) = first_line(data) else {
        return;
    };
    // A deleted key: its subnets from the key alone.
    if let Ok(subnets) = Lease::parse_key(key) {
        let again = Lease::parse_key(
            &Lease {
                subnet: subnets.0,
                subnet6: subnets.1,
                attrs: LeaseAttrs::default(),
            }
            .key(),
        );
        invariant!(again.as_ref().ok() == Some(&subnets), "{key:?}: {again:?}");
    }
    let Ok(attrs) = LeaseAttrs::from_json(value) else {
        return;
    };
    let json = attrs.to_json();
    match LeaseAttrs::from_json(json.as_bytes()) {
        Ok(back) => invariant!(back == attrs, "{json}: {back:?} != {attrs:?}"),
        Err(e) => panic!("{json} does not read back: {e}"),
    }
    let Ok(lease) = Lease::from_kv(key, value) else {
        return;
    };
    invariant!(lease.attrs == attrs, "{lease:?}");
    let underlay_v4 = Some(("eth0".to_string(), "192.168.0.0/16".parse().unwrap()));
    let underlay_v6 = Some(("eth0".to_string(), "fd00:1::/64".parse().unwrap()));
    for backend in [
        BackendPlan::Vxlan {
            dev_v4: Some("flannel.1".into()),
            dev_v6: Some("flannel-v6.1".into()),
            direct_routing: true,
        },
        BackendPlan::Vxlan {
            dev_v4: Some("flannel.1".into()),
            dev_v6: None,
            direct_routing: false,
        },
        BackendPlan::HostGw,
    ] {
        let local = Local {
            own: (Some("10.5.1.0/24".parse().unwrap()), None),
            backend,
            underlay_v4: underlay_v4.clone(),
            underlay_v6: underlay_v6.clone(),
        };
        let _ = entries_for(&local, &lease);
    }
});
