//! A panicking plugin still answers with CNI error JSON on stdout (the
//! skeleton's panic hook), through a real process: debug builds panic on
//! purpose when PLEXUS_TEST_PANIC is set.

use std::process::Command;

use plexus_tests::{bin_dir, output_with_stdin};
use serde_json::Value;

#[test]
fn a_panic_is_a_cni_error_on_stdout() {
    let conf = br#"{"cniVersion":"0.4.0","name":"n","type":"x","ipam":{"type":"y"}}"#;
    let mut checked = 0;
    for plugin in ["plexus-bridge", "plexus-host-local", "plexus-ipvlan"] {
        let bin = bin_dir().join(plugin);
        if !bin.exists() {
            continue;
        }
        let mut c = Command::new(&bin);
        c.env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "c1")
            .env("CNI_NETNS", "/nonexistent")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/nonexistent")
            .env(plexus_cni::panic::TEST_TRIGGER, "1");
        let out = output_with_stdin(&mut c, conf);
        assert!(!out.status.success(), "{plugin}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{plugin}: stdout is not one JSON document ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(v["code"], 104, "{plugin}: {v}");
        assert_eq!(v["cniVersion"], "0.4.0", "{plugin}: {v}");
        let msg = v["msg"].as_str().unwrap();
        assert!(
            msg.contains("panicked") && msg.contains("PLEXUS_TEST_PANIC"),
            "{v}"
        );
        assert!(
            v["details"]
                .as_str()
                .unwrap()
                .contains("crates/cni/src/panic.rs:"),
            "{v}"
        );
        // The usual panic message still reaches stderr, for the logs.
        assert!(String::from_utf8_lossy(&out.stderr).contains("panicked"));
        checked += 1;
    }
    assert!(checked >= 2, "build the plugins first: cargo build --bins");
}
