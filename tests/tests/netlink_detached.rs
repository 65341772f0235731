//! `Netlink::delete_link_detached` against the real kernel, in test netns:
//! the link (both veth ends, across namespaces) is gone when the call
//! returns, kernel errors come back as errors, and the caller's stdout is
//! not held open by the deleting process.

use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use plexus_netlink::{Netlink, Netns as NlNetns};
use plexus_tests::{require_root, Netns};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn index(ns: &Netns, name: &str) -> u32 {
    ns.ip_json(&["link", "show", name])[0]["ifindex"]
        .as_u64()
        .unwrap() as u32
}

#[test]
fn veth_pair_is_gone_when_the_call_returns() {
    require_root!();
    let a = Netns::new("dla");
    let b = Netns::new("dlb");
    a.ip(&["link", "add", "br0", "type", "bridge"]);
    a.ip(&["link", "set", "br0", "up"]);
    a.ip(&[
        "link", "add", "h0", "type", "veth", "peer", "name", "e0", "netns", &b.name,
    ]);
    a.ip(&["link", "set", "h0", "master", "br0", "up"]);
    b.ip(&["addr", "add", "10.9.0.2/24", "dev", "e0"]);
    b.ip(&["link", "set", "e0", "up"]);
    let idx = index(&b, "e0");
    let ns = NlNetns::open(b.path()).unwrap();
    rt().block_on(async {
        let nl = Netlink::open(&ns).await.unwrap();
        nl.delete_link_detached(idx).await.unwrap();
    });
    assert!(!b.has_link("e0"), "{:?}", b.links());
    assert!(!a.has_link("h0"), "{:?}", a.links());
    assert_eq!(b.ip(&["route", "show"]).trim(), "");
    assert_eq!(
        a.ip(&["link", "show", "master", "br0"]).trim(),
        "",
        "bridge port left"
    );
    // The name is free at once.
    b.ip(&["link", "add", "e0", "type", "veth", "peer", "name", "e1"]);
}

#[test]
fn kernel_errors_are_reported() {
    require_root!();
    let a = Netns::new("dle");
    let ns = NlNetns::open(a.path()).unwrap();
    rt().block_on(async {
        let nl = Netlink::open(&ns).await.unwrap();
        let e = nl.delete_link_detached(4000).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        // Loopback cannot be deleted: the kernel refuses, the link stays.
        let e = nl.delete_link_detached(1).await.unwrap_err();
        assert!(e.raw_errno().is_some(), "{e}");
    });
    assert!(a.has_link("lo"));
}

/// A runtime reads a plugin's stdout to EOF: the process left behind to
/// finish the kernel's wait must not keep it open. A child (this test binary,
/// re-run with only this test) deletes a veth and exits; as soon as it has
/// exited, its stdout pipe must be at EOF, while a deleter still holding the
/// pipe would be sitting in the kernel for another ~15 ms.
#[test]
fn stdout_is_not_held_by_the_deleter() {
    require_root!();
    if let Ok(ns_path) = std::env::var("PLX_DETACHED_CHILD_NS") {
        let ns = NlNetns::open(&ns_path).unwrap();
        let idx: u32 = std::env::var("PLX_DETACHED_CHILD_IDX")
            .unwrap()
            .parse()
            .unwrap();
        rt().block_on(async {
            let nl = Netlink::open(&ns).await.unwrap();
            nl.delete_link_detached(idx).await.unwrap();
        });
        return;
    }
    let a = Netns::new("dls");
    a.ip(&["link", "add", "x0", "type", "veth", "peer", "name", "x1"]);
    let idx = index(&a, "x0");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stdout_is_not_held_by_the_deleter",
            "--nocapture",
        ])
        .env("PLX_DETACHED_CHILD_NS", a.path())
        .env("PLX_DETACHED_CHILD_IDX", idx.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    assert!(child.wait().unwrap().success());
    // SAFETY: a valid fd we own; only sets O_NONBLOCK.
    unsafe {
        libc::fcntl(stdout.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
    }
    let mut buf = [0u8; 4096];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                panic!("the child's stdout is still open after it exited")
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(!a.has_link("x0") && !a.has_link("x1"), "{:?}", a.links());
}
