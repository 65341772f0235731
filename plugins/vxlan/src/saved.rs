//! Rendered delegate configs kept in `dataDir`, one file per attachment, so
//! DEL runs exactly what ADD ran even after subnet.env changed or vanished.
//!
//! The file for `eth0` is named after the container ID alone, as flannel
//! names it, so a node switching between flannel's plugin and this one with
//! the same `dataDir` can still DEL the other's pods. Other interfaces get
//! `<containerID>@<ifname>`: a container ID never holds `@` (libcni allows
//! only `[A-Za-z0-9_.-]`), so the name splits back unambiguously.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use plexus_base::files;

const DEFAULT_IFNAME: &str = "eth0";
/// A saved config is a small JSON object; refuse anything larger.
const READ_LIMIT: u64 = 1 << 20;

/// One saved attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub container_id: String,
    pub ifname: String,
    pub path: PathBuf,
}

pub fn file_name(container_id: &str, ifname: &str) -> String {
    if ifname == DEFAULT_IFNAME {
        container_id.to_string()
    } else {
        format!("{container_id}@{ifname}")
    }
}

fn split_name(name: &str) -> (String, String) {
    match name.split_once('@') {
        Some((cid, ifname)) => (cid.into(), ifname.into()),
        None => (name.into(), DEFAULT_IFNAME.into()),
    }
}

pub fn path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(file_name(container_id, ifname))
}

/// Save atomically and durably: DEL after a crash must still find it.
pub fn save(dir: &Path, container_id: &str, ifname: &str, bytes: &[u8]) -> io::Result<()> {
    files::write_atomic(&path(dir, container_id, ifname), bytes, true)
}

/// The saved config, or `None` when there is none.
pub fn load(dir: &Path, container_id: &str, ifname: &str) -> io::Result<Option<Vec<u8>>> {
    match files::read_limited(&path(dir, container_id, ifname), READ_LIMIT) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Saved {
    /// Its bytes, if it can still be read.
    pub fn read(&self) -> Option<Vec<u8>> {
        files::read_limited(&self.path, READ_LIMIT).ok()
    }
}

/// Remove the saved config; a missing one is not an error.
pub fn remove(dir: &Path, container_id: &str, ifname: &str) -> io::Result<()> {
    match std::fs::remove_file(path(dir, container_id, ifname)) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every saved attachment in `dir` (none when it does not exist), skipping
/// our temporary files.
pub fn list(dir: &Path) -> Vec<Saved> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Saved> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with(files::TEMP_MARKER) {
                return None;
            }
            let (container_id, ifname) = split_name(&name);
            Some(Saved {
                container_id,
                ifname,
                path: e.path(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eth0_is_named_as_flannel_names_it() {
        assert_eq!(file_name("abc", "eth0"), "abc");
        assert_eq!(file_name("abc", "net1"), "abc@net1");
    }

    #[test]
    fn save_load_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        assert_eq!(load(&dir, "c1", "eth0").unwrap(), None);
        assert!(list(&dir).is_empty());
        save(&dir, "c1", "eth0", b"{}").unwrap();
        save(&dir, "c.2-x", "net1", b"{\"a\":1}").unwrap();
        assert_eq!(
            load(&dir, "c1", "eth0").unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        let l: Vec<(String, String)> = list(&dir)
            .into_iter()
            .map(|s| (s.container_id, s.ifname))
            .collect();
        assert_eq!(
            l,
            vec![
                ("c.2-x".to_string(), "net1".to_string()),
                ("c1".to_string(), "eth0".to_string())
            ]
        );
        remove(&dir, "c1", "eth0").unwrap();
        remove(&dir, "c1", "eth0").unwrap();
        assert_eq!(load(&dir, "c1", "eth0").unwrap(), None);
    }
}
