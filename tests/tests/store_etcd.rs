//! plexus-store against a real etcd (Debian's etcd-server) started in a
//! namespace this test creates; the store client runs on a thread inside
//! that namespace, so nothing touches the root namespace.

use std::collections::BTreeSet;
use std::sync::Arc;

use plexus_store::{
    open_lease_registry, AcquireRequest, EtcdKv, Event as LeaseChange, Kv, LeaseRegistry,
    StoreError, StoreOptions,
};
use plexus_subnet::{Lease, LeaseAttrs, VxlanBackendData};
use plexus_tests::etcd::Etcd;
use plexus_tests::{next_event, require_etcd, require_root, Netns};

const PREFIX: &str = "/coreos.com/network";

fn setup(config: &str) -> (Netns, Etcd) {
    let ns = Netns::new("etcd");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    etcd.put(&format!("{PREFIX}/config"), config);
    (ns, etcd)
}

fn req(node: &str, ip: &str, mac: u8) -> AcquireRequest {
    AcquireRequest {
        node_name: node.into(),
        public_ip: Some(ip.parse().unwrap()),
        public_ipv6: None,
        previous: None,
        previous_public_ip: None,
        attrs: LeaseAttrs {
            public_ip: Some(ip.parse().unwrap()),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(VxlanBackendData {
                vni: 1,
                vtep_mac: [0x0a, 0x58, 0, 0, 0, mac],
            }),
            backend_v6_data: None,
        },
    }
}

