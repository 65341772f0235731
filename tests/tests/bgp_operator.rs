//! BGP for bare-metal operators (issue 22) against BIRD: plexusd on one
//! node (10.200.0.10) with a real etcd, BIRD (AS 65000) on the underlay at
//! 10.200.0.11 as its global peer, every setting made through the store as
//! `plexusctl bgp peer set` makes it, and applied live.
//!
//! Covered: TCP MD5 with the right password (Established) and a wrong one
//! (never established, and `bgp status` says why); BFD at 100 ms × 3: the
//! router's link set down takes its routes out of the kernel (the time is
//! measured and printed), and with BFD off it takes the hold time (9 s,
//! printed too); per-peer and per-prefix communities and the service
//! cluster IP range as BIRD sees them (`show route all`); an import filter
//! rule (rejected, in `bgp routes` with its filter and rule); the prefix
//! limit (Cease / Maximum Number of Prefixes Reached, in BIRD's last
//! error); MD5 also with GoBGP and FRR; ECMP over two BIRD routers; in
//! Kubernetes mode (API stand-in) the password from a Secret and a Local
//! Service's /32 following its EndpointSlice.

use std::time::{Duration, Instant};

use plexus_bgp::policy::{FilterAction, FilterRule, MatchOperator};
use plexus_bgp::BgpFilter;
use plexus_ipam::{BfdSettings, PasswordSource, Peer, PeerSettings, PrefixAdvertisement};
use plexus_tests::cluster::routed::{add_pool, bgp_status, plexusctl, store};
use plexus_tests::cluster::{wait_for, Cluster, Daemon, Node};
use plexus_tests::require_overlay;
use plexus_tests::routers::{tool_available, Bird, Frr, GoBgp, FRR_BGPD};

const ROUTER: &str = "10.200.0.11";
const LEARNED: [&str; 3] = ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/25"];

