//! Ours against the Debian reference binary (/usr/lib/cni/host-local): the
//! same calls in separate data directories must give the same allocations
//! and byte-identical directories; and a node may switch binaries between
//! any two calls without losing or duplicating an allocation.
//!
//! Skips (with a message on stderr) when the reference is not installed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use common::*;
use serde_json::{json, Value};

#[derive(Clone)]
enum Step {
    Add(&'static str, &'static str),
    /// ADD with `CNI_ARGS`.
    AddArgs(&'static str, &'static str, &'static str),
    /// ADD with extra top-level config keys merged in (args, runtimeConfig).
    AddConf(&'static str, &'static str, Value),
    Del(&'static str, &'static str),
}

use Step::*;

/// What a step must give, whichever binary runs it: comparing the two alone
/// would pass if both failed the same way.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// ADD succeeds with exactly these addresses.
    Ips(&'static [&'static str]),
    /// The call fails.
    Refused,
    /// DEL succeeds.
    Done,
}

use Want::*;

fn assert_want(got: &(bool, Vec<String>), want: Want, ctx: &str) {
    match want {
        Ips(ips) => assert_eq!(
            got,
            &(true, ips.iter().map(|s| s.to_string()).collect()),
            "{ctx}"
        ),
        Refused => assert!(!got.0, "{ctx}: expected a failure, got {got:?}"),
        Done => assert_eq!(got, &(true, Vec::new()), "{ctx}"),
    }
}

fn run_step(bin: &str, base: &Value, step: &Step) -> (bool, Vec<String>) {
    let out = match step {
        Add(c, i) => call(bin, "ADD", base, c, i, &[]),
        AddArgs(c, i, a) => call(bin, "ADD", base, c, i, &[("CNI_ARGS", a)]),
        AddConf(c, i, extra) => {
            let mut conf = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                conf[k] = v.clone();
            }
            call(bin, "ADD", &conf, c, i, &[])
        }
        Del(c, i) => call(bin, "DEL", base, c, i, &[]),
    };
    let ips = if out.ok && matches!(step, Add(..) | AddArgs(..) | AddConf(..)) {
        out.ips()
    } else {
        Vec::new()
    };
    (out.ok, ips)
}

type Snap = BTreeMap<String, (String, u32)>;

/// Names and contents must be identical. Modes must be identical too, with one
/// known exception: a reservation or last-reserved file we wrote is 0600
/// (upstream since v1.2) where Debian's 1.1.1 reference writes 0644.
fn assert_same_dir(ours: &Snap, theirs: &Snap, ctx: &str) {
    let strip = |s: &Snap| -> BTreeMap<String, String> {
        s.iter().map(|(k, (c, _))| (k.clone(), c.clone())).collect()
    };
    assert_eq!(
        strip(ours),
        strip(theirs),
        "{ctx}: directory contents differ"
    );
    for (name, (_, mode)) in ours {
        let their = theirs[name].1;
        let known_difference =
            !name.ends_with('/') && !name.ends_with("/lock") && *mode == 0o600 && their == 0o644;
        assert!(
            *mode == their || known_difference,
            "{ctx}: mode of {name}: ours {mode:o}, reference {their:o}"
        );
    }
}

/// Run `steps` with both binaries in their own data directories, comparing
/// results and directories after every step.
fn differential(name: &str, ipam: Value, setup: impl Fn(&Path), steps: &[(Step, Want)]) {
    let Some(reference) = reference() else { return };
    let (_t1, ours_dir) = tempdir();
    let (_t2, ref_dir) = tempdir();
    setup(&ours_dir);
    setup(&ref_dir);
    let ours_conf = conf("1.0.0", name, &ours_dir, ipam.clone());
    let ref_conf = conf("1.0.0", name, &ref_dir, ipam);
    for (n, (step, want)) in steps.iter().enumerate() {
        let a = run_step(OURS, &ours_conf, step);
        let b = run_step(reference, &ref_conf, step);
        assert_want(&b, *want, &format!("{name} step {n}: the reference"));
        assert_want(&a, *want, &format!("{name} step {n}: ours"));
        assert_eq!(a, b, "step {n}: ours vs reference");
        assert_same_dir(
            &snapshot(&ours_dir),
            &snapshot(&ref_dir),
            &format!("after step {n}"),
        );
    }
}

