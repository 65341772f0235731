//! flannel's network config (`<prefix>/config` in the store, or
//! net-conf.json), parsed, defaulted and validated as flannel does
//! (plexus-subnet's `NetworkConfig::parse`); then a subnet allocated from
//! it, as a node joining the overlay would.
//!
//! Input: the config JSON. Must hold: no panic, no endless search; a
//! config that parses hands out subnets that fit it (and distinct ones
//! while free ones are left), and the subnet.env written for such a lease
//! parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_fuzz::invariant;
use plexus_subnet::alloc::free_subnets;
use plexus_subnet::{Lease, LeaseAttrs, NetworkConfig, SubnetEnv};

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = NetworkConfig::parse(data) else {
        return;
    };
    let mut leases: Vec<Lease> = Vec::new();
    for seed in [0u64, 1, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
        let (subnet, subnet6) = match free_subnets(&cfg, &leases, seed) {
            Ok(s) => s,
            // Every subnet taken: only a tiny range runs out in four picks.
            Err(plexus_subnet::SubnetError::Exhausted(_)) => break,
            Err(e) => panic!("{cfg:?}: {e}"),
        };
        let lease = Lease {
            subnet,
            subnet6,
            attrs: LeaseAttrs::default(),
        };
        invariant!(cfg.fits(&lease), "{cfg:?}: {lease:?}");
        invariant!(
            leases
                .iter()
                .all(|l| (subnet.is_none() || l.subnet != subnet)
                    && (subnet6.is_none() || l.subnet6 != subnet6)),
            "{cfg:?}: {lease:?} handed out twice"
        );
        let env = SubnetEnv::new(&cfg, &lease, 1450, true);
        let text = env.render();
        match SubnetEnv::parse(&text) {
            Ok(back) => invariant!(back == env, "{text:?}"),
            Err(e) => panic!("{cfg:?}: {text:?}: {e}"),
        }
        leases.push(lease);
    }
});
