//! A node set up by hand exactly as flanneld (vxlan backend) sets one up,
//! to prove a Plexus node and a flannel node share one overlay: `flannel.1`
//! (VNI 1, port 8472, learning off) holding the subnet's .0/32, `cni0` with
//! .1, the lease JSON in etcd under a 24 h etcd lease, and for every other
//! lease a permanent neighbour, an FDB entry to its public IP and an onlink
//! route via its .0, in flanneld's order.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{key_to_cidr, network_address, Cluster, Node, Pod};
use crate::{run_ok, Netns};

pub const DEV: &str = "flannel.1";

/// What the hand-made node holds.
#[derive(Debug, Clone)]
pub struct FlanneldNode {
    /// `10.5.200.0/24`.
    pub subnet: String,
    /// The lease key, `10.5.200.0-24`.
    pub key: String,
    pub vtep_mac: String,
}

/// `10.5.200.0/24` + n → `10.5.200.n`.
fn host(subnet: &str, n: u32) -> String {
    let base: Ipv4Addr = network_address(subnet).parse().unwrap();
    Ipv4Addr::from(u32::from(base) + n).to_string()
}

fn prefix_len(subnet: &str) -> &str {
    subnet.split('/').nth(1).unwrap()
}

/// Set up `node` as flanneld would with `subnet` as its lease, and write
/// the lease. Remote entries come with [`sync`].
pub fn configure(c: &Cluster, node: &Node, subnet: &str, mtu: u32) -> FlanneldNode {
    let me = configure_device(node, subnet, mtu);
    c.put_lease(
        &me.key,
        &json!({
            "PublicIP": node.ip,
            "PublicIPv6": null,
            "BackendType": "vxlan",
            "BackendData": {"VNI": 1, "VtepMAC": me.vtep_mac}
        }),
    );
    me
}

/// The node side alone (for a store other than etcd): `flannel.1` and
/// `cni0` for `subnet`.
pub fn configure_device(node: &Node, subnet: &str, mtu: u32) -> FlanneldNode {
    let ns = &node.ns;
    // A locally administered MAC, fixed so the lease and the device agree.
    let last: u8 = node.ip.rsplit('.').next().unwrap().parse().unwrap();
    let vtep_mac = format!("0e:fa:00:00:00:{last:02x}");
    let mtu = mtu.to_string();
    ns.ip(&[
        "link",
        "add",
        DEV,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        &node.ip,
        "dev",
        "eth0",
        "dstport",
        "8472",
        "nolearning",
    ]);
    ns.ip(&["link", "set", DEV, "address", &vtep_mac, "mtu", &mtu]);
    ns.ip(&[
        "addr",
        "add",
        &format!("{}/32", network_address(subnet)),
        "dev",
        DEV,
    ]);
    ns.ip(&["link", "set", DEV, "up"]);
    ns.ip(&["link", "add", "cni0", "type", "bridge"]);
    ns.ip(&["link", "set", "cni0", "mtu", &mtu]);
    let gw = format!("{}/{}", host(subnet, 1), prefix_len(subnet));
    ns.ip(&["addr", "add", &gw, "dev", "cni0"]);
    ns.ip(&["link", "set", "cni0", "up"]);
    FlanneldNode {
        subnet: subnet.into(),
        key: subnet.replace('/', "-"),
        vtep_mac,
    }
}

/// Program every other lease now in etcd, as flanneld's watch would.
pub fn sync(c: &Cluster, node: &Node, me: &FlanneldNode) {
    for (key, lease) in c.leases() {
        if key == me.key {
            continue;
        }
        let mac = lease["BackendData"]["VtepMAC"].as_str().expect("VtepMAC");
        let public = lease["PublicIP"].as_str().expect("PublicIP");
        program_remote(node, &key_to_cidr(&key), mac, public);
    }
}

/// One remote node, in flanneld's order: neighbour, FDB entry, route.
pub fn program_remote(node: &Node, subnet: &str, vtep_mac: &str, public_ip: &str) {
    let gw = network_address(subnet);
    node.ns.ip(&[
        "neigh",
        "replace",
        &gw,
        "lladdr",
        vtep_mac,
        "dev",
        DEV,
        "nud",
        "permanent",
    ]);
    run_ok(std::process::Command::new("bridge").args([
        "-n",
        &node.ns.name,
        "fdb",
        "replace",
        vtep_mac,
        "dev",
        DEV,
        "dst",
        public_ip,
        "self",
        "permanent",
    ]));
    node.ns
        .ip(&["route", "replace", subnet, "via", &gw, "dev", DEV, "onlink"]);
}

/// A pod on the hand-made node: a veth into `cni0` with `.n`, default
/// route via `.1` (what flannel's CNI plugin + bridge would give it).
pub fn pod(node: &Node, me: &FlanneldNode, n: u32, tag: &str) -> Pod {
    let pod = Netns::new(tag);
    let host_end = format!("vh{n}");
    node.ns.ip(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
    ]);
    node.ns
        .ip(&["link", "set", &host_end, "master", "cni0", "up"]);
    let ip = host(&me.subnet, n);
    pod.ip(&[
        "addr",
        "add",
        &format!("{ip}/{}", prefix_len(&me.subnet)),
        "dev",
        "eth0",
    ]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["route", "add", "default", "via", &host(&me.subnet, 1)]);
    Pod {
        ns: pod,
        ips: vec![ip],
    }
}

/// A lease for a node that does not exist (a public IP nobody holds), to
/// watch entries appear and go without a second agent. The subnet must be
/// one no agent holds: configs built with [`super::phantom_free_max`] keep
/// `x.y.240.0/24` and above free for this.
pub fn phantom_lease(
    c: &Cluster,
    subnet: &str,
    public_ip: &str,
    vtep_mac: &str,
) -> (String, Value) {
    let key = subnet.replace('/', "-");
    assert!(
        !c.leases()
            .iter()
            .any(|(k, _)| k.split('&').next() == Some(key.as_str())),
        "phantom subnet {subnet} is an agent's lease; keep agents below it (SubnetMax)"
    );
    let v = json!({
        "PublicIP": public_ip,
        "PublicIPv6": null,
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": vtep_mac}
    });
    c.put_lease(&key, &v);
    (key, v)
}