#[test]
fn single_range_wrap_around_requested_and_exhaustion() {
    // Five usable addresses (.12 is the gateway, inside the range).
    let ipam = json!({"subnet": "10.70.0.0/24", "rangeStart": "10.70.0.10",
                      "rangeEnd": "10.70.0.15", "gateway": "10.70.0.12"});
    differential(
        "wrap",
        ipam,
        |_| {},
        &[
            (Add("c0", "eth0"), Ips(&["10.70.0.10/24"])),
            (Add("c1", "eth0"), Ips(&["10.70.0.11/24"])),
            (Add("c2", "eth0"), Ips(&["10.70.0.13/24"])), // .12 is the gateway
            (Add("c3", "eth0"), Ips(&["10.70.0.14/24"])),
            (Del("c1", "eth0"), Done),
            (Add("c4", "eth0"), Ips(&["10.70.0.15/24"])),
            (Add("c5", "eth0"), Ips(&["10.70.0.11/24"])), // wraps around to the freed .11
            (AddArgs("c6", "eth0", "IP=10.70.0.14"), Refused), // taken
            (Del("c0", "eth0"), Done),
            (
                AddArgs("c6", "eth0", "IP=10.70.0.10"),
                Ips(&["10.70.0.10/24"]),
            ),
            (Add("c7", "eth0"), Refused), // exhausted
            (Del("c2", "eth0"), Done),
            (Del("c2", "eth0"), Done),
            (Del("nobody", "eth0"), Done),
            (Add("c2", "eth1"), Ips(&["10.70.0.13/24"])),
            (Add("c2", "eth1"), Refused), // duplicate ADD is refused by both
            (
                AddArgs("c8", "eth0", "IgnoreUnknown=1;IP=10.70.0.13"),
                Refused,
            ), // taken
            (Del("c3", "eth0"), Done),
            (Add("c9", "eth0"), Ips(&["10.70.0.14/24"])),
        ],
    );
}

#[test]
fn dual_stack_multi_range_and_capabilities() {
    let ipam = json!({"ranges": [
        [{"subnet": "10.71.0.0/29"}, {"subnet": "10.71.1.0/29", "rangeStart": "10.71.1.4"}],
        [{"subnet": "fd71::/125"}]
    ], "routes": [{"dst": "0.0.0.0/0"}]});
    let steps = vec![
        (Add("a", "eth0"), Ips(&["10.71.0.2/29", "fd71::2/125"])),
        (Add("b", "eth0"), Ips(&["10.71.0.3/29", "fd71::3/125"])),
        (Add("c", "eth0"), Ips(&["10.71.0.4/29", "fd71::4/125"])),
        (Add("d", "eth0"), Ips(&["10.71.0.5/29", "fd71::5/125"])),
        (Add("e", "eth0"), Ips(&["10.71.0.6/29", "fd71::6/125"])),
        // The first range is full: the second one, from its rangeStart.
        (
            AddConf("r1", "eth0", json!({"runtimeConfig": {"ips": ["fd71::7"]}})),
            Ips(&["10.71.1.4/29", "fd71::7/125"]),
        ),
        (Del("b", "eth0"), Done),
        (Del("d", "eth0"), Done),
        (
            AddConf(
                "r2",
                "net1",
                json!({"args": {"cni": {"ips": ["10.71.1.5", "fd71::3"]}}}),
            ),
            Ips(&["10.71.1.5/29", "fd71::3/125"]),
        ),
        (Add("f", "eth0"), Ips(&["10.71.1.6/29", "fd71::5/125"])),
        // v6 (6 addresses) runs out first.
        (Add("g", "eth0"), Refused),
        (Add("h", "eth0"), Refused),
        (Add("i", "eth0"), Refused),
        (Del("a", "eth0"), Done),
        (Del("r2", "net1"), Done),
        // The failed ADDs moved the v4 round robin on (as the reference).
        (Add("j", "eth0"), Ips(&["10.71.0.5/29", "fd71::2/125"])),
        (Add("k", "eth0"), Ips(&["10.71.1.5/29", "fd71::3/125"])),
    ];
    differential("ds", ipam, |_| {}, &steps);
}

