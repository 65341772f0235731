//! `plexusctl topology` against a real cluster: etcd on the simulated
//! underlay (tests/src/cluster), flannel leases written as flanneld writes
//! them, the routed network configured with plexusctl itself, plexusd on
//! two nodes (routed: they register, mesh, and claim a block when asked
//! for an address) and a global peer nobody answers for. The text and DOT
//! pictures must name the nodes, their subnets, blocks and peers with the
//! sessions' live states; SVG through Graphviz must be SVG; a store or an
//! agent that is not there is a warning, a bad flag an error. And with a pod
//! wired by the meta plugin on three networks, `plexusctl status` and the
//! topology's `--cache-dir` show each interface with its network model.

use std::path::Path;
use std::process::Output;

use plexus_agent_api::{call, Allocation, BgpStatus, Request, DEFAULT_TIMEOUT, SOCKET_NAME};
use plexus_tests::bin_dir;
use plexus_tests::cluster::multinet::{macvlan_ip, meta_cache, networks, MultiNet, Options};
use plexus_tests::cluster::{vxlan_config, wait_for, Cluster, Daemon, PREFIX};
use plexus_tests::{require_overlay, require_reference_plugins, Netns};
use serde_json::json;

const POOL: &str = "10.96.0.0/16";
const ROUTER: &str = "10.200.0.50";

/// plexusctl in the etcd netns (it reaches the store there).
fn plexusctl(c: &Cluster, args: &[&str]) -> Output {
    c.etcd_ns
        .cmd(bin_dir().join("plexusctl"))
        .args(args)
        .output()
        .expect("spawn plexusctl")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn mesh_established(sock: &Path) -> bool {
    call::<BgpStatus>(sock, &Request::BgpStatus, DEFAULT_TIMEOUT).is_ok_and(|s| {
        s.peers
            .iter()
            .any(|p| p.kind == "node-to-node mesh" && p.state == "Established")
    })
}

/// Return early (SKIP, or a failure under `PLEXUS_REQUIRE_ALL=1`) without
/// the binaries and a cluster's prerequisites.
macro_rules! require_topology {
    () => {
        require_overlay!();
        if !bin_dir().join("plexusctl").exists() {
            plexus_tests::skip("plexusctl is not built (cargo build --bins -p plexusctl)");
            return;
        }
    };
}

/// Two nodes with flannel leases written as flanneld writes them, the
/// routed network configured with plexusctl (a pool, the AS, a global
/// peer nobody answers for), both agents running and meshed, and node0
/// holding a block (one address allocated through its socket). Each test
/// builds its own.
struct Drawn {
    _agents: Vec<Daemon>,
    c: Cluster,
    store: String,
    /// `node=run-dir` of each node, as `--run-dir` takes it.
    run_dirs: Vec<String>,
}

impl Drawn {
    fn start() -> Drawn {
        let c = Cluster::new(2);
        let store = c.etcd.url();
        c.set_config(&vxlan_config("10.5.0.0/16"));
        for (i, n) in c.nodes.iter().enumerate() {
            c.put_lease(
                &format!("10.5.{}.0-24", 10 + i),
                &json!({"PublicIP": n.ip, "PublicIPv6": null, "BackendType": "vxlan",
                        "BackendData": {"VNI": 1, "VtepMAC": format!("0a:00:00:00:00:0{i}")}}),
            );
        }
        for args in [
            &["pool", "add", "default", POOL][..],
            &["bgp", "set", "--as", "64512"],
            &["bgp", "peer", "add", ROUTER, "--as", "65000"],
        ] {
            ok(
                plexusctl(&c, &[&["--store", &store][..], args].concat()),
                &format!("plexusctl {args:?}"),
            );
        }
        let agents = c.start_agents(&[]);
        let sock0 = c.nodes[0].run_dir.join(SOCKET_NAME);
        let got: Allocation = call(
            &sock0,
            &Request::Allocate {
                network: "routed".into(),
                container_id: "c0".into(),
                ifname: "net1".into(),
                pool: None,
                addresses: vec![],
            },
            DEFAULT_TIMEOUT,
        )
        .expect("an address from node0's block");
        assert_eq!(got.addresses.len(), 1);
        for n in &c.nodes {
            wait_for(&format!("{}: mesh Established", n.name), || {
                mesh_established(&n.run_dir.join(SOCKET_NAME))
            });
        }
        let run_dirs = c
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.run_dir.display()))
            .collect();
        Drawn {
            _agents: agents,
            c,
            store,
            run_dirs,
        }
    }

    /// `topology` with the store, the prefix and every node's run dir,
    /// then `extra`.
    fn topology(&self, extra: &[&str]) -> Output {
        let args: Vec<&str> = ["topology", "--store", &self.store, "--etcd-prefix", PREFIX]
            .into_iter()
            .chain(self.run_dirs.iter().flat_map(|r| ["--run-dir", r.as_str()]))
            .chain(extra.iter().copied())
            .collect();
        plexusctl(&self.c, &args)
    }
}