async fn registry(url: &str) -> Box<dyn LeaseRegistry> {
    open_lease_registry(url, &StoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

#[test]
fn concurrent_registries_never_get_the_same_subnet() {
    require_root!();
    require_etcd!();
    // 7 subnets (/30s in a /27, the first one unused) for 7 nodes: the
    // random picks collide often, only the transactions keep them apart.
    let (ns, etcd) =
        setup(r#"{"Network":"10.5.0.0/27","SubnetLen":30,"Backend":{"Type":"vxlan"}}"#);
    let url = etcd.url();
    let got = ns.block_on(async {
        let mut regs = Vec::new();
        for _ in 0..7 {
            regs.push(registry(&url).await);
        }
        let reqs: Vec<AcquireRequest> = (0..7)
            .map(|i| req(&format!("node{i}"), &format!("192.168.0.{}", i + 1), i))
            .collect();
        let got =
            futures::future::join_all(regs.iter().zip(&reqs).map(|(r, q)| r.acquire(q))).await;
        let extra = regs[0].acquire(&req("late", "192.168.0.99", 99)).await;
        (got, extra)
    });
    let (got, extra) = got;
    let subnets: BTreeSet<String> = got
        .into_iter()
        .map(|l| {
            l.expect("every node gets a lease")
                .subnet
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(subnets.len(), 7, "{subnets:?}");
    // What etcd holds agrees: 7 keys, one per subnet, each on a TTL lease.
    let keys = etcd.get_prefix(&format!("{PREFIX}/subnets/"));
    assert_eq!(keys.len(), 7, "{keys:?}");
    for (k, _) in &keys {
        assert_ne!(etcd.lease_of(k), 0, "{k} is attached to a TTL lease");
    }
    let e = extra.unwrap_err().to_string();
    assert!(e.contains("no free subnet left in 10.5.0.0/27"), "{e}");
}

#[test]
fn leases_are_written_and_read_in_flannels_format() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = setup(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    // A lease as flanneld writes it, on a node we do not run.
    let flannel_key = format!("{PREFIX}/subnets/10.5.52.0-24");
    let flannel_value = r#"{"PublicIP":"192.168.0.52","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:05:34:00"}}"#;
    etcd.put(&flannel_key, flannel_value);
    let url = etcd.url();
    let (listed, ours) = ns.block_on(async {
        let r = registry(&url).await;
        let listed = r.list().await.unwrap();
        let mut q = req("a", "192.168.0.1", 1);
        // Our previous subnet is the flannel node's: not taken over.
        q.previous = Some(Lease {
            subnet: Some("10.5.52.0/24".parse().unwrap()),
            subnet6: None,
            attrs: LeaseAttrs::default(),
        });
        let ours = r.acquire(&q).await.unwrap();
        r.renew(&ours).await.unwrap();
        (listed, ours)
    });
    assert_eq!(listed.leases.len(), 1);
    let l = &listed.leases[0];
    assert_eq!(l.subnet, Some("10.5.52.0/24".parse().unwrap()));
    assert_eq!(l.attrs.public_ip, Some("192.168.0.52".parse().unwrap()));
    assert_eq!(
        l.attrs.backend_data.as_ref().unwrap().vtep_mac,
        [0x0a, 0x58, 0x0a, 0x05, 0x34, 0]
    );
    assert_eq!(
        l.attrs.to_json(),
        flannel_value,
        "our JSON is flannel's, byte for byte"
    );
    assert_ne!(ours.subnet, l.subnet);
    let key = format!("{PREFIX}/subnets/{}", ours.key());
    assert_eq!(
        etcd.get(&key).unwrap(),
        format!(
            r#"{{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0a:58:00:00:00:01"}}}}"#
        )
    );
    // On a 24 h TTL lease, as flannel's.
    let lease = etcd.lease_of(&key);
    let ttl = etcd.ctl_out(&["lease", "timetolive", &format!("{lease:x}")]);
    assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");
}

/// The next lease event that is not a `Synced`.
async fn next_change(f: &mut plexus_store::Informer<Lease>) -> LeaseChange<Lease> {
    loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(60), f.next())
            .await
            .expect("an event within 60 s");
        if ev != LeaseChange::Synced {
            return ev;
        }
    }
}

#[test]
fn follow_sees_adds_and_deletes_and_an_agent_away_misses_no_delete() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = setup(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let url = etcd.url();
    let value = |ip: &str| {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0a:58:00:00:00:09"}}}}"#
        )
    };
    let k = |sn: &str| format!("{PREFIX}/subnets/{sn}");
    ns.block_on(async {
        let r = registry(&url).await;
        let mut f = r.follow();
        assert_eq!(f.next().await, LeaseChange::Synced);
        etcd.put(&k("10.5.1.0-24"), &value("192.168.0.1"));
        match next_change(&mut f).await {
            LeaseChange::Added(_, l) => {
                assert_eq!(l.attrs.public_ip, Some("192.168.0.1".parse().unwrap()))
            }
            e => panic!("expected Added, got {e:?}"),
        }
        etcd.del(&k("10.5.1.0-24"));
        match next_change(&mut f).await {
            LeaseChange::Deleted(_, l) => {
                assert_eq!(l.subnet, Some("10.5.1.0/24".parse().unwrap()));
                // The last value's attributes come with it.
                assert_eq!(l.attrs.public_ip, Some("192.168.0.1".parse().unwrap()));
            }
            e => panic!("expected Deleted, got {e:?}"),
        }
        drop(f);

        // An agent that was away: leases 2 and 3 appear, 2 is deleted, and
        // the history is compacted before it follows again.
        etcd.put(&k("10.5.2.0-24"), &value("192.168.0.2"));
        etcd.put(&k("10.5.3.0-24"), &value("192.168.0.3"));
        etcd.del(&k("10.5.2.0-24"));
        etcd.compact(etcd.revision());
        let mut f = r.follow();
        match f.next().await {
            LeaseChange::Added(_, l) => assert_eq!(l.key(), "10.5.3.0-24"),
            e => panic!("expected Added, got {e:?}"),
        }
        assert_eq!(
            f.next().await,
            LeaseChange::Synced,
            "10.5.2.0 is not handed out"
        );
        // ...and the watch goes on after the list.
        etcd.del(&k("10.5.3.0-24"));
        match next_change(&mut f).await {
            LeaseChange::Deleted(_, l) => assert_eq!(l.key(), "10.5.3.0-24"),
            e => panic!("expected Deleted, got {e:?}"),
        }
    });
}

#[test]
fn kv_compare_and_swap_and_ttl_leases() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = setup("{}");
    let endpoint = etcd.url();
    ns.block_on(async {
        let eps = plexus_store::etcd::parse_endpoints(&endpoint).unwrap();
        let kv: Arc<dyn Kv> = Arc::new(EtcdKv::connect(eps, None).await.unwrap());
        let rev = kv
            .create("/t/a", b"1", None)
            .await
            .unwrap()
            .expect("created");
        assert_eq!(kv.create("/t/a", b"2", None).await.unwrap(), None);
        assert_eq!(
            kv.put("/t/a", b"3", None, Some(rev - 1)).await.unwrap(),
            None
        );
        let rev2 = kv
            .put("/t/a", b"3", None, Some(rev))
            .await
            .unwrap()
            .unwrap();
        let a = kv.get("/t/a").await.unwrap().unwrap();
        assert_eq!(
            (
                a.value.as_slice(),
                a.create_revision,
                a.mod_revision,
                a.version
            ),
            (&b"3"[..], rev, rev2, 2)
        );
        assert!(!kv.delete("/t/a", Some(rev)).await.unwrap());
        assert!(kv.delete("/t/a", Some(rev2)).await.unwrap());
        let l = kv.grant(std::time::Duration::from_secs(60)).await.unwrap();
        kv.put("/t/b", b"x", Some(l), None).await.unwrap();
        assert_eq!(kv.get("/t/b").await.unwrap().unwrap().lease, l);
        let ttl = kv.keepalive(l).await.unwrap().expect("lease alive");
        assert!(ttl.as_secs() > 0 && ttl.as_secs() <= 60);
        kv.revoke(l).await.unwrap();
        assert_eq!(kv.get("/t/b").await.unwrap(), None, "revoking took the key");
        assert_eq!(kv.keepalive(l).await.unwrap(), None);
        // An expiring lease deletes its key; the watch says so, with the
        // last value (what a node needs to remove a remote's entries).
        let short = kv.grant(std::time::Duration::from_secs(2)).await.unwrap();
        let rev = kv
            .put("/t/c", b"last", Some(short), None)
            .await
            .unwrap()
            .unwrap();
        let mut w = kv.watch("/t/", rev + 1).await.unwrap();
        let ev = next_event(&mut w).await.unwrap();
        match &ev[0] {
            plexus_store::KvEvent::Delete { key, prev, .. } => {
                assert_eq!(key, "/t/c");
                assert_eq!(prev.as_ref().unwrap().value, b"last");
            }
            e => panic!("expected the expiry's Delete, got {e:?}"),
        }
    });
}

#[test]
fn an_unreachable_store_is_a_clear_error_not_a_hang() {
    require_root!();
    require_etcd!();
    let (ns, mut etcd) = setup(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let url = etcd.url();
    let (watch_end, reopen, refused, unroutable, bad) = ns.block_on(async {
        let r = registry(&url).await;
        let mut f = r.follow();
        assert_eq!(f.next().await, LeaseChange::Synced);
        etcd.kill();
        // A running watch breaks when the store dies; the informer says so
        // in its counters and goes on trying (it never hands out an error).
        let stats = f.stats();
        let broke = async {
            while stats.counts().broken == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let watch_end = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            tokio::select! {
                ev = f.next() => Some(format!("{ev:?}")),
                _ = broke => None,
            }
        })
        .await
        .expect("the informer sees the watch break within 60 s");
        let reopen = open_lease_registry(&url, &StoreOptions::default())
            .await
            .err();
        let refused = open_lease_registry("etcd://127.0.0.2:2379", &StoreOptions::default())
            .await
            .err();
        let unroutable = open_lease_registry(
            "etcd://10.255.255.1:2379,127.0.0.3:2379",
            &StoreOptions::default(),
        )
        .await
        .err();
        let bad = open_lease_registry("etcd:/127.0.0.1", &StoreOptions::default())
            .await
            .err();
        (watch_end, reopen, refused, unroutable, bad)
    });
    assert_eq!(watch_end, None, "nothing handed out from a dead store");
    for e in [reopen, refused, unroutable] {
        match e {
            Some(StoreError::Unavailable(m)) => assert!(m.contains("etcd unreachable"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    let bad = bad.expect("a bad URL is an error").to_string();
    assert!(bad.contains("invalid store URL"), "{bad}");
}

#[test]
fn tls_with_client_certificates() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("etcdtls");
    let etcd = Etcd::start_tls(&ns, "127.0.0.1");
    etcd.put(
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#,
    );
    let t = etcd.tls_files().unwrap().clone();
    let url = etcd.url();
    let with_certs = StoreOptions {
        etcd_cafile: Some(t.ca.clone()),
        etcd_certfile: Some(t.client_cert.clone()),
        etcd_keyfile: Some(t.client_key.clone()),
        ..Default::default()
    };
    let (lease, plain, no_client_cert, no_ca) = ns.block_on(async {
        let r = open_lease_registry(&url, &with_certs).await.unwrap();
        let mut q = req("a", "192.168.0.1", 1);
        q.attrs.backend_type = "host-gw".into();
        q.attrs.backend_data = None;
        let lease = r.acquire(&q).await.unwrap();
        let plain = open_lease_registry(&url, &StoreOptions::default())
            .await
            .err();
        let no_client_cert = open_lease_registry(
            &url,
            &StoreOptions {
                etcd_cafile: Some(t.ca.clone()),
                ..Default::default()
            },
        )
        .await
        .err();
        let no_ca = open_lease_registry(
            &url,
            &StoreOptions {
                etcd_certfile: Some(t.client_cert.clone()),
                etcd_keyfile: Some(t.client_key.clone()),
                ..Default::default()
            },
        )
        .await
        .err();
        (lease, plain, no_client_cert, no_ca)
    });
    assert_eq!(
        etcd.get(&format!("{PREFIX}/subnets/{}", lease.key()))
            .unwrap(),
        r#"{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"host-gw"}"#
    );
    // Plain HTTP to a TLS port, and TLS without the client certificate the
    // server demands, fail cleanly.
    assert!(
        plain.is_some() && no_client_cert.is_some(),
        "{plain:?} {no_client_cert:?}"
    );
    let e = no_ca.expect("no CA is an error").to_string();
    assert!(e.contains("--etcd-cafile"), "{e}");
}

#[test]
fn username_and_password() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = setup(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "plexus:s3cret"],
        &["role", "add", "plexus"],
        &[
            "role",
            "grant-permission",
            "plexus",
            "--prefix=true",
            "readwrite",
            "/coreos.com/network/",
        ],
        &["user", "grant-role", "plexus", "plexus"],
        &["auth", "enable"],
    ] {
        etcd.ctl_out(args);
    }
    let url = etcd.url();
    let creds = |u: &str, p: &str| StoreOptions {
        etcd_username: Some(u.into()),
        etcd_password: Some(p.into()),
        ..Default::default()
    };
    let (lease, wrong, anonymous) = ns.block_on(async {
        let r = open_lease_registry(&url, &creds("plexus", "s3cret"))
            .await
            .unwrap();
        let lease = r.acquire(&req("a", "192.168.0.1", 1)).await.unwrap();
        r.renew(&lease).await.unwrap();
        let wrong = open_lease_registry(&url, &creds("plexus", "nope"))
            .await
            .err();
        let anon = open_lease_registry(&url, &StoreOptions::default())
            .await
            .unwrap();
        let anonymous = anon.list().await.err();
        (lease, wrong, anonymous)
    });
    let key = format!("{PREFIX}/subnets/{}", lease.key());
    let mut c = etcd.ctl();
    c.args(["--user", "root:rootpw", "get", &key, "--print-value-only"]);
    let out = String::from_utf8(c.output().unwrap().stdout).unwrap();
    assert!(out.contains(r#""PublicIP":"192.168.0.1""#), "{out}");
    let wrong = wrong.expect("a wrong password is an error").to_string();
    assert!(wrong.contains("authentication failed"), "{wrong}");
    let anonymous = anonymous.expect("no credentials: no access").to_string();
    assert!(
        anonymous.contains("user name is empty") || anonymous.contains("permission denied"),
        "{anonymous}"
    );
}

#[test]
fn a_thousand_leases_in_one_transaction_reach_the_watch() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("etcdbig");
    let etcd = Etcd::start_with(&ns, "127.0.0.1", &["--max-txn-ops", "2000"]);
    etcd.put(
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#,
    );
    let url = etcd.url();
    // etcdctl txn reads: compares, blank line, success ops, blank line, failure ops.
    let mut script = String::from("\n");
    for i in 0..1000u32 {
        let (a, b) = (i / 250 + 1, i % 250);
        let value = format!(
            r#"{{"PublicIP":"192.168.{a}.{b}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0a:58:00:00:{a:02x}:{b:02x}"}}}}"#
        );
        // etcdctl txn takes a double-quoted, backslash-escaped value
        // (single quotes are not stripped), which {:?} writes.
        script += &format!("put {PREFIX}/subnets/10.{a}.{b}.0-24 {value:?}\n");
    }
    script += "\n\n";
    let got = ns.block_on(async {
        let r = registry(&url).await;
        let mut f = r.follow();
        assert_eq!(f.next().await, LeaseChange::Synced);
        let mut c = etcd.ctl();
        c.arg("txn");
        let out = plexus_tests::output_with_stdin(&mut c, script.as_bytes());
        assert!(
            out.status.success(),
            "etcdctl txn: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut keys = BTreeSet::new();
        while keys.len() < 1000 {
            // A guard against hanging on a lost event, not a speed check.
            let next = tokio::time::timeout(std::time::Duration::from_secs(120), f.next());
            match next.await.expect("the watch delivered all 1000 leases") {
                LeaseChange::Added(_, l) => keys.insert(l.key()),
                e => panic!("expected Added, got {e:?}"),
            };
        }
        keys
    });
    assert!(got.contains("10.4.249.0-24") && got.contains("10.1.0.0-24"));
}
