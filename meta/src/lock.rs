//! One lock per meta attachment, `<cacheDir>/locks/<containerID>-<ifname>.lock`,
//! held by ADD and DEL (and by GC while it deletes a stale attachment).
//!
//! The lock is an flock on a descriptor that is *not* close-on-exec, so
//! every delegate (and every process a delegate starts, IPAM plugins
//! included) inherits it, and the kernel releases the lock only when the
//! last of them has exited. A runtime that kills the meta plugin on a
//! timeout (kill -9) therefore cannot get a DEL in ahead of a delegate that
//! is still finishing its ADD: the DEL waits for it and then removes what
//! it made. Delegates are also started with PR_SET_PDEATHSIG (see
//! `plexus_runtime::exec`), so usually there is nothing left to wait for.
//!
//! DEL removes the lock file while holding it. Whoever then wakes up on the
//! old file sees that the path no longer names the file it locked and
//! starts again on a new one.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cache::LOCKS_SUBDIR;
use crate::error::MetaError;
use crate::types::AttachmentKey;

/// How long ADD or DEL waits for another call (or the surviving delegates
/// of a killed one) before answering "try again later" (code 11).
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct AttachmentLock {
    file: File,
    path: PathBuf,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MetaError + 'a {
    move |source| MetaError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

pub fn lock_path(cache_dir: &Path, key: &AttachmentKey) -> PathBuf {
    cache_dir
        .join(LOCKS_SUBDIR)
        .join(format!("{}.lock", key.file_stem()))
}

impl AttachmentLock {
    /// Take the lock, waiting up to `wait` for its holders (and their
    /// children) to finish.
    pub fn acquire(
        cache_dir: &Path,
        key: &AttachmentKey,
        wait: Duration,
    ) -> Result<Self, MetaError> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(2);
        let mut told = false;
        loop {
            if let Some(l) = Self::try_acquire(cache_dir, key)? {
                return Ok(l);
            }
            if !told {
                told = true;
                tracing::info!(
                    container_id = %key.container_id,
                    ifname = %key.ifname,
                    "waiting for the attachment lock: another call, or the delegates of a killed one, still run"
                );
            }
            if Instant::now() >= deadline {
                return Err(MetaError::Busy(format!(
                    "container {} interface {}: another call (or a delegate it started) still holds {} after {} s",
                    key.container_id,
                    key.ifname,
                    lock_path(cache_dir, key).display(),
                    wait.as_secs()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Take the lock if nobody holds it.
    pub fn try_acquire(cache_dir: &Path, key: &AttachmentKey) -> Result<Option<Self>, MetaError> {
        let path = lock_path(cache_dir, key);
        crate::cache::state_dir(cache_dir, LOCKS_SUBDIR)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("cannot open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err("cannot lock", &path)(e));
            }
        }
        // The holder before us may have removed the file: then we hold a
        // lock nobody else will ever look at.
        let mine = file.metadata().map_err(io_err("cannot stat lock", &path))?;
        match std::fs::symlink_metadata(&path) {
            Ok(now) if now.ino() == mine.ino() && now.dev() == mine.dev() => {}
            _ => return Ok(None),
        }
        // Inherited by every delegate: the lock lives as long as they do.
        // SAFETY: F_SETFD on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
        if rc != 0 {
            return Err(io_err("cannot clear close-on-exec on", &path)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Some(AttachmentLock { file, path }))
    }

    /// Remove the lock file, then release: the attachment is gone.
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), "cannot remove lock file: {e}");
            }
        }
        drop(self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AttachmentKey {
        AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn exclusive_inherited_and_removable() {
        let d = tempfile::tempdir().unwrap();
        let a = AttachmentLock::try_acquire(d.path(), &key())
            .unwrap()
            .unwrap();
        assert!(AttachmentLock::try_acquire(d.path(), &key())
            .unwrap()
            .is_none());
        let e = AttachmentLock::acquire(d.path(), &key(), Duration::ZERO).unwrap_err();
        assert_eq!(e.to_cni().code, 11, "{e}");
        // Not close-on-exec: children inherit it.
        // SAFETY: F_GETFD on an open descriptor.
        let flags = unsafe { libc::fcntl(a.file.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
        a.remove();
        assert!(!lock_path(d.path(), &key()).exists());
        let b = AttachmentLock::try_acquire(d.path(), &key())
            .unwrap()
            .unwrap();
        drop(b);
        assert!(AttachmentLock::try_acquire(d.path(), &key())
            .unwrap()
            .is_some());
    }
}
