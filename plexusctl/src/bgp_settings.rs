//! The per-session flags of `bgp peer add|set` and `bgp mesh set`, and how
//! they change a [`PeerSettings`]. Every flag taking a value takes `none`
//! too, which clears the setting.

use anyhow::{bail, Context};
use clap::Args;
use plexus_bgp::{Community, CommunitySet, LargeCommunity};
use plexus_ipam::{BfdSettings, PasswordSource, PeerSettings, SecretKeyRef};

#[derive(Args, Debug, Default, Clone)]
pub struct SettingsFlags {
    /// TCP MD5 password (RFC 2385) kept in the store.
    #[arg(long, value_name = "PASSWORD|none", conflicts_with = "password_secret")]
    password: Option<String>,
    /// The password as a key of a Kubernetes Secret (Calico's
    /// password.secretKeyRef), read by plexusd through the API.
    #[arg(long, value_name = "[NAMESPACE/]NAME:KEY|none")]
    password_secret: Option<String>,
    /// BFD (RFC 5880) for the session: a BFD Down takes the session and its
    /// routes down at once.
    #[arg(long, value_name = "on|off")]
    bfd: Option<String>,
    /// BFD transmit and receive interval, milliseconds (default 300); turns
    /// BFD on.
    #[arg(long, value_name = "MS")]
    bfd_interval: Option<u32>,
    /// BFD transmit interval alone, milliseconds.
    #[arg(long, value_name = "MS")]
    bfd_min_tx: Option<u32>,
    /// BFD receive interval alone, milliseconds.
    #[arg(long, value_name = "MS")]
    bfd_min_rx: Option<u32>,
    /// BFD detection multiplier (default 3).
    #[arg(long, value_name = "N")]
    bfd_multiplier: Option<u8>,
    /// Communities added to what is announced to the peer: standard
    /// ASN:VALUE and large GLOBAL:LOCAL1:LOCAL2, comma-separated.
    #[arg(long, value_name = "LIST|none")]
    communities: Option<String>,
    /// BGP filters (plexusctl bgp filter), comma-separated, in order.
    #[arg(long, value_name = "NAMES|none")]
    filters: Option<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[arg(long, value_name = "HOPS|none")]
    ttl_security: Option<String>,
    /// More prefixes than this reset the session (Cease, subcode 1).
    #[arg(long, value_name = "N|none")]
    max_prefixes: Option<String>,
    /// Graceful restart time, seconds (Calico's maxRestartTime).
    #[arg(long, alias = "max-restart-time", value_name = "SECS|none")]
    graceful_restart_time: Option<String>,
}

/// `none` → None, else the parsed number.
fn opt_num<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<Option<T>> {
    if v == "none" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("--{flag} {v:?} is not a number (or none)"))
}

/// `a:b` standard and `a:b:c` large communities, comma-separated.
pub fn communities(s: &str) -> anyhow::Result<CommunitySet> {
    let mut set = CommunitySet::default();
    if s == "none" {
        return Ok(set);
    }
    for c in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if c.matches(':').count() == 2 {
            set.large.push(
                c.parse::<LargeCommunity>()
                    .map_err(|e| anyhow::anyhow!("{c}: {e}"))?,
            );
        } else {
            set.standard.push(
                c.parse::<Community>()
                    .map_err(|e| anyhow::anyhow!("{c}: {e}"))?,
            );
        }
    }
    Ok(set)
}

/// Communities as the operator writes them.
pub fn communities_text(c: &CommunitySet) -> String {
    let all: Vec<String> = c
        .standard
        .iter()
        .map(ToString::to_string)
        .chain(c.large.iter().map(ToString::to_string))
        .collect();
    if all.is_empty() {
        "-".into()
    } else {
        all.join(",")
    }
}

fn secret_ref(s: &str) -> anyhow::Result<SecretKeyRef> {
    let (obj, key) = s
        .rsplit_once(':')
        .context("--password-secret takes [NAMESPACE/]NAME:KEY")?;
    let (namespace, name) = match obj.split_once('/') {
        Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
        None => (None, obj.to_string()),
    };
    Ok(SecretKeyRef {
        name,
        key: key.to_string(),
        namespace,
    })
}