fn bird_conf(password: &str) -> String {
    format!(
        r#"
router id {ROUTER};
protocol device {{}}
protocol kernel k4 {{ ipv4 {{ import none; export none; }}; }}
protocol static announce4 {{ ipv4; {routes} }}
protocol bfd {{ interface "*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}
protocol bgp plx {{
  local as 65000;
  neighbor 10.200.0.10 as 64512;
  hold time 9;
  connect retry time 2;
  error wait time 1, 2;
  password "{password}";
  bfd on;
  ipv4 {{ import all; export where proto = "announce4"; }};
}}
"#,
        routes = LEARNED
            .iter()
            .map(|r| format!("route {r} blackhole;"))
            .collect::<String>()
    )
}

struct Setup<R = Bird> {
    // Drop order: the agent and the router before the cluster.
    _agents: Vec<Daemon>,
    bird: R,
    router: Node,
    c: Cluster,
    _dir: tempfile::TempDir,
}

fn setup(settings: PeerSettings) -> Option<Setup> {
    if !tool_available("bird") {
        plexus_tests::skip("bird2 is not installed (scripts/install-deps.sh)");
        return None;
    }
    Some(setup_with(settings, |ns, dir| {
        Bird::start(ns, dir, &bird_conf("s3cret"))
    }))
}

/// One node with plexusd peering with the router `start` starts at
/// 10.200.0.11.
fn setup_with<R>(
    settings: PeerSettings,
    start: impl FnOnce(&plexus_tests::Netns, &std::path::Path) -> R,
) -> Setup<R> {
    let mut c = Cluster::new(2);
    let router = c.nodes.pop().unwrap();
    assert_eq!(router.ip, ROUTER);
    add_pool(&c, 26);
    set_peer(&c, settings);
    let dir = tempfile::tempdir().unwrap();
    let bird = start(&router.ns, dir.path());
    let agents = c.start_agents(&[]);
    Setup {
        _agents: agents,
        bird,
        router,
        c,
        _dir: dir,
    }
}

/// The router as a global peer with `settings` (added, or changed).
fn set_peer(c: &Cluster, settings: PeerSettings) {
    store(c, |s| async move {
        let address = ROUTER.parse().unwrap();
        if s.update_peer(&address, |p| {
            p.settings = settings.clone();
            Ok(())
        })
        .await
        .is_err()
        {
            s.add_peer(&Peer {
                address,
                asn: 65000,
                node: None,
                settings,
            })
            .await
            .unwrap();
        }
    });
}

fn password(p: &str) -> Option<PasswordSource> {
    Some(PasswordSource {
        value: Some(p.into()),
        secret_key_ref: None,
    })
}

fn bfd_100ms() -> Option<BfdSettings> {
    Some(BfdSettings {
        min_tx_ms: 100,
        min_rx_ms: 100,
        multiplier: 3,
    })
}

fn peer_status(n: &Node) -> serde_json::Value {
    bgp_status(n)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == ROUTER)
        .cloned()
        .unwrap_or_default()
}

fn has_route(n: &Node, prefix: &str) -> bool {
    !n.ip_json(&["route", "show", "exact", prefix])
        .as_array()
        .unwrap()
        .is_empty()
}

impl<R> Setup<R> {
    fn node(&self) -> &Node {
        &self.c.nodes[0]
    }

    /// Right password: Established (`up` says so on the router's side
    /// too); wrong, then none: never, and `bgp status` says why; right
    /// again: Established. All applied live.
    fn md5_round(&self, up: impl Fn(&R) -> bool) {
        wait_for("Established with the right password", || {
            peer_status(self.node())["state"] == "Established" && up(&self.bird)
        });
        for wrong in [password("wrong"), None] {
            set_peer(
                &self.c,
                PeerSettings {
                    password: wrong.clone(),
                    ..Default::default()
                },
            );
            wait_for("the session down with a wrong or no password", || {
                peer_status(self.node())["state"] != "Established"
            });
            std::thread::sleep(Duration::from_secs(5));
            let st = peer_status(self.node());
            assert_ne!(st["state"], "Established", "{wrong:?}: {st}");
            assert!(!up(&self.bird), "{wrong:?}");
            if wrong.is_some() {
                let why = st["last_error"].as_str().unwrap_or("");
                assert!(why.contains("TCP MD5"), "{st}");
            }
        }
        set_peer(
            &self.c,
            PeerSettings {
                password: password("s3cret"),
                ..Default::default()
            },
        );
        wait_for("Established with the right password again", || {
            peer_status(self.node())["state"] == "Established" && up(&self.bird)
        });
    }
}

impl Setup {
    fn wait_established(&self) {
        wait_for("the session with BIRD Established", || {
            peer_status(self.node())["state"] == "Established" && self.bird.established("plx")
        });
    }

    /// Sets the router's link down, returns how long until every learned
    /// route left the node's kernel; then sets it up again.
    fn cut_and_measure(&self, limit: Duration) -> Duration {
        for p in LEARNED {
            wait_for(&format!("{p} in the kernel"), || has_route(self.node(), p));
        }
        let t0 = Instant::now();
        self.router.ns.ip(&["link", "set", "eth0", "down"]);
        let end = t0 + limit;
        while LEARNED.iter().any(|p| has_route(self.node(), p)) {
            assert!(Instant::now() < end, "routes still there after {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t0.elapsed();
        self.router.ns.ip(&["link", "set", "eth0", "up"]);
        took
    }
}

#[test]
fn md5_right_and_wrong_password_with_bird() {
    require_overlay!();
    let Some(s) = setup(PeerSettings {
        password: password("s3cret"),
        ..Default::default()
    }) else {
        return;
    };
    s.md5_round(|b| b.established("plx"));
    let text = plexusctl(s.node(), &["bgp", "status", "--run-dir"]);
    assert!(text.contains("Established"), "{text}");
}

#[test]
fn bfd_takes_routes_out_within_the_detection_time_and_without_it_the_hold_time() {
    require_overlay!();
    let Some(s) = setup(PeerSettings {
        password: password("s3cret"),
        bfd: bfd_100ms(),
        ..Default::default()
    }) else {
        return;
    };
    s.wait_established();
    wait_for("BFD Up", || peer_status(s.node())["bfd"] == "Up");
    let with_bfd = s.cut_and_measure(Duration::from_secs(30));
    let st = peer_status(s.node());
    assert!(
        st["last_error"].as_str().unwrap_or("").contains("BFD"),
        "{st}"
    );
    s.wait_established();
    set_peer(
        &s.c,
        PeerSettings {
            password: password("s3cret"),
            ..Default::default()
        },
    );
    s.wait_established();
    let without = s.cut_and_measure(Duration::from_secs(40));
    eprintln!(
        "routes out of the kernel after the link cut: with BFD 100 ms x 3: {with_bfd:?}; \
         without BFD (hold time 9 s): {without:?}"
    );
    assert!(peer_status(s.node())["bfd"].is_null());
}

#[test]
fn communities_services_filters_and_the_prefix_limit_with_bird() {
    require_overlay!();
    let mut settings = PeerSettings {
        password: password("s3cret"),
        communities: plexus_bgp::CommunitySet {
            standard: vec!["65000:100".parse().unwrap()],
            large: vec!["65000:1:2".parse().unwrap()],
        },
        ..Default::default()
    };
    let Some(s) = setup(settings.clone()) else {
        return;
    };
    store(&s.c, |st| async move {
        st.update_bgp_config(|c| {
            c.service_cluster_ips = vec!["10.96.0.0/12".parse().unwrap()];
            c.prefix_advertisements = vec![PrefixAdvertisement {
                cidr: "10.96.0.0/12".parse().unwrap(),
                communities: plexus_bgp::CommunitySet {
                    standard: vec!["65000:200".parse().unwrap()],
                    large: vec![],
                },
            }];
            Ok(())
        })
        .await
        .unwrap();
        st.set_filter(&BgpFilter {
            name: "no-docs".into(),
            import_v4: vec![
                FilterRule::new(FilterAction::Accept)
                    .cidr(MatchOperator::Equal, "198.51.100.0/24".parse().unwrap()),
                FilterRule::new(FilterAction::Reject)
                    .cidr(MatchOperator::In, "203.0.113.0/24".parse().unwrap()),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    s.wait_established();
    // The service range, with the peer's and the prefix's communities.
    wait_for("BIRD has the service range", || {
        s.bird.route("10.96.0.0/12").is_some()
    });
    let r = s.bird.route("10.96.0.0/12").unwrap();
    eprintln!("{r}");
    assert!(
        r.contains("(65000,100)") && r.contains("(65000,200)"),
        "{r}"
    );
    assert!(r.contains("(65000, 1, 2)"), "{r}");
    // The filter: rule 0 accepts 198.51.100.0/24, rule 1 rejects
    // 203.0.113.0/24, the rest falls through (accepted).
    settings.filters = vec!["no-docs".into()];
    set_peer(&s.c, settings.clone());
    wait_for("203.0.113.0/24 filtered out of the kernel", || {
        !has_route(s.node(), "203.0.113.0/24")
    });
    assert!(has_route(s.node(), "198.51.100.0/24"));
    assert!(has_route(s.node(), "192.0.2.0/25"));
    let routes: serde_json::Value = serde_json::from_str(&plexusctl(
        s.node(),
        &["bgp", "routes", "--json", "--peer", ROUTER, "--run-dir"],
    ))
    .unwrap();
    let row = |p: &str| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["prefix"] == p)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("203.0.113.0/24")["stage"], "filter");
    assert!(row("203.0.113.0/24")["reason"]
        .as_str()
        .unwrap()
        .contains("\"no-docs\" rule 1"));
    assert_eq!(row("198.51.100.0/24")["verdict"], "accepted");
    let st = peer_status(s.node());
    assert_eq!(st["prefixes_rejected_by_filter"], 1, "{st}");
    // The prefix limit: 3 received, 2 allowed: Cease / subcode 1.
    settings.max_prefixes = Some(2);
    set_peer(&s.c, settings);
    wait_for("BIRD hears Maximum number of prefixes reached", || {
        let out = s.bird.birdc(&["show", "protocols", "all", "plx"]);
        out.contains("Maximum number of prefixes reached")
    });
    let st = peer_status(s.node());
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("maximum number of prefixes"),
        "{st}"
    );
}

#[test]
fn md5_right_and_wrong_password_with_gobgp() {
    require_overlay!();
    if !tool_available("gobgpd") {
        plexus_tests::skip("gobgpd is not installed (scripts/install-deps.sh)");
        return;
    }
    let s = setup_with(
        PeerSettings {
            password: password("s3cret"),
            ..Default::default()
        },
        |ns, dir| {
            GoBgp::start(
                ns,
                dir,
                &format!(
                    r#"[global.config]
  as = 65000
  router-id = "{ROUTER}"
  local-address-list = ["{ROUTER}"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.200.0.10"
    peer-as = 64512
    auth-password = "s3cret"
  [neighbors.timers.config]
    connect-retry = 2
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#
                ),
            )
        },
    );
    s.md5_round(|g| g.established("10.200.0.10"));
}

#[test]
fn md5_right_and_wrong_password_with_frr() {
    require_overlay!();
    if !std::path::Path::new(FRR_BGPD).exists() {
        plexus_tests::skip("frr is not installed (scripts/install-deps.sh)");
        return;
    }
    let s = setup_with(
        PeerSettings {
            password: password("s3cret"),
            ..Default::default()
        },
        |ns, dir| {
            Frr::start(
                ns,
                dir,
                &format!(
                    r#"frr defaults traditional
router bgp 65000
 bgp router-id {ROUTER}
 no bgp ebgp-requires-policy
 neighbor 10.200.0.10 remote-as 64512
 neighbor 10.200.0.10 password s3cret
 neighbor 10.200.0.10 timers connect 2
"#
                ),
            )
        },
    );
    s.md5_round(|f| f.established("10.200.0.10"));
}

#[test]
fn two_routers_announcing_one_prefix_give_one_multipath_route() {
    require_overlay!();
    if !tool_available("bird") {
        plexus_tests::skip("bird2 is not installed (scripts/install-deps.sh)");
        return;
    }
    let mut c = Cluster::new(3);
    let r2 = c.nodes.pop().unwrap();
    let r1 = c.nodes.pop().unwrap();
    add_pool(&c, 26);
    store(&c, |s| async move {
        s.update_bgp_config(|cfg| {
            cfg.max_paths = Some(4);
            Ok(())
        })
        .await
        .unwrap();
        for r in ["10.200.0.11", "10.200.0.12"] {
            s.add_peer(&Peer {
                address: r.parse().unwrap(),
                asn: 65000,
                node: None,
                settings: Default::default(),
            })
            .await
            .unwrap();
        }
    });
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let conf = |id: &str| {
        format!(
            r#"
router id {id};
protocol device {{}}
protocol static announce4 {{ ipv4; route 198.51.100.0/24 blackhole; }}
protocol bgp plx {{
  local as 65000;
  neighbor 10.200.0.10 as 64512;
  connect retry time 2;
  ipv4 {{ import all; export where proto = "announce4"; }};
}}
"#
        )
    };
    let _b1 = Bird::start(&r1.ns, dirs[0].path(), &conf("10.200.0.11"));
    let _b2 = Bird::start(&r2.ns, dirs[1].path(), &conf("10.200.0.12"));
    let _agents = c.start_agents(&[]);
    let n = &c.nodes[0];
    wait_for("one route over both routers", || {
        let r = n.ip_json(&["route", "show", "exact", "198.51.100.0/24"]);
        let hops: Vec<String> = r
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["nexthops"].as_array().cloned().unwrap_or_default())
            .filter_map(|h| h["gateway"].as_str().map(String::from))
            .collect();
        hops.len() == 2 && hops.contains(&r1.ip) && hops.contains(&r2.ip)
    });
    let out = n.ns.sh("ip route show exact 198.51.100.0/24");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

/// Runs `f` against the routed records kept in the API stand-in (what
/// plexusctl --store kubernetes edits), from inside the underlay.
fn kube_store<T: Send, F: std::future::Future<Output = T>>(
    c: &Cluster,
    api: &plexus_tests::apiserver::FakeApiServer,
    f: impl FnOnce(plexus_ipam::Cluster) -> F + Send,
) -> T {
    let kubeconfig = api.kubeconfig.clone();
    c.etcd_ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let opts = plexus_store::StoreOptions {
                kubeconfig: Some(kubeconfig),
                ..Default::default()
            };
            let kv = plexus_store::open_kv("kubernetes", &opts)
                .await
                .expect("open the API store");
            f(plexus_ipam::Cluster::new(
                kv,
                plexus_ipam::Layout::default(),
            ))
            .await
        })
    })
}

/// The next hops BIRD has for exactly `prefix` (empty: no route).
fn bird_next_hops(bird: &Bird, prefix: &str) -> std::collections::BTreeSet<String> {
    bird.birdc(&["show", "route", prefix])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("via "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Kubernetes mode: the router's TCP MD5 password from a Secret (the
/// sessions come up only if plexusd read it through the API); the external
/// IP range from every node; a Local Service's /32 only from the node with
/// its endpoint, following the EndpointSlice.
#[test]
fn a_local_service_is_announced_only_from_the_nodes_running_its_endpoints() {
    use plexus_store::kubekv::{GROUP, PLURAL, VERSION};
    use serde_json::json;
    require_overlay!();
    if !tool_available("bird") {
        plexus_tests::skip("bird2 is not installed (scripts/install-deps.sh)");
        return;
    }
    let mut c = Cluster::new(3);
    let router = c.nodes.pop().unwrap();
    let api = plexus_tests::apiserver::FakeApiServer::start_at(
        &c.etcd_ns,
        plexus_tests::cluster::ETCD_IP,
    );
    api.serve_resource(GROUP, VERSION, PLURAL, "PlexusKey");
    for n in &c.nodes {
        api.add_node(&n.name, &[], json!({}));
    }
    let dir = tempfile::tempdir().unwrap();
    let (pools, bgp) = (dir.path().join("pools.json"), dir.path().join("bgp.json"));
    std::fs::write(
        &pools,
        json!([{"name": "routed", "cidr": "10.97.0.0/16", "blockSize": 26}]).to_string(),
    )
    .unwrap();
    std::fs::write(&bgp, r#"{"asn": 64601}"#).unwrap();
    let router_ip = router.ip.clone();
    kube_store(&c, &api, |s| async move {
        s.update_bgp_config(|cfg| {
            cfg.asn = 64601;
            cfg.service_external_ips = vec!["192.0.2.0/24".parse().unwrap()];
            Ok(())
        })
        .await
        .unwrap();
        // The password from a Secret, as Calico's secretKeyRef.
        s.add_peer(&Peer {
            address: router_ip.parse().unwrap(),
            asn: 65000,
            node: None,
            settings: PeerSettings {
                password: Some(PasswordSource {
                    value: None,
                    secret_key_ref: Some(plexus_ipam::SecretKeyRef {
                        name: "bgp-passwords".into(),
                        key: "router".into(),
                        namespace: None,
                    }),
                }),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    });
    api.create(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"namespace": "kube-system", "name": "bgp-passwords"},
               // "s3cret"
               "data": {"router": "czNjcmV0"}}),
    );
    let bird_dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &router.ns,
        bird_dir.path(),
        &format!(
            r#"
router id {};
protocol device {{}}
template bgp plx {{ local as 65000; connect retry time 2; password "s3cret";
  ipv4 {{ import all; export none; }}; }}
protocol bgp n0 from plx {{ neighbor {} as 64601; }}
protocol bgp n1 from plx {{ neighbor {} as 64601; }}
"#,
            router.ip, c.nodes[0].ip, c.nodes[1].ip
        ),
    );
    let kubeconfig = api.kubeconfig.display().to_string();
    let (pools, bgp) = (pools.display().to_string(), bgp.display().to_string());
    let extra = [
        "--kubeconfig",
        &kubeconfig,
        "--pools-file",
        &pools,
        "--bgp-file",
        &bgp,
    ];
    let _agents: Vec<Daemon> = c
        .nodes
        .iter()
        .map(|n| n.start_agent("kubernetes", &extra))
        .collect();
    wait_for("BIRD Established with both nodes", || {
        bird.established("n0") && bird.established("n1")
    });
    let both: std::collections::BTreeSet<String> = c.nodes.iter().map(|n| n.ip.clone()).collect();
    // The range, from every node.
    wait_for("the external IP range from both nodes", || {
        bird_next_hops(&bird, "192.0.2.0/24") == both
    });
    api.create(
        "services",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"namespace": "default", "name": "web"},
               "spec": {"externalTrafficPolicy": "Local", "externalIPs": ["192.0.2.10"],
                        "ports": [{"port": 80}]}}),
    );
    let slice = |node: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"namespace": "default", "name": "web-1",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.97.0.5"], "nodeName": node,
                              "conditions": {"ready": true}}]})
    };
    let only = |i: usize| std::collections::BTreeSet::from([c.nodes[i].ip.clone()]);
    api.apply("endpointslices.discovery.k8s.io", slice(&c.nodes[0].name));
    wait_for("192.0.2.10/32 from node 0 only", || {
        bird_next_hops(&bird, "192.0.2.10/32") == only(0)
    });
    // The endpoint moves: so does the /32.
    api.apply("endpointslices.discovery.k8s.io", slice(&c.nodes[1].name));
    wait_for("192.0.2.10/32 from node 1 only", || {
        bird_next_hops(&bird, "192.0.2.10/32") == only(1)
    });
    // No endpoint: no /32; the range stays.
    api.delete("endpointslices.discovery.k8s.io", "default", "web-1");
    wait_for("192.0.2.10/32 gone", || {
        bird_next_hops(&bird, "192.0.2.10/32").is_empty()
    });
    assert_eq!(bird_next_hops(&bird, "192.0.2.0/24"), both);
}
