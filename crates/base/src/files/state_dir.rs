//! State directories: where a plugin keeps what a later call needs
//! (host-local's `dataDir/<network>`, the meta plugin's `cacheDir/plans`,
//! the runtime's `results`, ...).
//!
//! The reference plugins create and use them with `MkdirAll` and never look
//! at what they found: a symlink planted at `dataDir/<network>` makes
//! host-local keep its leases (and its lock) wherever the link points, and a
//! `plans` link makes the meta plugin read plans it did not write and run
//! the delegates they name. Ours refuse, before anything is created or
//! written there, a state directory that is a symbolic link, not a
//! directory, or not owned by this process's effective uid (root on a
//! node; the test's user in unprivileged unit tests).
//!
//! What is checked is the configured directory itself (`base`, not the
//! path above it: `/var/run` is a link to `/run` on every Debian) and every
//! directory below it down to the state directory (`sub`), so a link one
//! level up (`cacheDir/delegates` for `cacheDir/delegates/results`) is
//! refused too. A directory swapped for a link after the check is out of
//! reach: only the owner of its parent, which the check has just found to
//! be us, can do that.

use std::fs::{self, DirBuilder};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Why a state directory was refused. Callers report it as an I/O failure
/// (CNI code 5: plexus-cni's `From<StateDirError> for CniError`).
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("refusing state directory {}: it is a symbolic link{}; nothing is created or written through it", .path.display(), .target.as_ref().map(|t| format!(" to {}", t.display())).unwrap_or_default())]
    Symlink {
        path: PathBuf,
        target: Option<PathBuf>,
    },
    #[error("refusing state directory {}: it is owned by uid {owner}, not by uid {expected} that this plugin runs as", .path.display())]
    NotOurs {
        path: PathBuf,
        owner: u32,
        expected: u32,
    },
    #[error("refusing state directory {}: it is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("state directory {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StateDirError {
    /// The directory that was refused or could not be used.
    pub fn path(&self) -> &Path {
        match self {
            StateDirError::Symlink { path, .. }
            | StateDirError::NotOurs { path, .. }
            | StateDirError::NotADirectory { path }
            | StateDirError::Io { path, .. } => path,
        }
    }
}

/// Create `base/sub` where it is missing (parents of `base` too, each new
/// directory with `mode` before the umask) and check every directory from
/// `base` down to it. Returns the state directory. `sub` may be empty (the
/// configured directory is the state directory).
pub fn create_state_dir(base: &Path, sub: &Path, mode: u32) -> Result<PathBuf, StateDirError> {
    let parts = components(base, sub)?;
    if let Err(source) = DirBuilder::new().recursive(true).mode(mode).create(base) {
        // A dangling link or a file at `base`: say which, not just EEXIST.
        check_one(base)?;
        return Err(io_err(base, source));
    }
    check_one(base)?;
    let mut dir = base.to_path_buf();
    for part in parts {
        dir.push(part);
        match DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io_err(&dir, source)),
        }
        check_one(&dir)?;
    }
    Ok(dir)
}

/// Check `base/sub` without creating anything: `None` when it (or a
/// directory above it) does not exist, so nothing was ever stored there.
pub fn existing_state_dir(base: &Path, sub: &Path) -> Result<Option<PathBuf>, StateDirError> {
    let parts = components(base, sub)?;
    if !exists(base)? {
        return Ok(None);
    }
    check_one(base)?;
    let mut dir = base.to_path_buf();
    for part in parts {
        dir.push(part);
        if !exists(&dir)? {
            return Ok(None);
        }
        check_one(&dir)?;
    }
    Ok(Some(dir))
}

/// `sub` as plain names: no `..`, no root, so the check covers every
/// directory the state directory is reached through.
fn components<'a>(base: &Path, sub: &'a Path) -> Result<Vec<&'a std::ffi::OsStr>, StateDirError> {
    sub.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io_err(
                &base.join(sub),
                io::Error::new(
                    ErrorKind::InvalidInput,
                    "a state directory is named by plain components below its base",
                ),
            )),
        })
        .collect()
}

fn exists(p: &Path) -> Result<bool, StateDirError> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(p, e)),
    }
}