impl SettingsFlags {
    /// Apply the flags given to `s`.
    pub fn apply(&self, s: &mut PeerSettings) -> anyhow::Result<()> {
        if let Some(p) = &self.password {
            s.password = (p != "none").then(|| PasswordSource {
                value: Some(p.clone()),
                secret_key_ref: None,
            });
        }
        if let Some(p) = &self.password_secret {
            s.password = if p == "none" {
                None
            } else {
                Some(PasswordSource {
                    value: None,
                    secret_key_ref: Some(secret_ref(p)?),
                })
            };
        }
        let tuned = self.bfd_interval.is_some()
            || self.bfd_min_tx.is_some()
            || self.bfd_min_rx.is_some()
            || self.bfd_multiplier.is_some();
        match self.bfd.as_deref() {
            Some("off") => {
                if tuned {
                    bail!("--bfd off goes with no other --bfd-* flag");
                }
                s.bfd = None;
            }
            Some("on") | None => {
                if self.bfd.is_some() || tuned {
                    let b = s.bfd.get_or_insert_with(BfdSettings::default);
                    if let Some(ms) = self.bfd_interval {
                        b.min_tx_ms = ms;
                        b.min_rx_ms = ms;
                    }
                    if let Some(ms) = self.bfd_min_tx {
                        b.min_tx_ms = ms;
                    }
                    if let Some(ms) = self.bfd_min_rx {
                        b.min_rx_ms = ms;
                    }
                    if let Some(m) = self.bfd_multiplier {
                        b.multiplier = m;
                    }
                }
            }
            Some(other) => bail!("--bfd {other:?}: on or off"),
        }
        if let Some(c) = &self.communities {
            s.communities = communities(c)?;
        }
        if let Some(f) = &self.filters {
            s.filters = if f == "none" {
                Vec::new()
            } else {
                f.split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(String::from)
                    .collect()
            };
        }
        if let Some(v) = &self.ttl_security {
            s.ttl_security = opt_num("ttl-security", v)?;
        }
        if let Some(v) = &self.max_prefixes {
            s.max_prefixes = opt_num("max-prefixes", v)?;
        }
        if let Some(v) = &self.graceful_restart_time {
            s.graceful_restart_time = opt_num("graceful-restart-time", v)?;
        }
        plexus_ipam::validate::peer_settings(s)?;
        Ok(())
    }
}

/// One line saying what a session has set (for `peer list`, `bgp show`).
pub fn summary(s: &PeerSettings) -> String {
    let mut out = Vec::new();
    match &s.password {
        Some(PasswordSource { value: Some(_), .. }) => out.push("md5".to_string()),
        Some(PasswordSource {
            secret_key_ref: Some(r),
            ..
        }) => out.push(format!("md5 from secret {}:{}", r.name, r.key)),
        _ => {}
    }
    if let Some(b) = &s.bfd {
        out.push(format!(
            "bfd {}/{} ms x{}",
            b.min_tx_ms, b.min_rx_ms, b.multiplier
        ));
    }
    if !s.communities.is_empty() {
        out.push(format!("communities {}", communities_text(&s.communities)));
    }
    if !s.filters.is_empty() {
        out.push(format!("filters {}", s.filters.join(",")));
    }
    if let Some(t) = s.ttl_security {
        out.push(format!("ttl-security {t}"));
    }
    if let Some(m) = s.max_prefixes {
        out.push(format!("max-prefixes {m}"));
    }
    if let Some(g) = s.graceful_restart_time {
        out.push(format!("restart-time {g}s"));
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_change_settings() {
        let mut s = PeerSettings::default();
        let f = SettingsFlags {
            password: Some("sekrit".into()),
            bfd_interval: Some(100),
            communities: Some("65000:100,65000:1:2".into()),
            filters: Some("a,b".into()),
            max_prefixes: Some("10".into()),
            ..Default::default()
        };
        f.apply(&mut s).unwrap();
        assert_eq!(s.bfd.unwrap().min_rx_ms, 100);
        assert_eq!(s.communities.standard.len(), 1);
        assert_eq!(s.communities.large.len(), 1);
        assert_eq!(s.filters, ["a", "b"]);
        assert_eq!(
            summary(&s),
            "md5; bfd 100/100 ms x3; communities 65000:100,65000:1:2; filters a,b; max-prefixes 10"
        );
        let off = SettingsFlags {
            bfd: Some("off".into()),
            max_prefixes: Some("none".into()),
            password_secret: Some("ns/bgp:router1".into()),
            ..Default::default()
        };
        off.apply(&mut s).unwrap();
        assert!(s.bfd.is_none() && s.max_prefixes.is_none());
        let r = s.password.unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_str(), r.key.as_str()),
            (Some("ns"), "bgp", "router1")
        );
        let bad = SettingsFlags {
            ttl_security: Some("0".into()),
            ..Default::default()
        };
        assert!(bad.apply(&mut PeerSettings::default()).is_err());
    }
}
