//! Many processes at once, and processes that die mid-call.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn spawn(bin: &str, cmd: &str, conf: &Value, cid: &str) -> Child {
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", "/var/run/netns/x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Writing closes stdin at once, so all processes race for the lock.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child
}

fn finish(children: Vec<(String, Child)>) -> Vec<(String, Value)> {
    children
        .into_iter()
        .map(|(cid, c)| {
            let o = c.wait_with_output().unwrap();
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(o.status.success(), "{cid}: {s}");
            let v = if s.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&s).unwrap()
            };
            (cid, v)
        })
        .collect()
}

#[test]
fn sixty_four_concurrent_adds_then_dels() {
    let (_t, dir) = tempdir();
    let c = conf(
        "1.0.0",
        "race",
        &dir,
        json!({"ranges": [[{"subnet": "10.80.0.0/24"}], [{"subnet": "fd80::/64"}]]}),
    );
    let ids: Vec<String> = (0..64).map(|i| format!("ctr{i}")).collect();
    let children = ids
        .iter()
        .map(|id| (id.clone(), spawn(OURS, "ADD", &c, id)))
        .collect();
    let results = finish(children);
    let mut seen = HashSet::new();
    for (cid, r) in &results {
        for ip in r["ips"].as_array().unwrap() {
            let addr = ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string();
            let content = std::fs::read_to_string(dir.join("race").join(&addr)).unwrap();
            assert_eq!(content, format!("{cid}\r\neth0"), "{addr} belongs to {cid}");
            assert!(seen.insert(addr.clone()), "{addr} handed out twice");
        }
    }
    assert_eq!(
        seen.len(),
        128,
        "64 distinct IPv4 and 64 distinct IPv6 addresses"
    );
    // Together they fill the first 64 addresses of each range, whatever the order.
    for i in 2..66 {
        assert!(seen.contains(&format!("10.80.0.{i}")), "10.80.0.{i}");
        assert!(seen.contains(&format!("fd80::{i:x}")), "fd80::{i:x}");
    }
    let children = ids
        .iter()
        .map(|id| (id.clone(), spawn(OURS, "DEL", &c, id)))
        .collect();
    finish(children);
    assert_eq!(
        names(&dir.join("race")),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}

/// Ours and the reference share the lock file, so racing each other is as
/// safe as racing ourselves.
#[test]
fn concurrent_adds_mixed_with_the_reference() {
    let Some(reference) = reference() else { return };
    let (_t, dir) = tempdir();
    let c = conf("1.0.0", "mixed", &dir, json!({"subnet": "10.81.0.0/24"}));
    let children = (0..64)
        .map(|i| {
            let id = format!("m{i}");
            let bin = if i % 2 == 0 { OURS } else { reference };
            (id.clone(), spawn(bin, "ADD", &c, &id))
        })
        .collect();
    let results = finish(children);
    let addrs: HashSet<String> = results
        .iter()
        .map(|(_, r)| r["ips"][0]["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(addrs.len(), 64);
    let files = names(&dir.join("mixed"));
    assert_eq!(files.len(), 64 + 2);
}

/// A process killed while it waits for the lock leaves nothing behind; a
/// reservation left by a container that died without DEL (or by a process
/// killed between reserving and answering) is complete and is removed by DEL
/// or GC, as is a temporary file from a process killed while writing.
#[test]
fn killed_and_dead_callers_leave_cleanable_state() {
    let (_t, dir) = tempdir();
    let mut c = conf("1.1.0", "kill", &dir, json!({"subnet": "10.82.0.0/24"}));
    call(OURS, "ADD", &c, "alive", "eth0", &[]).ips();
    let net = dir.join("kill");
    let before = snapshot(&dir);

    // Hold the network lock, start an ADD (it cannot get past the lock),
    // SIGKILL it, release: nothing changed, whatever point it had reached.
    let lock = std::fs::File::open(net.join("lock")).unwrap();
    lock.lock().unwrap();
    let mut child = spawn(OURS, "ADD", &c, "victim");
    child.kill().unwrap();
    child.wait().unwrap();
    lock.unlock().unwrap();
    drop(lock);
    assert_eq!(snapshot(&dir), before);

    // What a kill after the reservation looks like: a complete file with no
    // answer to the runtime, and an orphaned temporary file.
    std::fs::write(net.join("10.82.0.3"), "dead1\r\neth0").unwrap();
    std::fs::write(net.join("10.82.0.4"), "dead2\r\neth0").unwrap();
    std::fs::write(net.join(".plexus-tmp.reserve"), "dead3\r\neth0").unwrap();
    // The runtime retries DEL for dead1: gone.
    assert!(call(OURS, "DEL", &c, "dead1", "eth0", &[]).ok);
    assert!(!net.join("10.82.0.3").exists());
    assert!(!net.join(".plexus-tmp.reserve").exists());
    // dead2's runtime never comes back: GC with the live attachments.
    std::fs::write(net.join(".plexus-tmp.last"), "10.82.0.4").unwrap();
    c["cni.dev/valid-attachments"] = json!([{"containerID": "alive", "ifname": "eth0"}]);
    assert!(call(OURS, "GC", &c, "", "", &[]).ok);
    assert_eq!(snapshot(&dir), before);
}