#[test]
fn legacy_files_are_released_like_the_reference() {
    let setup = |dir: &Path| {
        let net = dir.join("legacy");
        std::fs::create_dir_all(&net).unwrap();
        // Files from host-local versions that stored only the container ID.
        std::fs::write(net.join("10.72.0.5"), "old1").unwrap();
        std::fs::write(net.join("10.72.0.6"), "old2\n").unwrap();
        std::fs::write(net.join("10.72.0.7"), "old2").unwrap();
    };
    differential(
        "legacy",
        json!({"subnet": "10.72.0.0/24"}),
        setup,
        &[
            // A legacy record counts as this attachment's: refused.
            (Add("old1", "eth0"), Refused),
            (Add("old2", "eth0"), Refused),
            (Del("old2", "eth0"), Done), // exact match found: legacy ones stay
            (Del("old2", "eth0"), Done), // now the legacy ones go
            (Del("old1", "eth9"), Done),
            (Add("n", "eth0"), Ips(&["10.72.0.2/24"])),
        ],
    );
}

/// Alternate binaries call by call; the mixed run must end exactly where a
/// reference-only run ends, with no address ever held twice.
#[test]
fn switching_binaries_back_and_forth() {
    let Some(reference) = reference() else { return };
    let ipam = json!({"ranges": [[{"subnet": "10.73.0.0/28"}], [{"subnet": "fd73::/124"}]]});
    let steps: Vec<Step> = vec![
        Add("a", "eth0"),
        Add("b", "eth0"),
        Add("c", "eth0"),
        Del("b", "eth0"),
        Add("d", "eth0"),
        Add("e", "eth0"),
        Del("a", "eth0"),
        AddArgs("f", "eth0", "IP=10.73.0.2"),
        Add("g", "eth0"),
        Del("c", "eth0"),
        Add("h", "eth0"),
    ];
    for pattern in [[true, false], [false, true]] {
        let (_t1, mixed_dir) = tempdir();
        let (_t2, ref_dir) = tempdir();
        let mixed_conf = conf("1.0.0", "sw", &mixed_dir, ipam.clone());
        let ref_conf = conf("1.0.0", "sw", &ref_dir, ipam.clone());
        let mut held: BTreeMap<String, &str> = BTreeMap::new();
        for (n, step) in steps.iter().enumerate() {
            let bin = if pattern[n % 2] { OURS } else { reference };
            let a = run_step(bin, &mixed_conf, step);
            let b = run_step(reference, &ref_conf, step);
            assert_eq!(a, b, "step {n} ({bin})");
            match step {
                Add(c, _) | AddArgs(c, _, _) => {
                    for ip in a.1 {
                        assert!(
                            held.insert(ip.clone(), c).is_none(),
                            "{ip} handed out twice"
                        );
                    }
                }
                Del(c, _) => held.retain(|_, owner| owner != c),
                AddConf(..) => unreachable!(),
            }
            assert_same_dir(
                &snapshot(&mixed_dir),
                &snapshot(&ref_dir),
                &format!("step {n}"),
            );
        }
        let files: HashSet<String> = names(&mixed_dir.join("sw"))
            .into_iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        let expect: HashSet<String> = held
            .keys()
            .map(|k| k.split('/').next().unwrap().to_string())
            .collect();
        assert_eq!(files, expect);
        // Both binaries can CHECK and DEL what the other allocated.
        for (i, id) in ["d", "e", "f", "g", "h"].iter().enumerate() {
            let (check_bin, del_bin) = if i % 2 == 0 {
                (OURS, reference)
            } else {
                (reference, OURS)
            };
            assert!(
                call(check_bin, "CHECK", &mixed_conf, id, "eth0", &[]).ok,
                "CHECK {id}"
            );
            assert!(
                call(del_bin, "DEL", &mixed_conf, id, "eth0", &[]).ok,
                "DEL {id}"
            );
        }
        assert_eq!(
            names(&mixed_dir.join("sw")),
            ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
        );
    }
}
