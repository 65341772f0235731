//! Label selectors (`matchLabels` and `matchExpressions`), checked once
//! and then matched against label maps.

use std::collections::{BTreeMap, BTreeSet};

use crate::api;

/// A checked label selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    labels: Vec<(String, String)>,
    exprs: Vec<(String, Op)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// The selector `{}`.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Checks `s` as the API server's validation would: a known operator
    /// (case as written in the API), values for In/NotIn and none for
    /// Exists/DoesNotExist, non-empty keys.
    pub fn parse(s: &api::LabelSelector) -> Result<Selector, String> {
        let mut sel = Selector::default();
        for (k, v) in &s.match_labels {
            if k.is_empty() {
                return Err("matchLabels with an empty key".into());
            }
            sel.labels.push((k.clone(), v.clone()));
        }
        for r in &s.match_expressions {
            if r.key.is_empty() {
                return Err("a matchExpressions entry with an empty key".into());
            }
            let values: BTreeSet<String> = r.values.iter().cloned().collect();
            let needs_values = match r.operator.as_str() {
                "In" | "NotIn" => true,
                "Exists" | "DoesNotExist" => false,
                other => {
                    return Err(format!(
                        "unknown operator {other:?} for key {:?} (In, NotIn, Exists, DoesNotExist)",
                        r.key
                    ))
                }
            };
            if needs_values == values.is_empty() {
                return Err(format!(
                    "operator {} for key {:?} {}",
                    r.operator,
                    r.key,
                    if needs_values {
                        "needs values"
                    } else {
                        "takes no values"
                    }
                ));
            }
            let op = match r.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                _ => Op::DoesNotExist,
            };
            sel.exprs.push((r.key.clone(), op));
        }
        Ok(sel)
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.exprs.is_empty()
    }

    /// Every requirement holds (NotIn and DoesNotExist hold for a missing
    /// label, as in Kubernetes).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op)| {
                let got = labels.get(k);
                match op {
                    Op::In(vs) => got.is_some_and(|v| vs.contains(v)),
                    Op::NotIn(vs) => got.is_none_or(|v| !vs.contains(v)),
                    Op::Exists => got.is_some(),
                    Op::DoesNotExist => got.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> Result<Selector, String> {
        Selector::parse(&serde_json::from_value(v).unwrap())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators() {
        let a = labels(&[("pod", "a"), ("tier", "web")]);
        let none = labels(&[]);
        let s = sel(json!({"matchLabels": {"pod": "a"}})).unwrap();
        assert!(s.matches(&a) && !s.matches(&none));
        let s = sel(
            json!({"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "a"]}]}),
        )
        .unwrap();
        assert!(s.matches(&a) && !s.matches(&none));
        let s = sel(
            json!({"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]}),
        )
        .unwrap();
        assert!(!s.matches(&a) && s.matches(&none));
        let s = sel(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})).unwrap();
        assert!(s.matches(&a) && !s.matches(&none));
        let s = sel(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}))
            .unwrap();
        assert!(!s.matches(&a) && s.matches(&none));
        // Both parts must hold.
        let s = sel(json!({"matchLabels": {"pod": "a"},
                           "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}))
        .unwrap();
        assert!(!s.matches(&a));
        assert!(sel(json!({})).unwrap().is_everything());
        assert!(sel(json!({})).unwrap().matches(&none));
    }

    #[test]
    fn invalid_selectors() {
        for bad in [
            json!({"matchExpressions": [{"key": "pod", "operator": "Equals", "values": ["a"]}]}),
            json!({"matchExpressions": [{"key": "pod", "operator": "in", "values": ["a"]}]}),
            json!({"matchExpressions": [{"key": "pod", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "pod", "operator": "Exists", "values": ["a"]}]}),
            json!({"matchExpressions": [{"key": "", "operator": "Exists"}]}),
        ] {
            assert!(sel(bad.clone()).is_err(), "{bad}");
        }
        assert!(sel(
            json!({"matchExpressions": [{"key": "pod", "operator": "Equals", "values": ["a"]}]})
        )
        .unwrap_err()
        .contains("Equals"));
    }
}