fn check_one(p: &Path) -> Result<(), StateDirError> {
    let m = fs::symlink_metadata(p).map_err(|e| io_err(p, e))?;
    if m.file_type().is_symlink() {
        return Err(StateDirError::Symlink {
            path: p.to_path_buf(),
            target: fs::read_link(p).ok(),
        });
    }
    if !m.is_dir() {
        return Err(StateDirError::NotADirectory {
            path: p.to_path_buf(),
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if m.uid() != euid {
        return Err(StateDirError::NotOurs {
            path: p.to_path_buf(),
            owner: m.uid(),
            expected: euid,
        });
    }
    Ok(())
}

fn io_err(p: &Path, source: io::Error) -> StateDirError {
    StateDirError::Io {
        path: p.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "plexus-statedir-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_what_is_missing_with_the_mode() {
        let d = tempdir("create");
        let base = d.join("cache");
        let got = create_state_dir(&base, Path::new("delegates/results"), 0o700).unwrap();
        assert_eq!(got, base.join("delegates/results"));
        for p in [&base, &base.join("delegates"), &got] {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
        // Again: nothing to create, everything checks.
        create_state_dir(&base, Path::new("delegates/results"), 0o700).unwrap();
        assert_eq!(
            existing_state_dir(&base, Path::new("delegates/results")).unwrap(),
            Some(got)
        );
        assert_eq!(create_state_dir(&base, Path::new(""), 0o700).unwrap(), base);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_is_none_and_creates_nothing() {
        let d = tempdir("missing");
        let base = d.join("cache");
        assert_eq!(existing_state_dir(&base, Path::new("plans")).unwrap(), None);
        fs::create_dir(&base).unwrap();
        assert_eq!(existing_state_dir(&base, Path::new("plans")).unwrap(), None);
        assert!(!base.join("plans").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_link_anywhere_from_base_down_is_refused_and_nothing_lands_behind_it() {
        let d = tempdir("link");
        let elsewhere = d.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let base = d.join("cache");
        fs::create_dir(&base).unwrap();
        // The state directory itself, a directory above it, and the base.
        symlink(&elsewhere, base.join("plans")).unwrap();
        let e = create_state_dir(&base, Path::new("plans"), 0o700).unwrap_err();
        assert!(matches!(e, StateDirError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("plans"), "{e}");
        assert!(e.to_string().contains("elsewhere"), "{e}");
        let e = existing_state_dir(&base, Path::new("plans")).unwrap_err();
        assert!(matches!(e, StateDirError::Symlink { .. }), "{e}");

        symlink(&elsewhere, base.join("delegates")).unwrap();
        let e = create_state_dir(&base, Path::new("delegates/results"), 0o700).unwrap_err();
        assert_eq!(e.path(), base.join("delegates"), "{e}");
        assert!(
            !elsewhere.join("results").exists(),
            "created through the link"
        );

        let linked_base = d.join("linked");
        symlink(&elsewhere, &linked_base).unwrap();
        let e = create_state_dir(&linked_base, Path::new("net1"), 0o755).unwrap_err();
        assert_eq!(e.path(), linked_base, "{e}");
        assert!(!elsewhere.join("net1").exists());

        // A dangling link: refused as a link, not "file exists".
        let dangling = d.join("dangling");
        symlink(d.join("nowhere"), &dangling).unwrap();
        let e = create_state_dir(&dangling, Path::new(""), 0o700).unwrap_err();
        assert!(matches!(e, StateDirError::Symlink { .. }), "{e}");
        assert!(!d.join("nowhere").exists());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let d = tempdir("file");
        fs::write(d.join("plans"), "x").unwrap();
        let e = existing_state_dir(&d, Path::new("plans")).unwrap_err();
        assert!(matches!(e, StateDirError::NotADirectory { .. }), "{e}");
        let e = create_state_dir(&d, Path::new("plans/x"), 0o700).unwrap_err();
        assert!(matches!(e, StateDirError::NotADirectory { .. }), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_of_another_uid_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Only root can give a directory away. CI runs as root
            // (PLEXUS_REQUIRE_ALL=1), where this must not be skipped.
            assert!(
                std::env::var_os("PLEXUS_REQUIRE_ALL").is_none_or(|v| v != "1"),
                "PLEXUS_REQUIRE_ALL=1 and this test needs root to chown a directory"
            );
            eprintln!("SKIP: needs root to chown a directory");
            return;
        }
        let d = tempdir("owner");
        let theirs = d.join("net1");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let e = create_state_dir(&d, Path::new("net1"), 0o755).unwrap_err();
        match &e {
            StateDirError::NotOurs {
                owner, expected, ..
            } => {
                assert_eq!((*owner, *expected), (65534, 0))
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("uid 65534"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sub_must_be_plain_names() {
        let d = tempdir("names");
        for bad in ["../x", "/abs", "a/../b"] {
            let e = create_state_dir(&d, Path::new(bad), 0o700).unwrap_err();
            assert!(matches!(e, StateDirError::Io { .. }), "{bad}: {e}");
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
