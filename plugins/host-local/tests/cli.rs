//! The binary as a runtime sees it: every command, and every way to feed it
//! bad input, which must give a CNI error JSON with the right code and leave
//! the data directory exactly as it was.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{json, Value};

fn v4(dir: &std::path::Path) -> Value {
    conf("1.0.0", "net1", dir, json!({"subnet": "10.10.0.0/24"}))
}

#[test]
fn add_check_del_lifecycle() {
    let (_t, dir) = tempdir();
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.10.0.53\nsearch a.example\noptions ndots:2\n",
    )
    .unwrap();
    let c = conf(
        "1.0.0",
        "net1",
        &dir,
        json!({"subnet": "10.10.0.0/24", "resolvConf": resolv,
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}]}),
    );
    let out = call(OURS, "ADD", &c, "ctr1", "eth0", &[]);
    assert_eq!(
        out.json,
        json!({"cniVersion": "1.0.0",
               "ips": [{"address": "10.10.0.2/24", "gateway": "10.10.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}],
               "dns": {"nameservers": ["10.10.0.53"], "search": ["a.example"], "options": ["ndots:2"]}}),
        "{}",
        out.raw
    );
    let net = dir.join("net1");
    assert_eq!(names(&net), ["10.10.0.2", "last_reserved_ip.0", "lock"]);
    assert_eq!(
        std::fs::read_to_string(net.join("10.10.0.2")).unwrap(),
        "ctr1\r\neth0"
    );
    assert_eq!(
        std::fs::read_to_string(net.join("last_reserved_ip.0")).unwrap(),
        "10.10.0.2"
    );
    let mode = |f: &str| std::fs::metadata(net.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("10.10.0.2"), 0o600);
    assert_eq!(mode("last_reserved_ip.0"), 0o600);

    assert!(call(OURS, "CHECK", &c, "ctr1", "eth0", &[]).ok);
    assert_eq!(call(OURS, "CHECK", &c, "ctr1", "eth1", &[]).code(), 3);
    assert_eq!(call(OURS, "CHECK", &c, "ctr2", "eth0", &[]).code(), 3);
    // A second ADD for the same attachment is refused and changes nothing.
    let before = snapshot(&dir);
    assert_eq!(call(OURS, "ADD", &c, "ctr1", "eth0", &[]).code(), 102);
    assert_eq!(snapshot(&dir), before);

    let del = call(OURS, "DEL", &c, "ctr1", "eth0", &[("CNI_NETNS", "")]);
    assert!(del.ok && del.raw.is_empty(), "{}", del.raw);
    assert_eq!(names(&net), ["last_reserved_ip.0", "lock"]);
    assert!(
        call(OURS, "DEL", &c, "ctr1", "eth0", &[]).ok,
        "DEL is idempotent"
    );
    assert_eq!(call(OURS, "CHECK", &c, "ctr1", "eth0", &[]).code(), 3);
    // Round robin continues after the last reserved address.
    assert_eq!(
        call(OURS, "ADD", &c, "ctr2", "eth0", &[]).ips(),
        ["10.10.0.3/24"]
    );
}

#[test]
fn result_in_old_versions_and_dual_stack() {
    let (_t, dir) = tempdir();
    let c = conf(
        "0.3.1",
        "ds",
        &dir,
        json!({"ranges": [[{"subnet": "10.20.0.0/24", "gateway": "10.20.0.254"}],
                          [{"subnet": "fd20::/64"}]]}),
    );
    let out = call(OURS, "ADD", &c, "c1", "eth0", &[]);
    assert_eq!(out.json["cniVersion"], "0.3.1");
    assert_eq!(
        out.json["ips"][0],
        json!({"version": "4", "address": "10.20.0.1/24", "gateway": "10.20.0.254"})
    );
    assert_eq!(
        out.json["ips"][1],
        json!({"version": "6", "address": "fd20::2/64", "gateway": "fd20::1"})
    );
    assert_eq!(
        names(&dir.join("ds")),
        [
            "10.20.0.1",
            "fd20::2",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
    assert!(call(OURS, "DEL", &c, "c1", "eth0", &[]).ok);
    assert_eq!(
        names(&dir.join("ds")),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}

#[test]
fn requested_ips_from_every_source() {
    let (_t, dir) = tempdir();
    let base = conf(
        "1.0.0",
        "req",
        &dir,
        json!({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "fd30::/64"}]]}),
    );
    let ips = call(
        OURS,
        "ADD",
        &base,
        "a",
        "eth0",
        &[("CNI_ARGS", "IP=10.30.0.40,fd30::40")],
    )
    .ips();
    assert_eq!(ips, ["10.30.0.40/24", "fd30::40/64"]);
    let mut c = base.clone();
    c["args"] = json!({"cni": {"ips": ["10.30.0.41"]}});
    assert_eq!(
        call(OURS, "ADD", &c, "b", "eth0", &[]).ips(),
        ["10.30.0.41/24", "fd30::41/64"]
    );
    let mut c = base.clone();
    c["runtimeConfig"] = json!({"ips": ["fd30::99/64"]});
    assert_eq!(
        call(OURS, "ADD", &c, "c", "eth0", &[]).ips(),
        ["10.30.0.42/24", "fd30::99/64"]
    );
    // K8S_* keys are accepted without IgnoreUnknown.
    let out = call(
        OURS,
        "ADD",
        &base,
        "d",
        "eth0",
        &[(
            "CNI_ARGS",
            "K8S_POD_NAME=p;K8S_POD_NAMESPACE=n;IP=10.30.0.9",
        )],
    );
    assert_eq!(out.ips()[0], "10.30.0.9/24");

    // Taken: 102 and the other family this call reserved is released.
    let before = snapshot(&dir);
    let out = call(
        OURS,
        "ADD",
        &base,
        "e",
        "eth0",
        &[("CNI_ARGS", "IP=fd30::40")],
    );
    assert_eq!(out.code(), 102, "{}", out.raw);
    let after = snapshot(&dir);
    let files = |s: &std::collections::BTreeMap<String, (String, u32)>| {
        s.keys()
            .filter(|k| !k.contains("last_reserved"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(files(&after), files(&before));
}

#[test]
fn status_reports_exhaustion() {
    let (_t, dir) = tempdir();
    let c = conf("1.1.0", "st", &dir, json!({"subnet": "10.40.0.0/30"}));
    let status = |c: &Value| {
        call(
            OURS,
            "STATUS",
            c,
            "",
            "",
            &[
                ("CNI_CONTAINERID", ""),
                ("CNI_IFNAME", ""),
                ("CNI_NETNS", ""),
                ("CNI_PATH", ""),
            ],
        )
    };
    assert!(status(&c).ok, "{}", status(&c).raw);
    assert!(!dir.join("st").exists(), "STATUS creates nothing");
    assert_eq!(
        call(OURS, "ADD", &c, "a", "eth0", &[]).ips(),
        ["10.40.0.2/30"]
    );
    let out = status(&c);
    assert_eq!(out.code(), 50);
    assert!(
        out.json["msg"]
            .as_str()
            .unwrap()
            .contains("no addresses left"),
        "{}",
        out.raw
    );
    assert_eq!(call(OURS, "ADD", &c, "b", "eth0", &[]).code(), 102);
    assert!(call(OURS, "DEL", &c, "a", "eth0", &[]).ok);
    assert!(status(&c).ok);
    // STATUS needs 1.1.0.
    let old = conf("1.0.0", "st", &dir, json!({"subnet": "10.40.0.0/30"}));
    assert_eq!(status(&old).code(), 1);
}

#[test]
fn gc_releases_everything_not_valid() {
    let (_t, dir) = tempdir();
    let mut c = conf("1.1.0", "gc", &dir, json!({"subnet": "10.50.0.0/24"}));
    for (id, ifname) in [("a", "eth0"), ("a", "eth1"), ("b", "eth0"), ("c", "net1")] {
        call(OURS, "ADD", &c, id, ifname, &[]).ips();
    }
    let net = dir.join("gc");
    // A reservation from a container that died without DEL, written by
    // anyone, and a temporary file left by a process killed mid-ADD.
    std::fs::write(net.join("10.50.0.77"), "dead\r\neth0").unwrap();
    std::fs::write(net.join(".plexus-tmp.reserve"), "dead2\r\neth0").unwrap();
    c["cni.dev/valid-attachments"] =
        json!([{"containerID": "a", "ifname": "eth1"}, {"containerID": "c", "ifname": "net1"}]);
    let out = call(
        OURS,
        "GC",
        &c,
        "",
        "",
        &[
            ("CNI_CONTAINERID", ""),
            ("CNI_IFNAME", ""),
            ("CNI_NETNS", ""),
        ],
    );
    assert!(out.ok, "{}", out.raw);
    assert_eq!(
        names(&net),
        ["10.50.0.3", "10.50.0.5", "last_reserved_ip.0", "lock"]
    );
    assert_eq!(
        std::fs::read_to_string(net.join("10.50.0.3")).unwrap(),
        "a\r\neth1"
    );
    // An empty valid list releases everything; GC of an unknown network is fine.
    c["cni.dev/valid-attachments"] = json!([]);
    assert!(call(OURS, "GC", &c, "", "", &[]).ok);
    assert_eq!(names(&net), ["last_reserved_ip.0", "lock"]);
    c["name"] = json!("never-used");
    assert!(call(OURS, "GC", &c, "", "", &[]).ok);
    assert!(!dir.join("never-used").exists());
}

/// Every bad input: an error JSON with the expected code, nothing changed.
#[test]
fn bad_inputs_are_clean_errors() {
    let (_t, dir) = tempdir();
    let good = v4(&dir);
    call(OURS, "ADD", &good, "keep", "eth0", &[]).ips();
    let before = snapshot(&dir);
    let with_ipam = |ipam: Value| conf("1.0.0", "net1", &dir, ipam);
    let mut rt = good.clone();
    rt["runtimeConfig"] = json!({"ips": ["10.99.0.5"]});
    let mut gw = good.clone();
    gw["args"] = json!({"cni": {"ips": ["10.10.0.1"]}});
    let mut bad_list = good.clone();
    bad_list["args"] = json!({"cni": {"ips": ["nope"]}});
    let mut traversal = good.clone();
    traversal["name"] = json!("../escape");
    let mut dotdot = good.clone();
    dotdot["name"] = json!("..");
    let mut no_ipam = good.clone();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    let mut bad_version = good.clone();
    bad_version["cniVersion"] = json!("0.2.0");
    /// (what, stdin, container ID, ifname, env overrides, expected code)
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        u64,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            b"{\"cniVersion\":".to_vec(),
            "x",
            "eth0",
            vec![],
            6,
        ),
        (
            "unsupported version",
            bad_version.to_string().into_bytes(),
            "x",
            "eth0",
            vec![],
            1,
        ),
        (
            "no ipam",
            no_ipam.to_string().into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "bad subnet",
            with_ipam(json!({"subnet": "10.10.0/24"}))
                .to_string()
                .into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "/31",
            with_ipam(json!({"subnet": "10.10.0.0/31"}))
                .to_string()
                .into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "/128",
            with_ipam(json!({"subnet": "fd00::1/128"}))
                .to_string()
                .into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "host bits",
            with_ipam(json!({"subnet": "10.10.0.9/24"}))
                .to_string()
                .into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "rangeStart outside",
            with_ipam(json!({"subnet": "10.10.0.0/24", "rangeStart": "10.11.0.1"}))
                .to_string()
                .into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "overlapping sets",
            with_ipam(
                json!({"ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "10.10.0.0/25"}]]}),
            )
            .to_string()
            .into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "requested out of range",
            rt.to_string().into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "requested gateway",
            gw.to_string().into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "requested not an IP",
            bad_list.to_string().into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "requested taken",
            good.to_string().into_bytes(),
            "x",
            "eth0",
            vec![("CNI_ARGS", "IP=10.10.0.2")],
            102,
        ),
        (
            "CNI_ARGS bad IP",
            good.to_string().into_bytes(),
            "x",
            "eth0",
            vec![("CNI_ARGS", "IP=10.10.0.300")],
            4,
        ),
        (
            "CNI_ARGS unknown key",
            good.to_string().into_bytes(),
            "x",
            "eth0",
            vec![("CNI_ARGS", "FOO=bar")],
            4,
        ),
        (
            "CNI_ARGS malformed",
            good.to_string().into_bytes(),
            "x",
            "eth0",
            vec![("CNI_ARGS", "IP")],
            4,
        ),
        (
            "network name traversal",
            traversal.to_string().into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "network name ..",
            dotdot.to_string().into_bytes(),
            "x",
            "eth0",
            vec![],
            7,
        ),
        (
            "container ID traversal",
            good.to_string().into_bytes(),
            "../../etc",
            "eth0",
            vec![],
            4,
        ),
        (
            "container ID slash",
            good.to_string().into_bytes(),
            "a/b",
            "eth0",
            vec![],
            4,
        ),
        (
            "ifname traversal",
            good.to_string().into_bytes(),
            "x",
            "../eth0",
            vec![],
            4,
        ),
        (
            "ifname with CRLF",
            good.to_string().into_bytes(),
            "x",
            "eth0\r\nx",
            vec![],
            4,
        ),
        (
            "missing CNI_IFNAME",
            good.to_string().into_bytes(),
            "x",
            "eth0",
            vec![("CNI_IFNAME", "")],
            4,
        ),
    ];
    for (what, stdin, cid, ifname, env, code) in cases {
        let out = call_raw(OURS, "ADD", &stdin, cid, ifname, &env);
        assert!(!out.ok, "{what}: succeeded: {}", out.raw);
        assert_eq!(out.json["code"].as_u64(), Some(code), "{what}: {}", out.raw);
        assert!(
            out.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {}",
            out.raw
        );
        assert_eq!(snapshot(&dir), before, "{what} changed the data directory");
    }
    // Exhaustion: 102, nothing changed.
    let (_t2, dir2) = tempdir();
    let tiny = conf("1.0.0", "tiny", &dir2, json!({"subnet": "10.60.0.0/30"}));
    call(OURS, "ADD", &tiny, "a", "eth0", &[]).ips();
    let before = snapshot(&dir2);
    assert_eq!(call(OURS, "ADD", &tiny, "b", "eth0", &[]).code(), 102);
    assert_eq!(snapshot(&dir2), before);
}

/// Path safety beyond name validation: entries in the network directory that
/// are symlinks (or directories) named like addresses are never followed,
/// read or removed, and an allocation never writes through them.
#[test]
fn symlinks_in_data_dir_are_not_followed() {
    let (_t, dir) = tempdir();
    let c = conf("1.1.0", "net1", &dir, json!({"subnet": "10.10.0.0/29"}));
    let net = dir.join("net1");
    std::fs::create_dir_all(&net).unwrap();
    let outside = dir.join("outside");
    std::fs::write(&outside, "victim\r\neth0").unwrap();
    std::os::unix::fs::symlink(&outside, net.join("10.10.0.2")).unwrap();
    std::fs::create_dir(net.join("10.10.0.3")).unwrap();
    // The names are taken, so allocation moves on.
    assert_eq!(
        call(OURS, "ADD", &c, "a", "eth0", &[]).ips(),
        ["10.10.0.4/29"]
    );
    // DEL and GC for the record in the symlink target touch nothing.
    assert!(call(OURS, "DEL", &c, "victim", "eth0", &[]).ok);
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([]);
    assert!(call(OURS, "GC", &g, "", "", &[]).ok);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "victim\r\neth0");
    assert!(std::fs::symlink_metadata(net.join("10.10.0.2"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(net.join("10.10.0.3").is_dir());
    assert_eq!(
        names(&net),
        ["10.10.0.2", "10.10.0.3", "last_reserved_ip.0", "lock"]
    );
}

#[test]
fn version_command() {
    let out = call_raw(OURS, "VERSION", b"", "", "", &[]);
    assert!(out.ok);
    assert_eq!(out.json["cniVersion"], "1.1.0");
    assert!(out.json["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("0.3.1")));
}

#[test]
fn long_container_ids_are_released_by_del() {
    let (_t, dir) = tempdir();
    let c = v4(&dir);
    let net = dir.join("net1");
    // Over 4,096 characters DEL used to answer 0 and keep the lease; 1024
    // is the longest Plexus accepts (plexus_cni::validate).
    for len in [300, 1_024] {
        let cid = format!("c{}", "x".repeat(len - 1));
        assert_eq!(
            call(OURS, "ADD", &c, &cid, "eth0", &[]).ips(),
            ["10.10.0.2/24"]
        );
        assert!(call(OURS, "CHECK", &c, &cid, "eth0", &[]).ok, "{len}");
        let del = call(OURS, "DEL", &c, &cid, "eth0", &[]);
        assert!(del.ok, "{len}: {}", del.raw);
        assert_eq!(
            names(&net),
            ["last_reserved_ip.0", "lock"],
            "{len}: lease kept"
        );
        // Round robin would move on; start over for the next length.
        std::fs::remove_file(net.join("last_reserved_ip.0")).unwrap();
    }
}

#[test]
fn container_ids_over_the_limit_are_code_4_and_change_nothing() {
    let (_t, dir) = tempdir();
    let c = v4(&dir);
    assert_eq!(
        call(OURS, "ADD", &c, "c1", "eth0", &[]).ips(),
        ["10.10.0.2/24"]
    );
    let before = snapshot(&dir);
    // 100,000 bytes went into a lease file before the limit.
    for len in [1_025, 100_000] {
        let cid = "c".repeat(len);
        for cmd in ["ADD", "CHECK", "DEL"] {
            let out = call(OURS, cmd, &c, &cid, "eth0", &[]);
            assert_eq!(out.code(), 4, "{len} {cmd}: {}", out.raw);
            assert!(out.raw.contains("at most 1024"), "{len} {cmd}: {}", out.raw);
        }
        assert_eq!(snapshot(&dir), before, "{len}");
    }
}

#[test]
fn resolv_conf_is_read_with_a_limit() {
    let (_t, dir) = tempdir();
    let big = dir.join("big.conf");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    for path in [std::path::Path::new("/dev/zero"), big.as_path()] {
        let c = conf(
            "1.0.0",
            "net1",
            &dir,
            json!({"subnet": "10.10.0.0/24", "resolvConf": path}),
        );
        let out = call(OURS, "ADD", &c, "ctr1", "eth0", &[]);
        assert_eq!(out.code(), 5, "{}: {}", path.display(), out.raw);
        assert!(out.raw.contains("resolvConf"), "{}", out.raw);
        assert!(!dir.join("net1").exists(), "nothing allocated");
    }
}

/// [`v4`] in a version that has GC and STATUS.
fn v4_gc(dir: &std::path::Path) -> Value {
    conf("1.1.0", "net1", dir, json!({"subnet": "10.10.0.0/24"}))
}

/// Every command on `c`: each must refuse with code 5, naming `refused`.
fn assert_every_command_refuses(c: &Value, refused: &std::path::Path) {
    for cmd in ["ADD", "CHECK", "DEL", "GC", "STATUS"] {
        let out = call(OURS, cmd, c, "ctr1", "eth0", &[]);
        assert_eq!(out.code(), 5, "{cmd}: {}", out.raw);
        let msg = out.json["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(&refused.display().to_string()), "{cmd}: {msg}");
    }
}

#[test]
fn a_network_directory_planted_as_a_symlink_is_refused() {
    let (_t, dir) = tempdir();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    // Someone else's leases (and lock) behind the link: untouched.
    std::fs::write(elsewhere.join("10.10.0.2"), "other\r\neth0").unwrap();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(&elsewhere, data.join("net1")).unwrap();
    let c = v4_gc(&data);
    let before = snapshot(&elsewhere);
    assert_every_command_refuses(&c, &data.join("net1"));
    let out = call(OURS, "ADD", &c, "ctr1", "eth0", &[]);
    assert!(
        out.json["msg"].as_str().unwrap().contains("symbolic link"),
        "{}",
        out.raw
    );
    assert_eq!(snapshot(&elsewhere), before, "written through the link");

    // dataDir itself a link: the same.
    let linked = dir.join("linked");
    std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
    assert_every_command_refuses(&v4_gc(&linked), &linked);
    assert_eq!(snapshot(&elsewhere), before, "written through the link");
}

#[test]
fn a_network_directory_of_another_user_is_refused() {
    if !is_root_or_skip() {
        return;
    }
    let (_t, dir) = tempdir();
    let net = dir.join("net1");
    std::fs::create_dir(&net).unwrap();
    std::os::unix::fs::chown(&net, Some(65534), Some(65534)).unwrap();
    let c = v4_gc(&dir);
    assert_every_command_refuses(&c, &net);
    let out = call(OURS, "ADD", &c, "ctr1", "eth0", &[]);
    assert!(
        out.json["msg"].as_str().unwrap().contains("uid 65534"),
        "{}",
        out.raw
    );
    assert!(names(&net).is_empty(), "written into it: {:?}", names(&net));
    // Given back to root, the same directory works.
    std::os::unix::fs::chown(&net, Some(0), Some(0)).unwrap();
    assert_eq!(
        call(OURS, "ADD", &c, "ctr1", "eth0", &[]).ips(),
        ["10.10.0.2/24"]
    );
}

/// Root, or a SKIP (a failure under `PLEXUS_REQUIRE_ALL=1`): only root can
/// give a directory to another user.
fn is_root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("PLEXUS_REQUIRE_ALL").is_none_or(|v| v != "1"),
        "PLEXUS_REQUIRE_ALL=1 and this test needs root to chown a directory"
    );
    eprintln!("SKIPPED: needs root to chown a directory");
    false
}
