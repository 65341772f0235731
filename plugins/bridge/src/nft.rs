//! nftables rules for ipMasq and macspoofchk, through the `nft` CLI in the
//! current (node) network namespace.
//!
//! Every attachment gets its own *base* chains, named from a hash of
//! network, interface and container ID, in Plexus's own tables
//! (`inet plexus_bridge` for masquerading, `bridge plexus_bridge` for the MAC
//! spoof check). Nothing else references those chains, so DEL removes them
//! with one fixed script (`add; flush; delete`) that needs neither the pod
//! netns nor its addresses, succeeds when they are already gone, and never
//! has to list the ruleset first. Chains and rules carry a comment naming
//! the network, interface and container ID so an operator can find them.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

pub const TABLE: &str = "plexus_bridge";
/// nftables comments hold at most 128 bytes.
const COMMENT_MAX: usize = 128;
const COMMENT_PREFIX: &str = "plexus-bridge";

/// One attachment's identity.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub ifname: &'a str,
    pub container_id: &'a str,
}

impl Attachment<'_> {
    fn hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [self.network, self.ifname, self.container_id] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn masq_chain(&self) -> String {
        format!("masq-{}", self.hash())
    }

    pub fn spoof_chain(&self) -> String {
        format!("spoof-{}", self.hash())
    }

    /// `plexus-bridge net: NET, if: IF, id: CONTAINERID` (truncated to fit).
    pub fn comment(&self) -> String {
        let clean = |s: &str| s.replace(['"', '\\', '\n'], "");
        let mut c = format!(
            "{COMMENT_PREFIX} net: {}, if: {}, id: {}",
            clean(self.network),
            clean(self.ifname),
            clean(self.container_id)
        );
        if c.len() > COMMENT_MAX {
            let mut end = COMMENT_MAX;
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            c.truncate(end);
        }
        c
    }
}

/// Parses a chain comment back into (network, ifname, container ID).
fn parse_comment(c: &str) -> Option<(&str, &str, &str)> {
    let rest = c.strip_prefix(COMMENT_PREFIX)?.strip_prefix(" net: ")?;
    let (net, rest) = rest.split_once(", if: ")?;
    let (ifname, id) = rest.split_once(", id: ")?;
    Some((net, ifname, id))
}

fn masq_chain_decl(a: &Attachment) -> String {
    format!(
        "add table inet {TABLE}\nadd chain inet {TABLE} {} {{ type nat hook postrouting priority srcnat; policy accept; comment \"{}\"; }}\n",
        a.masq_chain(),
        a.comment()
    )
}

fn spoof_chain_decl(a: &Attachment) -> String {
    format!(
        "add table bridge {TABLE}\nadd chain bridge {TABLE} {} {{ type filter hook prerouting priority -300; policy accept; comment \"{}\"; }}\n",
        a.spoof_chain(),
        a.comment()
    )
}

/// Masquerade traffic from each of `ips` to anything outside its subnet
/// (multicast excepted), like the reference's nftables backend.
pub fn masq_script(a: &Attachment, ips: &[IpNet]) -> String {
    let chain = a.masq_chain();
    let mut s = masq_chain_decl(a);
    s += &format!("flush chain inet {TABLE} {chain}\n");
    for ip in ips {
        let (fam, mcast) = if ip.addr().is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        s += &format!(
            "add rule inet {TABLE} {chain} {fam} saddr {} {fam} daddr != {} {fam} daddr != {mcast} masquerade comment \"{}\"\n",
            ip.addr(),
            ip.trunc(),
            a.comment()
        );
    }
    s
}

/// Drop frames entering from `host_veth` whose source MAC is not `mac`.
pub fn spoof_script(a: &Attachment, host_veth: &str, mac: &str) -> String {
    let chain = a.spoof_chain();
    let mut s = spoof_chain_decl(a);
    s += &format!("flush chain bridge {TABLE} {chain}\n");
    s += &format!(
        "add rule bridge {TABLE} {chain} iifname \"{host_veth}\" ether saddr != {mac} drop comment \"{}\"\n",
        a.comment()
    );
    s
}

/// Removes the attachment's chains; succeeds when they do not exist.
pub fn teardown_script(a: &Attachment, masq: bool, spoof: bool) -> String {
    let mut s = String::new();
    if masq {
        s += &masq_chain_decl(a);
        s += &format!(
            "flush chain inet {TABLE} {c}\ndelete chain inet {TABLE} {c}\n",
            c = a.masq_chain()
        );
    }
    if spoof {
        s += &spoof_chain_decl(a);
        s += &format!(
            "flush chain bridge {TABLE} {c}\ndelete chain bridge {TABLE} {c}\n",
            c = a.spoof_chain()
        );
    }
    s
}

