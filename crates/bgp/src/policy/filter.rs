//! Per-peer import and export filters, shaped like Calico's BGPFilter
//! resource (`importV4`, `exportV4`, `importV6`, `exportV6` lists of rules
//! with `action`, `matchOperator`, `cidr`, `prefixLength`, `source`),
//! with three matches Calico lacks: `community`, `largeCommunity` and
//! `asPath`. Rules are tried in order across a peer's filters; the first
//! that matches decides; a route no rule matches is accepted. Import
//! filters run after the [`Guard`](super::Guard), so they can only reject
//! more.
//!
//! Export filters see the route as the Loc-RIB holds it (its own AS path
//! and communities), before what export adds (our AS, per-peer
//! communities).

use ipnet::IpNet;

use crate::attrs::{Community, LargeCommunity, PathAttrs};

/// One named filter with its four rule lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BgpFilter {
    pub name: String,
    pub export_v4: Vec<FilterRule>,
    pub import_v4: Vec<FilterRule>,
    pub export_v6: Vec<FilterRule>,
    pub import_v6: Vec<FilterRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FilterAction {
    Accept,
    Reject,
}

/// How `cidr` is compared with the route's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MatchOperator {
    Equal,
    NotEqual,
    /// Inside or equal to `cidr` (with a length in `prefixLength`).
    In,
    /// Not `In`.
    NotIn,
}

/// A prefix-length range; a bound not given is open (`min` defaults to the
/// CIDR's length with `In`/`NotIn`, else 0; `max` to 32 or 128).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PrefixLength {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u8>,
}

/// Which routes a rule applies to, by where they come from (Calico's
/// `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RouteSource {
    /// Routes learned from BGP peers (not the node's own).
    RemotePeers,
}

/// AS_PATH matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AsPathMatch {
    /// The AS appears anywhere in the path.
    Contains(u32),
    /// The AS originated the route (the path's last AS).
    OriginatedBy(u32),
}

/// One rule: every match it has must hold; a rule without matches matches
/// every route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterRule {
    pub action: FilterAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RouteSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community: Option<Community>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_community: Option<LargeCommunity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path: Option<AsPathMatch>,
}

impl FilterRule {
    /// A rule with this action and no matches (it matches everything).
    pub fn new(action: FilterAction) -> FilterRule {
        FilterRule {
            action,
            match_operator: None,
            cidr: None,
            prefix_length: None,
            source: None,
            community: None,
            large_community: None,
            as_path: None,
        }
    }

    /// `cidr` compared with `op`.
    pub fn cidr(mut self, op: MatchOperator, cidr: IpNet) -> FilterRule {
        self.match_operator = Some(op);
        self.cidr = Some(cidr.trunc());
        self
    }

    pub fn prefix_length(mut self, min: Option<u8>, max: Option<u8>) -> FilterRule {
        self.prefix_length = Some(PrefixLength { min, max });
        self
    }

    pub fn source(mut self, s: RouteSource) -> FilterRule {
        self.source = Some(s);
        self
    }

    pub fn community(mut self, c: Community) -> FilterRule {
        self.community = Some(c);
        self
    }

    pub fn large_community(mut self, c: LargeCommunity) -> FilterRule {
        self.large_community = Some(c);
        self
    }

    pub fn as_path(mut self, m: AsPathMatch) -> FilterRule {
        self.as_path = Some(m);
        self
    }

    fn check(&self, v6: bool) -> Result<(), String> {
        let max_len = if v6 { 128 } else { 32 };
        match (&self.cidr, &self.match_operator) {
            (Some(c), Some(_)) if c.addr().is_ipv6() != v6 => {
                return Err(format!(
                    "cidr {c} is not an {} prefix",
                    if v6 { "IPv6" } else { "IPv4" }
                ));
            }
            (Some(_), None) => return Err("cidr needs a matchOperator".into()),
            (None, Some(_)) => return Err("matchOperator needs a cidr".into()),
            _ => {}
        }
        if let Some(pl) = &self.prefix_length {
            if matches!(
                self.match_operator,
                Some(MatchOperator::Equal | MatchOperator::NotEqual)
            ) {
                return Err("prefixLength goes with In or NotIn, not Equal/NotEqual".into());
            }
            let (min, max) = (pl.min.unwrap_or(0), pl.max.unwrap_or(max_len));
            if min > max || max > max_len {
                return Err(format!(
                    "prefixLength {min}..{max} is not a range within 0..{max_len}"
                ));
            }
        }
        Ok(())
    }

