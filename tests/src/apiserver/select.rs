//! Label and field selectors as the API server parses them
//! (`labelSelector`, `fieldSelector` query parameters).

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<Label>);

/// Split on commas outside parentheses.
fn terms(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(values: &str) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, got {values:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Labels {
    pub fn parse(s: &str) -> Result<Labels, String> {
        let mut out = Vec::new();
        for t in terms(s) {
            let req = if let Some(k) = t.strip_prefix('!') {
                Label::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once("!=") {
                Label::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Label::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Label::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Label::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Label::In(k.trim().into(), set(v)?)
            } else if t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Label::Exists(t)
            } else {
                return Err(format!("unable to parse requirement {t:?}"));
            };
            out.push(req);
        }
        Ok(Labels(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Label::Eq(k, v) => get(k) == Some(v.as_str()),
            Label::NotEq(k, v) => get(k) != Some(v.as_str()),
            Label::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Label::NotIn(k, vs) => get(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Label::Exists(k) => get(k).is_some(),
            Label::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, bool, String)>);

/// The fields a kind can be selected by, beyond `metadata.name` and
/// `metadata.namespace` (as the API server's field label conversions).
fn supported(kind: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || match kind {
            "Pod" => matches!(
                field,
                "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "spec.hostNetwork"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ),
            "Node" => field == "spec.unschedulable",
            "Namespace" => field == "status.phase",
            _ => false,
        }
}

impl Fields {
    pub fn parse(kind: &str, s: &str) -> Result<Fields, String> {
        let mut out = Vec::new();
        for t in terms(s) {
            let (path, eq, value) = if let Some((k, v)) = t.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector: {t:?}"));
            };
            let path = path.trim();
            if !supported(kind, path) {
                return Err(format!("field label not supported: {path}"));
            }
            out.push((path.to_string(), eq, value.trim().to_string()));
        }
        Ok(Fields(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut v = obj;
            for seg in path.split('.') {
                v = &v[seg];
            }
            // An absent field selects as the empty string.
            let have = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

/// A query parameter, percent-decoded (`+` is a space).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    let raw = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)?;
    let mut bytes = Vec::new();
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let hex: String = it.by_ref().take(2).map(char::from).collect();
                bytes.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("env notin (prod)", true),
            ("tier", true),
            ("!tier", false),
            ("!env", true),
            ("", true),
        ] {
            assert_eq!(Labels::parse(sel).unwrap().matches(&pod), want, "{sel}");
        }
        assert!(Labels::parse("a in b").is_err());
    }

    #[test]
    fn field_selectors() {
        let pod =
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": true}});
        let f = |s: &str| Fields::parse("Pod", s).unwrap().matches(&pod);
        assert!(f("spec.nodeName=n1"));
        assert!(!f("spec.nodeName!=n1"));
        assert!(f("metadata.name==p,spec.hostNetwork=true"));
        assert!(f("status.podIP="));
        let e = Fields::parse("Namespace", "spec.nodeName=x").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }
}
