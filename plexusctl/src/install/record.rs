//! The install record: every file and directory `plexusctl install` wrote
//! or created, so `plexusctl uninstall` undoes exactly that and nothing
//! else. It lives in `<cni-conf-dir>/plexus.d/install.json`.
//!
//! A file that existed before the first install (a hand-installed plugin
//! of the same name, say) is kept as a hard link named `<name>.plexus-orig`
//! next to it, and uninstall renames it back: same inode, same bytes, same
//! mode and times. The suffix keeps a runtime from reading a kept `.conf`
//! as a network.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plexus_base::files;
use serde::{Deserialize, Serialize};

pub const RECORD_KIND: &str = "plexusInstallV1";
pub const BACKUP_SUFFIX: &str = ".plexus-orig";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub kind: String,
    /// Directories install created, parents first.
    pub created_dirs: Vec<PathBuf>,
    /// Files install wrote, in the order it first wrote them.
    pub files: Vec<RecordedFile>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedFile {
    pub path: PathBuf,
    /// Where the file that was there before is kept, if there was one.
    pub backup: Option<PathBuf>,
}

impl Record {
    /// The record at `path`, or an empty one when there is none.
    pub fn load(path: &Path) -> Result<Record> {
        let bytes = match files::read_limited(path, files::DEFAULT_READ_LIMIT) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Record {
                    kind: RECORD_KIND.into(),
                    ..Record::default()
                })
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let r: Record = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an install record", path.display()))?;
        if r.kind != RECORD_KIND {
            bail!(
                "{}: kind {:?}, expected {RECORD_KIND:?}",
                path.display(),
                r.kind
            );
        }
        Ok(r)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("serializes");
        bytes.push(b'\n');
        files::write_atomic(path, &bytes, true)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn has_file(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f.path == path)
    }

    /// Every path the record names must lie directly in one of `dirs` (or
    /// in a directory install created there): a record edited by hand must
    /// not make uninstall delete files elsewhere.
    pub fn check_paths(&self, dirs: &[&Path]) -> Result<()> {
        let inside = |p: &Path| {
            let parent = p.parent().unwrap_or(Path::new(""));
            dirs.contains(&parent)
                || self
                    .created_dirs
                    .iter()
                    .any(|d| d == parent && dirs.contains(&d.parent().unwrap_or(Path::new(""))))
        };
        let all = self
            .files
            .iter()
            .flat_map(|f| std::iter::once(&f.path).chain(f.backup.as_ref()))
            .chain(self.created_dirs.iter());
        for p in all {
            if !inside(p) || p.file_name().is_none_or(|n| n == "..") {
                bail!(
                    "the install record names {}, which is not in {}: refusing to touch it",
                    p.display(),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                );
            }
        }
        Ok(())
    }
}

/// Where a file that was there before install is kept.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(BACKUP_SUFFIX);
    path.with_file_name(name)
}

/// Undo `record`: put back what was there, remove what was not, then the
/// directories install created (only if empty: something else put files
/// there since, and those stay).
pub fn undo(record: &Record) -> Result<()> {
    for f in record.files.iter().rev() {
        match &f.backup {
            Some(b) => fs::rename(b, &f.path).with_context(|| {
                format!("cannot put {} back as {}", b.display(), f.path.display())
            })?,
            None => match fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", f.path.display()))
                }
            },
        }
        tracing::info!(path = %f.path.display(), restored = f.backup.is_some(), "undone");
    }
    Ok(())
}

/// Remove the directories install created, children first.
pub fn remove_created_dirs(record: &Record) -> Result<()> {
    for d in record.created_dirs.iter().rev() {
        match fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                tracing::warn!(dir = %d.display(), "not removed: other files are in it")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", d.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_dirs_are_refused() {
        let r = Record {
            kind: RECORD_KIND.into(),
            created_dirs: vec!["/c/plexus.d".into()],
            files: vec![
                RecordedFile {
                    path: "/b/plexus".into(),
                    backup: Some("/b/plexus.plexus-orig".into()),
                },
                RecordedFile {
                    path: "/c/plexus.d/install.json".into(),
                    backup: None,
                },
            ],
        };
        r.check_paths(&[Path::new("/b"), Path::new("/c")]).unwrap();
        for bad in ["/etc/passwd", "/b/../etc/x", "/c/other/x"] {
            let mut r2 = Record::load(Path::new("/nonexistent/x")).unwrap();
            r2.files.push(RecordedFile {
                path: bad.into(),
                backup: None,
            });
            let e = r2
                .check_paths(&[Path::new("/b"), Path::new("/c")])
                .unwrap_err();
            assert!(e.to_string().contains("refusing"), "{bad}: {e}");
        }
        assert_eq!(
            backup_path(Path::new("/c/10-x.conflist")),
            Path::new("/c/10-x.conflist.plexus-orig")
        );
    }
}
