//! Safe small-file I/O for plugin state and user-named files.
//!
//! Two hazards every plugin shares: a config key naming a file that is not a
//! small regular file (`/dev/zero`, a FIFO, a huge file) must not be read
//! until memory runs out, and a state directory an attacker can write to must
//! not turn our temporary files into a way to overwrite files elsewhere
//! (predictable names that follow symlinks). Both are answered once, here.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod state_dir;

pub use state_dir::{create_state_dir, existing_state_dir, StateDirError};

/// Where the reference plugins stop reading a user-named file is a few MB;
/// ours is 4 MiB unless the caller asks for less.
pub const DEFAULT_READ_LIMIT: u64 = 4 << 20;

/// Marks our temporary files, so a sweep removes only what we created.
pub const TEMP_MARKER: &str = ".plexus-tmp.";

/// Read a regular file of at most `limit` bytes. Anything else (a device, a
/// FIFO, a directory, a larger file) is an `InvalidInput`/`InvalidData` error
/// that names the reason, and nothing past `limit` is ever read.
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO with no writer must not hang; we refuse it
    // below anyway.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_CLOEXEC | libc_flags::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.len() > limit {
        return Err(too_large(path, limit));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // The file can grow between fstat and read: `take(limit + 1)` still bounds it.
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok(buf)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_limited_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_limited(path, limit)?).map_err(|_| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

fn too_large(path: &Path, limit: u64) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("{} is larger than {limit} bytes", path.display()),
    )
}

/// Write `bytes` to `path` so that a reader sees the old file or the new one,
/// never half of one: a temporary file created with O_EXCL|O_NOFOLLOW (a
/// planted file or symlink makes us pick another name, never write through
/// it) in the same directory, then a rename. Mode 0600; missing parents are
/// created 0700. `durable` fsyncs before the rename, for state that must
/// survive a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o600, durable)
}

/// [`write_atomic`] with the new file's permission bits (before the umask):
/// 0755 for a plugin binary, 0644 for a config others read. A program that
/// is running from the old file keeps its inode, so replacing a binary this
/// way can never fail with ETXTBSY nor change a process mid-exec.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!("{} has no parent directory", path.display()),
            )
        })?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    let (tmp, mut f) = create_temp(parent, path, mode)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| if durable { f.sync_data() } else { Ok(()) });
    drop(f);
    written
        .and_then(|()| fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
}

fn create_temp(dir: &Path, target: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    for attempt in 0u32..64 {
        let nonce = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ attempt.wrapping_mul(0x9e37_79b9);
        // Keep the name short: the target's own name may already be near NAME_MAX.
        let short: String = name.chars().take(64).collect();
        let tmp = dir.join(format!("{TEMP_MARKER}{short}.{pid}.{nonce:08x}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_CLOEXEC)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        format!("cannot create a temporary file in {}", dir.display()),
    ))
}

/// Remove temporary files of ours in `dir` older than `age`: what a killed
/// writer left between create and rename. Returns how many went.
pub fn sweep_stale_temporaries(dir: &Path, age: Duration) -> usize {
    sweep_old_files(dir, age, |name| name.starts_with(TEMP_MARKER))
}

/// Remove the files in `dir` whose name `is_temporary` accepts and that are
/// older than `age` (for temporaries of other writers, e.g. an earlier
/// naming scheme). Returns how many went.
pub fn sweep_old_files(dir: &Path, age: Duration, is_temporary: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for e in entries.flatten() {
        if !is_temporary(&e.file_name().to_string_lossy()) {
            continue;
        }
        // DirEntry::metadata is lstat: a planted symlink is judged (and
        // removed) itself, never followed.
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d >= age);
        if old && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A state directory must be absolute: an empty or relative one would put
/// state in whatever directory the runtime happened to run us from.
pub fn require_absolute_dir(key: &str, dir: &Path) -> Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Err(format!("{key} must not be empty"));
    }
    if !dir.is_absolute() {
        return Err(format!(
            "{key} must be an absolute path, not {}",
            dir.display()
        ));
    }
    Ok(())
}

/// The open(2) flags we need.
mod libc_flags {
    pub use libc::{O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "plexus-files-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn read_limited_refuses_devices_and_large_files() {
        let e = read_limited(Path::new("/dev/zero"), 1024).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let d = tempdir();
        let f = d.join("big");
        fs::write(&f, vec![b'x'; 2048]).unwrap();
        let e = read_limited(&f, 1024).unwrap_err();
        assert!(e.to_string().contains("larger than 1024"), "{e}");
        assert_eq!(read_limited(&f, 2048).unwrap().len(), 2048);
        let e = read_limited(&d, 1024).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_atomic_never_follows_a_planted_symlink() {
        let d = tempdir();
        let victim = d.join("victim");
        fs::write(&victim, "keep").unwrap();
        // Plant symlinks under every name an old, predictable scheme would use.
        for name in [".plan.tmp.1", &format!("{TEMP_MARKER}plan")] {
            symlink(&victim, d.join(name)).unwrap();
        }
        let target = d.join("plan");
        write_atomic(&target, b"new", false).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_atomic_refuses_a_bare_file_name() {
        let e = write_atomic(Path::new("plan"), b"x", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn sweep_removes_only_old_temporaries_of_ours() {
        let d = tempdir();
        fs::write(d.join(format!("{TEMP_MARKER}a.1.0")), "x").unwrap();
        fs::write(d.join("keep.json"), "x").unwrap();
        assert_eq!(sweep_stale_temporaries(&d, Duration::from_secs(3600)), 0);
        assert_eq!(sweep_stale_temporaries(&d, Duration::ZERO), 1);
        assert!(d.join("keep.json").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn state_dirs_must_be_absolute() {
        assert!(require_absolute_dir("cacheDir", Path::new("")).is_err());
        assert!(require_absolute_dir("cacheDir", Path::new("rel/dir")).is_err());
        assert!(require_absolute_dir("cacheDir", Path::new("/var/lib/cni")).is_ok());
    }
}