#[test]
fn topology_shows_nodes_subnets_blocks_and_peers() {
    require_topology!();
    let d = Drawn::start();
    let text = ok(d.topology(&[]), "plexusctl topology");
    for want in [
        "overlay network 10.5.0.0/16 (vxlan)",
        &format!("routed pools default {POOL}"),
        "BGP AS 64512, node-to-node mesh",
        "node node0  public IP 10.200.0.10",
        "node node1  public IP 10.200.0.11",
        "overlay subnet 10.5.10.0/24",
        "overlay subnet 10.5.11.0/24",
        "routed block 10.96.0.0/26 (pool default, 1 used)",
        "node node1 (10.200.0.11)  node-to-node mesh  Established",
        "node node0 (10.200.0.10)  node-to-node mesh  Established",
        &format!("router {ROUTER}  global"),
        &format!("router {ROUTER}  AS 65000"),
        "agent ",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn topology_draws_the_cluster_as_dot_and_svg() {
    require_topology!();
    let d = Drawn::start();
    let dot = ok(
        d.topology(&["--format", "dot"]),
        "plexusctl topology --format dot",
    );
    for want in [
        "digraph plexus {",
        "label=\"node node0\";",
        "label=\"node node1\";",
        "overlay 10.5.10.0/24",
        "block 10.96.0.0/26 (default)",
        "\"node:node0\" -> \"node:node1\" [label=\"BGP node-to-node mesh\\nEstablished\"",
        &format!("\"router:{ROUTER}\" [shape=doubleoctagon"),
        &format!("\"node:node0\" -> \"router:{ROUTER}\""),
    ] {
        assert!(dot.contains(want), "missing {want:?} in:\n{dot}");
    }

    if !Path::new("/usr/bin/dot").exists() {
        plexus_tests::skip("Graphviz is not installed (scripts/install-deps.sh installs graphviz)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.svg");
    let file_arg = file.display().to_string();
    ok(
        d.topology(&["--format", "svg", "--output", &file_arg]),
        "plexusctl topology --format svg",
    );
    let svg = std::fs::read_to_string(&file).expect("the SVG file");
    assert!(
        svg.starts_with("<?xml") || svg.starts_with("<svg"),
        "not SVG: {}",
        &svg[..svg.len().min(200)]
    );
    assert!(svg.contains("</svg>") && svg.contains("node0"), "{svg}");
}

#[test]
fn topology_warns_about_a_missing_agent_and_store_and_draws_the_rest() {
    require_topology!();
    let d = Drawn::start();
    let out = plexusctl(
        &d.c,
        &[
            "topology",
            "--store",
            "etcd://10.200.0.2:2999",
            "--run-dir",
            &d.run_dirs[0],
            "--run-dir",
            "node9=/nonexistent/plexus",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let text = ok(out, "plexusctl topology with parts missing");
    assert!(
        stderr.contains("warning: store etcd://10.200.0.2:2999"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: agent at /nonexistent/plexus"),
        "{stderr}"
    );
    assert!(text.contains("node node0  public IP 10.200.0.10"), "{text}");
    assert!(text.contains("agent "), "{text}");
}

#[test]
fn topology_bad_flags_are_clear_errors_with_nothing_on_stdout() {
    require_topology!();
    // No agents: a flag error comes before anything is asked.
    let c = Cluster::new(1);
    let store = c.etcd.url();
    for (args, want) in [
        (
            &["topology", "--format", "png", "--store", &store][..],
            "png",
        ),
        (
            &["topology", "--cache-dir", "/var/lib/cni/plexus"],
            "NODE=DIR",
        ),
        (&["topology"], "nothing to draw"),
    ] {
        let out = plexusctl(&c, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    }
}

#[test]
fn pods_show_with_the_network_model_of_each_interface() {
    require_overlay!();
    require_reference_plugins!();
    let net = MultiNet::start(2, Options::default());
    let pod = Netns::new("topo-pod");
    let annotation = networks(true, Some(&macvlan_ip(1, 0)));
    let got = net.add(1, &pod, &annotation);
    let n = net.node(1);
    let cache = meta_cache(n);

    let out =
        n.ns.cmd(bin_dir().join("plexusctl"))
            .args(["status", "--cache-dir"])
            .arg(&cache)
            .output()
            .expect("spawn plexusctl");
    let status = ok(out, "plexusctl status");
    for (ifname, model) in [("eth0", "overlay"), ("net1", "routed"), ("net2", "macvlan")] {
        let ip = got.ip(ifname);
        assert!(
            status.lines().any(|l| l.contains(&format!(" {ifname} "))
                && l.contains(&format!(" {model} "))
                && l.contains(&ip)),
            "no {ifname} {model} {ip} row in:\n{status}"
        );
    }

    let store = net.cluster.etcd.url();
    let cache_arg = format!("{}={}", n.name, cache.display());
    let run_arg = format!("{}={}", n.name, n.run_dir.display());
    let text = ok(
        plexusctl(
            &net.cluster,
            &[
                "topology",
                "--store",
                &store,
                "--cache-dir",
                &cache_arg,
                "--run-dir",
                &run_arg,
            ],
        ),
        "plexusctl topology with a cache dir",
    );
    for want in [
        format!("eth0  overlay  cbr0  {}", got.ip("eth0")),
        format!("net1  routed  default/routed  {}", got.ip("net1")),
        format!("net2  macvlan  default/macvlan  {}", got.ip("net2")),
        "agent ".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    let node = text
        .split("\nnode ")
        .find(|s| s.starts_with(&n.name))
        .unwrap_or_else(|| panic!("no node {} in:\n{text}", n.name));
    assert!(node.contains(&format!("default/{}", pod.name)), "{text}");

    net.del(1, &pod, &annotation);
    net.assert_clean();
}
