//! Writing what install computed: each file atomically (a temporary in the
//! target directory, fsync, rename, then the directory fsync'd), only when
//! its bytes or mode differ from what is there, and each entered in the
//! install record before it is written, so a crash in between still lets
//! uninstall undo it.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plexus_base::files;

use super::record::{backup_path, Record, RecordedFile};

/// One file install wants on disk.
#[derive(Debug, Clone)]
pub struct Desired {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// Whether `path` already holds exactly `d`.
fn up_to_date(d: &Desired) -> Result<bool> {
    let meta = match fs::symlink_metadata(&d.path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", d.path.display())),
    };
    if !meta.is_file()
        || meta.len() != d.bytes.len() as u64
        || meta.permissions().mode() & 0o7777 != d.mode
    {
        return Ok(false);
    }
    let have = files::read_limited(&d.path, d.bytes.len() as u64)
        .with_context(|| format!("cannot read {}", d.path.display()))?;
    Ok(have == d.bytes)
}

/// Write the files of `want` that differ; returns how many were written.
/// `record` is saved to `record_path` whenever it gains an entry.
pub fn apply(want: &[Desired], record: &mut Record, record_path: &Path) -> Result<usize> {
    let mut written = 0;
    for d in want {
        if up_to_date(d)? {
            continue;
        }
        if !record.has_file(&d.path) {
            // Not ours yet: keep what is there (if anything) for uninstall.
            let backup = match fs::symlink_metadata(&d.path) {
                Ok(_) => {
                    let b = backup_path(&d.path);
                    fs::hard_link(&d.path, &b).with_context(|| {
                        format!(
                            "cannot keep the existing {} as {}",
                            d.path.display(),
                            b.display()
                        )
                    })?;
                    Some(b)
                }
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot stat {}", d.path.display()))
                }
            };
            record.files.push(RecordedFile {
                path: d.path.clone(),
                backup,
            });
            record.save(record_path)?;
        }
        write_durably(d)?;
        tracing::info!(path = %d.path.display(), bytes = d.bytes.len(), "installed");
        written += 1;
    }
    Ok(written)
}

fn write_durably(d: &Desired) -> Result<()> {
    files::write_atomic_mode(&d.path, &d.bytes, d.mode, true)
        .with_context(|| format!("cannot write {}", d.path.display()))?;
    // The umask may have taken bits away; the mode is part of the file.
    fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode))
        .with_context(|| format!("cannot set the mode of {}", d.path.display()))?;
    // The rename itself must survive a crash too.
    if let Some(dir) = d.path.parent() {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::record::RECORD_KIND;

    #[test]
    fn writes_once_keeps_what_was_there_and_undoes() {
        let d = tempfile::tempdir().unwrap();
        let rec_path = d.path().join("install.json");
        let old = d.path().join("plexus");
        fs::write(&old, b"old").unwrap();
        let want = [
            Desired {
                path: old.clone(),
                bytes: b"new".to_vec(),
                mode: 0o755,
            },
            Desired {
                path: d.path().join("plexus-bridge"),
                bytes: b"b".to_vec(),
                mode: 0o755,
            },
        ];
        let mut rec = Record {
            kind: RECORD_KIND.into(),
            ..Record::default()
        };
        assert_eq!(apply(&want, &mut rec, &rec_path).unwrap(), 2);
        assert_eq!(fs::read(&old).unwrap(), b"new");
        assert_eq!(fs::read(backup_path(&old)).unwrap(), b"old");
        assert_eq!(
            fs::metadata(&old).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(Record::load(&rec_path).unwrap(), rec);
        // Again: nothing to do.
        assert_eq!(apply(&want, &mut rec, &rec_path).unwrap(), 0);
        super::super::record::undo(&rec).unwrap();
        assert_eq!(fs::read(&old).unwrap(), b"old");
        assert!(!d.path().join("plexus-bridge").exists());
        assert!(!backup_path(&old).exists());
    }
}
