//! Pod-to-pod TCP throughput with iperf3: a server in one netns (killed by
//! its pid on drop), a client run from another.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plexus_tests::Netns;

pub struct Server(Child);

impl Server {
    pub fn start(ns: &Netns) -> Server {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args(["iperf3", "-s", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 -s");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bits per second received by the server at `ip`, sent from `client`
/// for `secs` seconds; a few tries while the server starts listening.
pub fn run(client: &Netns, ip: &str, secs: u64) -> Result<f64, String> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", client.path().display()))
            .args([
                "iperf3",
                "-c",
                ip,
                "-p",
                "5201",
                "-J",
                "-t",
                &secs.to_string(),
            ])
            .output()
            .map_err(|e| format!("spawn iperf3: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps);
        }
        last = format!("{} {}", v["error"], String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("iperf3 to {ip} from {}: {last}", client.name))
}
