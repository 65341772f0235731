//! `plexusctl bgp status [--run-dir DIR] [--json]`: the local agent's BGP
//! neighbours, like `calicoctl node status`: peer address, type
//! (node-to-node mesh / global / node specific / route reflector...),
//! state, since, info. Asked over `<run-dir>/plexusd.sock`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use plexus_agent_api::{
    call, BgpRoutes, BgpRoutesQuery, BgpStatus, Request, DEFAULT_TIMEOUT, SOCKET_NAME,
};

#[derive(Args)]
pub struct BgpStatusCmd {
    /// plexusd's --run-dir.
    #[arg(long, default_value = "/run/plexus")]
    run_dir: PathBuf,
}

#[derive(Args)]
pub struct BgpRoutesCmd {
    /// plexusd's --run-dir.
    #[arg(long, default_value = "/run/plexus")]
    run_dir: PathBuf,
    /// Only what this peer sent.
    #[arg(long, value_name = "ADDRESS")]
    peer: Option<std::net::IpAddr>,
}

/// `plexusctl bgp routes [--peer ADDR] [--json]`.
pub fn run_routes(c: BgpRoutesCmd, json: bool) -> ExitCode {
    let sock = c.run_dir.join(SOCKET_NAME);
    let q = Request::BgpRoutes(BgpRoutesQuery { peer: c.peer });
    let r: BgpRoutes = match call(&sock, &q, DEFAULT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("plexusctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        serde_json::to_string_pretty(&r).unwrap_or_default() + "\n"
    } else {
        render_routes(&r)
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

pub fn render_routes(r: &BgpRoutes) -> String {
    if r.routes.is_empty() {
        return "No routes received.\n".into();
    }
    let rows: Vec<[String; 7]> = r
        .routes
        .iter()
        .map(|x| {
            let mark = match (x.best, x.multipath) {
                (true, _) => "*",
                (false, true) => "=",
                _ => "",
            };
            let path: Vec<String> = x.as_path.iter().map(ToString::to_string).collect();
            [
                format!("{mark}{}", x.prefix),
                x.peer.clone(),
                x.next_hop.clone().unwrap_or_else(|| "-".into()),
                if path.is_empty() {
                    "-".into()
                } else {
                    path.join(" ")
                },
                if x.communities.is_empty() {
                    "-".into()
                } else {
                    x.communities.join(",")
                },
                match &x.stage {
                    Some(s) => format!("rejected ({s})"),
                    None if x.stale => "accepted (stale)".into(),
                    None => "accepted".into(),
                },
                x.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = Vec::new();
    let _ = crate::table::write_table(
        &mut out,
        [
            "PREFIX",
            "PEER",
            "NEXT HOP",
            "AS PATH",
            "COMMUNITIES",
            "VERDICT",
            "WHY",
        ],
        &rows,
    );
    let mut s = String::from_utf8_lossy(&out).into_owned();
    s.push_str("* best (installed), = also installed (ECMP)\n");
    s
}

/// `json`: print the agent's JSON answer (`plexusctl bgp status --json`).
pub fn run(c: BgpStatusCmd, json: bool) -> ExitCode {
    let sock = c.run_dir.join(SOCKET_NAME);
    let st: BgpStatus = match call(&sock, &Request::BgpStatus, DEFAULT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("plexusctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        serde_json::to_string_pretty(&st).unwrap_or_default() + "\n"
    } else {
        render(&st, SystemTime::now())
    };
    // stdout is the command's output; a closed pipe is not our failure.
    let _ = std::io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// "5s", "3m12s", "2h05m", "3d04h" ago.
fn age(since: u64, now: SystemTime) -> String {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(since);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub fn render(st: &BgpStatus, now: SystemTime) -> String {
    let mut rows = vec![[
        "PEER ADDRESS".to_string(),
        "PEER TYPE".into(),
        "AS".into(),
        "STATE".into(),
        "SINCE".into(),
        "BFD".into(),
        "PREFIXES RCV/ACC/FILT/SENT".into(),
        "INFO".into(),
    ]];
    for p in &st.peers {
        rows.push([
            p.address.clone(),
            p.kind.clone(),
            p.asn.to_string(),
            p.state.clone(),
            age(p.since, now),
            p.bfd.clone().unwrap_or_else(|| "-".into()),
            format!(
                "{}/{}/{}/{}",
                p.prefixes_received,
                p.prefixes_accepted,
                p.prefixes_rejected_by_guard + p.prefixes_rejected_by_filter,
                p.prefixes_sent
            ),
            match (&p.last_error, p.state.as_str()) {
                (Some(e), s) if s != "Established" => e.clone(),
                _ => p.info.clone(),
            },
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut o = format!("BGP router ID {}, AS {}\n", st.router_id, st.asn);
    if st.peers.is_empty() {
        o.push_str("No BGP peers.\n");
        return o;
    }
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(o, "{}", line.join("  ").trim_end());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_agent_api::BgpPeer;
    use std::time::Duration;

    #[test]
    fn table_like_calicoctl() {
        let st = BgpStatus {
            router_id: "10.0.0.1".into(),
            asn: 64512,
            peers: vec![BgpPeer {
                address: "10.0.0.2".into(),
                asn: 64512,
                kind: "node-to-node mesh".into(),
                state: "Established".into(),
                since: 1000,
                info: "1 received, 1 sent".into(),
                prefixes_received: 1,
                prefixes_sent: 1,
                prefixes_accepted: 1,
                prefixes_rejected: 0,
                prefixes_rejected_by_guard: 0,
                prefixes_rejected_by_filter: 0,
                bfd: Some("Up".into()),
                last_error: None,
            }],
        };
        let out = render(&st, UNIX_EPOCH + Duration::from_secs(1192));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "BGP router ID 10.0.0.1, AS 64512");
        assert!(lines[1].starts_with("PEER ADDRESS  PEER TYPE"));
        assert_eq!(
            lines[2],
            "10.0.0.2      node-to-node mesh  64512  Established  3m12s  Up   1/1/0/1                     1 received, 1 sent"
        );
        assert_eq!(age(0, UNIX_EPOCH + Duration::from_secs(90_000)), "1d01h");
    }

    #[test]
    fn routes_say_why() {
        let row = |prefix: &str, stage: Option<&str>, reason: Option<&str>, best: bool| {
            plexus_agent_api::BgpRoute {
                peer: "10.0.0.9".into(),
                prefix: prefix.into(),
                next_hop: Some("10.0.0.9".into()),
                as_path: vec![65000],
                communities: vec!["65000:100".into()],
                verdict: if stage.is_some() {
                    "rejected"
                } else {
                    "accepted"
                }
                .into(),
                stage: stage.map(String::from),
                reason: reason.map(String::from),
                best,
                multipath: false,
                stale: false,
            }
        };
        let out = render_routes(&BgpRoutes {
            routes: vec![
                row("198.51.100.0/24", None, None, true),
                row(
                    "203.0.113.0/24",
                    Some("filter"),
                    Some("filter \"edge\" rule 1 rejects it"),
                    false,
                ),
            ],
        });
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("PREFIX"), "{out}");
        assert!(
            lines[1].starts_with("*198.51.100.0/24") && lines[1].contains("accepted"),
            "{out}"
        );
        assert!(
            lines[2].contains("rejected (filter)")
                && lines[2].ends_with("filter \"edge\" rule 1 rejects it"),
            "{out}"
        );
        assert_eq!(
            render_routes(&BgpRoutes { routes: vec![] }),
            "No routes received.\n"
        );
    }
}