    fn matches(&self, prefix: &IpNet, attrs: &PathAttrs, learned: bool) -> bool {
        let max_len = match prefix {
            IpNet::V4(_) => 32,
            IpNet::V6(_) => 128,
        };
        let len = prefix.prefix_len();
        let in_range = |min: u8| {
            let pl = self.prefix_length.unwrap_or_default();
            (pl.min.unwrap_or(min)..=pl.max.unwrap_or(max_len)).contains(&len)
        };
        let prefix_ok = match (self.match_operator, self.cidr) {
            (Some(MatchOperator::Equal), Some(c)) => *prefix == c,
            (Some(MatchOperator::NotEqual), Some(c)) => *prefix != c,
            (Some(MatchOperator::In), Some(c)) => c.contains(prefix) && in_range(c.prefix_len()),
            (Some(MatchOperator::NotIn), Some(c)) => {
                !(c.contains(prefix) && in_range(c.prefix_len()))
            }
            _ => self.prefix_length.is_none() || in_range(0),
        };
        prefix_ok
            && self.source.is_none_or(|RouteSource::RemotePeers| learned)
            && self
                .community
                .is_none_or(|c| attrs.communities.contains(&c.0))
            && self
                .large_community
                .is_none_or(|c| attrs.large_communities.contains(&c))
            && self.as_path.is_none_or(|m| match m {
                AsPathMatch::Contains(asn) => attrs.contains_as(asn),
                AsPathMatch::OriginatedBy(asn) => attrs.origin_as() == Some(asn),
            })
    }
}

/// Import or export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Import,
    Export,
}

impl BgpFilter {
    /// A clear error for a rule that cannot work (a family mismatch, an
    /// operator without a CIDR, an empty length range...).
    pub fn validate(&self) -> Result<(), String> {
        let lists = [
            ("exportV4", &self.export_v4, false),
            ("importV4", &self.import_v4, false),
            ("exportV6", &self.export_v6, true),
            ("importV6", &self.import_v6, true),
        ];
        for (list, rules, v6) in lists {
            for (i, r) in rules.iter().enumerate() {
                r.check(v6)
                    .map_err(|e| format!("filter {:?} {list} rule {i}: {e}", self.name))?;
            }
        }
        Ok(())
    }

    fn rules(&self, dir: Direction, prefix: &IpNet) -> &[FilterRule] {
        match (dir, prefix) {
            (Direction::Import, IpNet::V4(_)) => &self.import_v4,
            (Direction::Import, IpNet::V6(_)) => &self.import_v6,
            (Direction::Export, IpNet::V4(_)) => &self.export_v4,
            (Direction::Export, IpNet::V6(_)) => &self.export_v6,
        }
    }
}

/// Run `filters` in order: the first matching rule decides. Returns the
/// rejecting (filter name, rule index), or None for accepted. `learned`:
/// the route came from a peer (not originated by us).
pub fn evaluate<'a>(
    filters: &'a [BgpFilter],
    dir: Direction,
    prefix: &IpNet,
    attrs: &PathAttrs,
    learned: bool,
) -> Option<(&'a str, usize)> {
    for f in filters {
        for (i, rule) in f.rules(dir, prefix).iter().enumerate() {
            if rule.matches(prefix, attrs, learned) {
                return match rule.action {
                    FilterAction::Accept => None,
                    FilterAction::Reject => Some((f.name.as_str(), i)),
                };
            }
        }
    }
    None
}
