//! The ClusterRoles in deploy/ grant exactly what the code does with the
//! Kubernetes API, no more and no less.
//!
//! Every call of a kube `Api` method in the workspace's sources carries a
//! marker comment just above it: `// rbac(ROLE): VERB RESOURCE[.GROUP]`
//! (e.g. `// rbac(plexus): patch pods/status`). This test finds every such
//! call (in files that use kube's `Api`), checks that a marker names the
//! call's verb, and compares each ClusterRole in deploy/ with the markers
//! naming it. A new API call without a marker, a marker without a rule, or
//! a rule without a marker fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// (group, resource, verb); the core group is "".
type Grant = (String, String, String);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// kube `Api` methods and the RBAC verb each needs.
const METHODS: &[(&str, &str)] = &[
    ("get_opt", "get"),
    ("get_status", "get"),
    ("get_metadata", "get"),
    ("get_metadata_opt", "get"),
    ("list", "list"),
    ("list_metadata", "list"),
    ("watch", "watch"),
    ("watch_metadata", "watch"),
    ("patch", "patch"),
    ("patch_status", "patch"),
    ("patch_metadata", "patch"),
    ("replace", "update"),
    ("replace_status", "update"),
    ("create", "create"),
    ("delete", "delete"),
    ("delete_collection", "deletecollection"),
    ("entry", "get"),
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "tests" | "vm") {
                rs_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// Parse `rbac(ROLE): VERB RESOURCE[.GROUP]`.
fn parse_marker(line: &str) -> Option<(String, Grant)> {
    let rest = line.trim().strip_prefix("// rbac(")?;
    let (role, rest) = rest.split_once("):")?;
    let mut it = rest.split_whitespace();
    let (verb, res) = (it.next()?, it.next()?);
    let (resource, group) = match res.split_once('.') {
        Some((r, g)) => (r, g),
        None => (res, ""),
    };
    Some((role.into(), (group.into(), resource.into(), verb.into())))
}

/// The markers of `src`, each checked against the call below it; errors
/// for calls without a fitting marker.
fn scan(path: &str, src: &str) -> (Vec<(String, Grant)>, Vec<String>) {
    let mut markers = Vec::new();
    let mut errors = Vec::new();
    let lines: Vec<&str> = src.lines().collect();
    let uses_api = src.contains("use kube::") && src.contains("Api");
    for (i, line) in lines.iter().enumerate() {
        if let Some(m) = parse_marker(line) {
            markers.push(m);
        }
        if !uses_api || line.trim_start().starts_with("//") {
            continue;
        }
        for (method, verb) in METHODS {
            if !line.contains(&format!(".{method}(")) {
                continue;
            }
            // The marker sits above the statement, at most a few lines up.
            let found = lines[i.saturating_sub(4)..i].iter().rev().any(|l| {
                parse_marker(l).is_some_and(|(_, (_, res, v))| {
                    v == *verb && res.ends_with("/status") == method.ends_with("_status")
                })
            });
            if !found {
                errors.push(format!(
                    "{path}:{}: `{method}` call without a `// rbac(ROLE): {verb} RESOURCE` marker above it",
                    i + 1
                ));
            }
        }
    }
    (markers, errors)
}

/// Every ClusterRole in deploy/, as role name -> grants.
fn cluster_roles() -> BTreeMap<String, BTreeSet<Grant>> {
    let mut files = Vec::new();
    collect_yaml(&workspace().join("deploy"), &mut files);
    let mut roles: BTreeMap<String, BTreeSet<Grant>> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if v["kind"] != "ClusterRole" {
                continue;
            }
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            let set = roles.entry(name).or_default();
            for rule in v["rules"].as_array().unwrap() {
                let strs = |k: &str| -> Vec<String> {
                    rule[k]
                        .as_array()
                        .unwrap_or_else(|| panic!("{}: rule without {k}", f.display()))
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect()
                };
                for g in strs("apiGroups") {
                    for r in strs("resources") {
                        for verb in strs("verbs") {
                            assert!(
                                g != "*" && r != "*" && verb != "*",
                                "{}: wildcards grant more than the code uses",
                                f.display()
                            );
                            set.insert((g.clone(), r.clone(), verb));
                        }
                    }
                }
            }
        }
    }
    roles
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_yaml(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn cluster_roles_match_the_api_calls_in_the_code() {
    let mut files = Vec::new();
    rs_files(&workspace(), &mut files);
    let mut by_role: BTreeMap<String, BTreeSet<Grant>> = BTreeMap::new();
    let mut errors = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(workspace()).unwrap().display().to_string();
        let (markers, errs) = scan(&rel, &src);
        errors.extend(errs);
        for (role, g) in markers {
            by_role.entry(role).or_default().insert(g);
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The code calls the API somewhere: an empty scan means the scan broke.
    assert!(by_role.contains_key("plexus"), "{by_role:?}");
    assert!(by_role.contains_key("plexus-kube-store"), "{by_role:?}");
    assert_eq!(cluster_roles(), by_role);
}

#[test]
fn the_scan_catches_an_unmarked_call() {
    let marked = "use kube::Api;\nfn f() {\n    // rbac(r): list nodes\n    let l = nodes\n        .list(&lp);\n}\n";
    let (m, e) = scan("x.rs", marked);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(
        m,
        [("r".into(), ("".into(), "nodes".into(), "list".into()))]
    );

    let unmarked = "use kube::Api;\nfn f() {\n    let p = pods.patch_status(&n, &pp, &x);\n}\n";
    let (_, e) = scan("x.rs", unmarked);
    assert_eq!(e.len(), 1, "{e:?}");
    // A marker with the wrong verb or without /status does not count.
    let wrong = "use kube::Api;\n// rbac(r): patch pods\nlet p = pods.patch_status(&n, &pp, &x);\n";
    assert_eq!(scan("x.rs", wrong).1.len(), 1);
}