fn nft_binary() -> &'static str {
    for p in ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    "nft"
}

/// Error from running nft: whether the binary is missing, and the message.
#[derive(Debug)]
pub struct NftError {
    pub missing: bool,
    pub msg: String,
}

impl std::fmt::Display for NftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let bin = nft_binary();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NftError {
            missing: e.kind() == std::io::ErrorKind::NotFound,
            msg: format!("cannot run {bin}: {e}"),
        })?;
    if let (Some(script), Some(mut w)) = (stdin, child.stdin.take()) {
        let _ = w.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NftError {
        missing: false,
        msg: format!("nft: {e}"),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NftError {
            missing: false,
            msg: format!(
                "nft {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Applies a script atomically (`nft -f -`).
pub fn apply(script: &str) -> Result<(), NftError> {
    if script.is_empty() {
        return Ok(());
    }
    tracing::debug!(script, "nft -f -");
    nft(&["-f", "-"], Some(script)).map(|_| ())
}

/// Chains in our tables that belong to `network` but to none of `valid`
/// attachments (container ID, ifname); returns a script deleting them.
pub fn gc_script(network: &str, valid: &[(String, String)]) -> Result<String, NftError> {
    let mut s = String::new();
    for family in ["inet", "bridge"] {
        let listing = match nft(&["-j", "list", "table", family, TABLE], None) {
            Ok(l) => l,
            Err(e) if e.missing || e.msg.contains("No such file") => continue,
            Err(e) => return Err(e),
        };
        let v: serde_json::Value = serde_json::from_str(&listing).map_err(|e| NftError {
            missing: false,
            msg: format!("cannot parse nft -j output: {e}"),
        })?;
        for item in v["nftables"].as_array().into_iter().flatten() {
            let Some(chain) = item.get("chain") else {
                continue;
            };
            let (Some(name), Some(comment)) = (chain["name"].as_str(), chain["comment"].as_str())
            else {
                continue;
            };
            let Some((net, ifname, id)) = parse_comment(comment) else {
                continue;
            };
            if net != network || valid.iter().any(|(c, i)| c == id && i == ifname) {
                continue;
            }
            s += &format!(
                "flush chain {family} {TABLE} {name}\ndelete chain {family} {TABLE} {name}\n"
            );
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Attachment = Attachment {
        network: "mynet",
        ifname: "eth0",
        container_id: "abc123",
    };

    #[test]
    fn names_are_stable_and_distinct() {
        assert_eq!(A.masq_chain(), A.masq_chain());
        assert_eq!(A.masq_chain().len(), "masq-".len() + 16);
        let b = Attachment {
            container_id: "abc124",
            ..A
        };
        assert_ne!(A.masq_chain(), b.masq_chain());
        assert_eq!(
            A.comment(),
            "plexus-bridge net: mynet, if: eth0, id: abc123"
        );
        assert_eq!(
            parse_comment(&A.comment()),
            Some(("mynet", "eth0", "abc123"))
        );
        let long = "x".repeat(300);
        let c = Attachment {
            container_id: &long,
            ..A
        };
        assert_eq!(c.comment().len(), COMMENT_MAX);
    }

    #[test]
    fn scripts() {
        let s = masq_script(
            &A,
            &[
                "10.1.0.5/24".parse().unwrap(),
                "fd00::5/64".parse().unwrap(),
            ],
        );
        assert!(s.contains("ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 ip daddr != 224.0.0.0/4 masquerade comment \"plexus-bridge net: mynet, if: eth0, id: abc123\""), "{s}");
        assert!(
            s.contains("ip6 saddr fd00::5 ip6 daddr != fd00::/64"),
            "{s}"
        );
        assert!(s.contains("hook postrouting priority srcnat"));
        let s = spoof_script(&A, "veth01234567", "02:00:00:00:00:01");
        assert!(s.contains("iifname \"veth01234567\" ether saddr != 02:00:00:00:00:01 drop"));
        let t = teardown_script(&A, true, true);
        assert!(t.contains(&format!("delete chain inet {TABLE} {}", A.masq_chain())));
        assert!(t.contains(&format!("delete chain bridge {TABLE} {}", A.spoof_chain())));
        assert!(teardown_script(&A, false, false).is_empty());
    }
}
