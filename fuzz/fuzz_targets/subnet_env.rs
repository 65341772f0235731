//! `subnet.env`, the lease file plexusd writes and plexus-vxlan reads
//! (flannel's `FLANNEL_*` keys; plexus-subnet's `SubnetEnv::parse`), and the
//! delegate config plexus-vxlan renders from it.
//!
//! Input: the file's text. Must hold: no panic; a file whose families each
//! have both a network and a subnet (as plexusd writes them) renders to a
//! text that parses to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::NetConf;
use plexus_fuzz::invariant;
use plexus_subnet::SubnetEnv;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(env) = SubnetEnv::parse(text) else {
        return;
    };
    let _ = env.lease_subnets();
    if env.network.is_some() == env.subnet.is_some()
        && env.ipv6_network.is_some() == env.ipv6_subnet.is_some()
    {
        let rendered = env.render();
        match SubnetEnv::parse(&rendered) {
            Ok(back) => invariant!(back == env, "{rendered:?}: {back:?} != {env:?}"),
            Err(e) => panic!("{rendered:?} does not parse again: {e}"),
        }
    }
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"overlay","type":"plexus-vxlan",
             "delegate":{"hairpinMode":true},"ipam":{"routes":[{"dst":"10.0.0.0/8"}]}}"#,
    )
    .expect("a valid config");
    let vconf = plexus_vxlan::config::VxlanConf::load(&conf).expect("a valid config");
    let _ = plexus_vxlan::render::delegate_config(&vconf, "overlay", "1.0.0", &env);
});
