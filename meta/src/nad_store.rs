//! `attachmentsDir`: NetworkAttachmentDefinitions as manifest files, the same
//! JSON or YAML users `kubectl apply` (several YAML documents per file and
//! `kind: List` are fine). The embedded store used without an API server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::error::MetaError;
use crate::source::NadStore;
use crate::types::Nad;

pub const NAD_KIND: &str = "NetworkAttachmentDefinition";

type Index = BTreeMap<(String, String), Nad>;

#[derive(Debug)]
pub struct AttachmentsDir {
    dir: PathBuf,
    /// Read once per process: a CNI call is short-lived.
    index: OnceLock<Result<Index, String>>,
}

impl AttachmentsDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AttachmentsDir {
            dir: dir.into(),
            index: OnceLock::new(),
        }
    }

    fn index(&self) -> Result<&Index, MetaError> {
        self.index
            .get_or_init(|| load_dir(&self.dir))
            .as_ref()
            .map_err(|e| MetaError::Source(e.clone()))
    }
}

impl NadStore for AttachmentsDir {
    fn get(&self, namespace: &str, name: &str) -> Result<Option<Nad>, MetaError> {
        Ok(self
            .index()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }
}

fn load_dir(dir: &Path) -> Result<Index, String> {
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // No directory yet means no NADs, not a broken node.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("cannot read attachmentsDir {}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "json" | "yaml" | "yml"))
        })
        .collect();
    files.sort();
    for f in files {
        match load_file(&f) {
            // Sorted order, first definition wins, like confDir lookups.
            Ok(nads) => {
                for n in nads {
                    out.entry((n.namespace.clone(), n.name.clone()))
                        .or_insert(n);
                }
            }
            // One broken manifest must not hide the others.
            Err(e) => tracing::warn!("skipping {}: {e}", f.display()),
        }
    }
    Ok(out)
}

/// Manifests are small; a FIFO, a device or a huge file in attachmentsDir
/// is refused, never read until memory runs out.
pub const MANIFEST_READ_LIMIT: u64 = plexus_base::files::DEFAULT_READ_LIMIT;

/// The NADs in one manifest file (a regular file of at most
/// [`MANIFEST_READ_LIMIT`] bytes).
pub fn load_file(path: &Path) -> Result<Vec<Nad>, String> {
    let text = plexus_base::files::read_limited_string(path, MANIFEST_READ_LIMIT)
        .map_err(|e| e.to_string())?;
    parse_manifest(&text, path.extension().is_some_and(|e| e == "json"))
}

/// The NADs in a manifest's text: one JSON document when `json`, else any
/// number of YAML documents (each a NAD, a `kind: List` of them, or another
/// kind, which is skipped).
pub fn parse_manifest(text: &str, json: bool) -> Result<Vec<Nad>, String> {
    let docs: Vec<Value> = if json {
        vec![serde_json::from_str(text).map_err(|e| e.to_string())?]
    } else {
        serde_yaml_ng::Deserializer::from_str(text)
            .map(Value::deserialize)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?
    };
    let mut out = Vec::new();
    for doc in docs {
        collect(doc, &mut out)?;
    }
    Ok(out)
}

fn collect(doc: Value, out: &mut Vec<Nad>) -> Result<(), String> {
    match doc.get("kind").and_then(Value::as_str) {
        Some("List") | Some("NetworkAttachmentDefinitionList") => {
            if let Some(Value::Array(items)) = doc.get("items") {
                for i in items {
                    collect(i.clone(), out)?;
                }
            }
            Ok(())
        }
        Some(NAD_KIND) => {
            out.push(parse_nad(&doc)?);
            Ok(())
        }
        // Empty YAML documents and other kinds (a Namespace next to the
        // NADs) are not ours.
        _ => Ok(()),
    }
}

pub fn parse_nad(doc: &Value) -> Result<Nad, String> {
    let meta = doc.get("metadata").ok_or("NAD has no metadata")?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("NAD has no metadata.name")?
        .to_string();
    // kubectl apply puts a manifest without a namespace in "default".
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    let config = match doc.get("spec").and_then(|s| s.get("config")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Accept an inline object too: easier to write by hand.
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => {
            return Err(format!(
                "NAD {namespace}/{name}: spec.config must be a string"
            ))
        }
    };
    let annotations = meta
        .get("annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Nad {
        namespace,
        name,
        config,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_manifests() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.json"),
            r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
                "metadata":{"name":"blue","namespace":"team"},
                "spec":{"config":"{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("b.yaml"),
            "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: red\nspec:\n  config: '{\"cniVersion\":\"1.0.0\",\"name\":\"red\",\"plugins\":[{\"type\":\"ptp\"}]}'\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: green\n  namespace: team\n",
        )
        .unwrap();
        std::fs::write(d.path().join("c.yaml"), "kind: [").unwrap();
        std::fs::write(d.path().join("ignored.txt"), "x").unwrap();
        // Never read: a device and an oversized manifest are skipped.
        std::os::unix::fs::symlink("/dev/zero", d.path().join("zero.yaml")).unwrap();
        let big = format!("# {}\n", "x".repeat(MANIFEST_READ_LIMIT as usize));
        std::fs::write(d.path().join("big.yaml"), big).unwrap();
        assert!(load_file(&d.path().join("zero.yaml"))
            .unwrap_err()
            .contains("not a regular file"));
        assert!(load_file(&d.path().join("big.yaml"))
            .unwrap_err()
            .contains("larger than"));
        let s = AttachmentsDir::new(d.path());
        let blue = s.get("team", "blue").unwrap().unwrap();
        assert!(blue.config.contains("bridge"));
        assert!(s
            .get("default", "red")
            .unwrap()
            .unwrap()
            .config
            .contains("ptp"));
        assert_eq!(s.get("team", "green").unwrap().unwrap().config, "");
        assert!(s.get("team", "red").unwrap().is_none());
        assert!(AttachmentsDir::new(d.path().join("none"))
            .get("a", "b")
            .unwrap()
            .is_none());
    }
}
