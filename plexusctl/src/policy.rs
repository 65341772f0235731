//! `plexusctl policy show [NAMESPACE/POD] [--run-dir DIR] [--json]`: the
//! local plexusd's network policy, per pod and interface: isolated for
//! ingress and egress, the policies selecting it, the packets and bytes
//! dropped so far. Asked over `<run-dir>/plexusd.sock`: no API access.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use plexus_agent_api::policy::{PolicyShow, PolicyStatus};
use plexus_agent_api::{call, Request, DEFAULT_TIMEOUT, SOCKET_NAME};

#[derive(Args)]
pub struct PolicyCmd {
    #[command(subcommand)]
    op: PolicyOp,
}

#[derive(Subcommand)]
enum PolicyOp {
    /// Every attached pod interface of this node, or one pod's.
    Show(ShowCmd),
}

#[derive(Args)]
struct ShowCmd {
    /// `namespace/name` of one pod.
    pod: Option<String>,
    /// plexusd's --run-dir.
    #[arg(long, default_value = "/run/plexus")]
    run_dir: PathBuf,
    /// Print the agent's JSON answer.
    #[arg(long)]
    json: bool,
}

pub fn run(c: PolicyCmd) -> ExitCode {
    let PolicyOp::Show(s) = c.op;
    if let Some(p) = &s.pod {
        if p.split('/').count() != 2 || p.starts_with('/') || p.ends_with('/') {
            eprintln!("plexusctl: {p:?}: give the pod as NAMESPACE/NAME");
            return ExitCode::from(2);
        }
    }
    let req = Request::PolicyShow(PolicyShow { pod: s.pod.clone() });
    let st: PolicyStatus = match call(&s.run_dir.join(SOCKET_NAME), &req, DEFAULT_TIMEOUT) {
        Ok(st) => st,
        Err(e) => {
            eprintln!("plexusctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if s.json {
        serde_json::to_string_pretty(&st).unwrap_or_default() + "\n"
    } else {
        render(&st)
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

pub fn render(st: &PolicyStatus) -> String {
    let mut out = Vec::new();
    let _ = writeln!(
        out,
        "{} policies known{}",
        st.policies,
        if st.synced {
            ""
        } else {
            " (the API is not listed yet)"
        }
    );
    if st.interfaces.is_empty() {
        let _ = writeln!(out, "No attached pod interfaces.");
    } else {
        let rows: Vec<[String; 7]> = st
            .interfaces
            .iter()
            .map(|i| {
                [
                    format!("{}/{}", i.namespace, i.pod),
                    i.interface.clone(),
                    i.network.clone(),
                    yes_no(i.ingress_isolated),
                    yes_no(i.egress_isolated),
                    format!(
                        "{}/{} {}/{}",
                        i.ingress_dropped.packets,
                        i.ingress_dropped.bytes,
                        i.egress_dropped.packets,
                        i.egress_dropped.bytes
                    ),
                    if i.policies.is_empty() {
                        "-".to_string()
                    } else {
                        i.policies.join(", ")
                    } + if i.programmed {
                        ""
                    } else {
                        " (not programmed)"
                    },
                ]
            })
            .collect();
        let _ = crate::table::write_table(
            &mut out,
            [
                "POD",
                "INTERFACE",
                "NETWORK",
                "INGRESS ISOLATED",
                "EGRESS ISOLATED",
                "DROPPED IN/OUT (PKTS/BYTES)",
                "POLICIES",
            ],
            &rows,
        );
    }
    for p in &st.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_agent_api::policy::{PolicyCount, PolicyInterfaceStatus};

    #[test]
    fn one_row_per_interface() {
        let st = PolicyStatus {
            policies: 2,
            synced: true,
            interfaces: vec![PolicyInterfaceStatus {
                namespace: "x".into(),
                pod: "a".into(),
                interface: "net1".into(),
                network: "x/macvlan1".into(),
                ingress_isolated: true,
                egress_isolated: false,
                policies: vec!["MultiNetworkPolicy x/m".into()],
                ingress_dropped: PolicyCount {
                    packets: 3,
                    bytes: 180,
                },
                egress_dropped: PolicyCount::default(),
                programmed: true,
            }],
            problems: vec!["MultiNetworkPolicy x/m: bad cidr".into()],
        };
        let out = render(&st);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "2 policies known");
        assert!(lines[1].starts_with("POD  INTERFACE  NETWORK"), "{out}");
        assert!(
            lines[2].starts_with("x/a  net1       x/macvlan1  yes"),
            "{out}"
        );
        assert!(lines[2].contains("3/180 0/0"), "{out}");
        assert!(lines[3].starts_with("problem: "), "{out}");
    }
}
