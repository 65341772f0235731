//! Network namespace handles and named namespace management (`ip netns add/del`).
//!
//! `setns(2)` switches only the calling thread, so every operation that must
//! run "inside" a namespace runs on a dedicated, short-lived std thread; the
//! caller's thread (and any tokio worker) is never switched.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// Where named network namespaces live (same as iproute2).
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// An open handle (owned fd) to a network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

// NS_GET_NSTYPE = _IO(0xb7, 0x3)
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

impl Netns {
    /// Opens a network namespace by path, e.g. `/var/run/netns/NAME` or
    /// `/proc/PID/ns/net`. Fails if the path is not a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref();
        let ctx = || format!("open netns {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(ctx(), e))?;
        // SAFETY: the fd is valid for the duration of the call; NS_GET_NSTYPE takes no argument.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind < 0 {
            let errno = Errno::last();
            return Err(match errno {
                Errno::ENOTTY | Errno::EINVAL => {
                    Error::invalid("netns path", path.display(), "not a namespace file (nsfs)")
                }
                e => Error::errno(ctx(), e),
            });
        }
        if kind != libc::CLONE_NEWNET {
            return Err(Error::invalid(
                "netns path",
                path.display(),
                "namespace is not a network namespace",
            ));
        }
        Ok(Netns {
            fd: file.into(),
            path: path.to_owned(),
        })
    }

    /// Opens the network namespace of the calling thread.
    pub fn current() -> Result<Netns> {
        Netns::open("/proc/thread-self/ns/net")
    }

    /// Opens a named namespace in [`NETNS_RUN_DIR`].
    pub fn open_named(name: &str) -> Result<Netns> {
        Netns::open(named_path(name)?)
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Duplicates the handle (new fd to the same namespace).
    pub fn try_clone(&self) -> Result<Netns> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::io(format!("dup netns fd for {}", self.path.display()), e))?;
        Ok(Netns {
            fd,
            path: self.path.clone(),
        })
    }

    /// Identifies the namespace (nsfs inode); equal ids mean the same namespace.
    pub fn id(&self) -> Result<u64> {
        let f = File::from(
            self.fd
                .try_clone()
                .map_err(|e| Error::io(format!("dup netns fd for {}", self.path.display()), e))?,
        );
        let md = f
            .metadata()
            .map_err(|e| Error::io(format!("stat netns {}", self.path.display()), e))?;
        Ok(md.ino())
    }

    /// Runs `f` on a new thread that has entered this namespace and returns
    /// its value. Blocks the caller until `f` returns; a panic in `f` is
    /// propagated. Never switches the calling thread.
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("plexus-netns".into())
                .spawn_scoped(s, || {
                    self.enter_this_thread()?;
                    Ok(f())
                })
                .map_err(|e| Error::io("spawn netns thread", e))?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Async variant of [`Netns::run`]: the closure runs on a dedicated
    /// thread and the calling task awaits its result without blocking.
    pub async fn run_async<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.try_clone()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("plexus-netns".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    ns.enter_this_thread().map(|()| f())
                }));
                let _ = tx.send(r);
            })
            .map_err(|e| Error::io("spawn netns thread", e))?;
        match rx.await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(Error::protocol(
                format!("run in netns {}", self.path.display()),
                "netns thread ended without a result",
            )),
        }
    }

    fn enter_this_thread(&self) -> Result<()> {
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::errno(format!("setns into {}", self.path.display()), e))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Checks a namespace name the way iproute2 does: non-empty, at most 255
/// bytes, no `/`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::invalid("netns name", name, reason));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("must not contain '/' or NUL");
    }
    Ok(())
}

/// `/var/run/netns/NAME` for a valid name.
pub fn named_path(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// Makes `NETNS_RUN_DIR` a shared mount point, as `ip netns add` does, so
/// that namespace bind mounts propagate to other mount namespaces.
fn ensure_run_dir_shared() -> Result<()> {
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {NETNS_RUN_DIR}"), e))?;
    let mut bound = false;
    loop {
        match mount(
            Some("none"),
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if !bound => {
                // Not a mount point yet: bind it onto itself, then retry.
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| Error::errno(format!("bind mount {NETNS_RUN_DIR} onto itself"), e))?;
                bound = true;
            }
            Err(e) => {
                return Err(Error::errno(
                    format!("make {NETNS_RUN_DIR} a shared mount"),
                    e,
                ))
            }
        }
    }
}

/// Creates a named network namespace (like `ip netns add NAME`) and returns
/// its path. Fails with [`Error::is_exists`] if the name is taken.
pub fn create_named(name: &str) -> Result<PathBuf> {
    let path = named_path(name)?;
    let ctx = format!("create netns {name:?}");
    ensure_run_dir_shared()?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o000)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::io(format!("{ctx}: create {}", path.display()), e))?;

    let target = path.clone();
    let result = std::thread::Builder::new()
        .name("plexus-netns-new".into())
        .spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::errno("unshare(CLONE_NEWNET)", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::errno(format!("bind mount new netns onto {}", target.display()), e))
        })
        .map_err(|e| Error::io("spawn netns thread", e))?
        .join()
        .unwrap_or_else(|_| Err(Error::protocol(&ctx, "netns creation thread panicked")));

    match result {
        Ok(()) => {
            tracing::debug!(netns = name, "created network namespace");
            Ok(path)
        }
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(match e {
                Error::Io { context, source } => Error::io(format!("{ctx}: {context}"), source),
                other => other,
            })
        }
    }
}

/// Deletes a named network namespace (like `ip netns del NAME`). Succeeds if
/// it does not exist. The namespace itself lives on while anything still
/// holds it (open fds, processes).
pub fn delete_named(name: &str) -> Result<()> {
    let path = named_path(name)?;
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::errno(format!("delete netns {name:?}: umount"), e)),
    }
    match fs::remove_file(&path) {
        Ok(()) => {
            tracing::debug!(netns = name, "deleted network namespace");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("delete netns {name:?}: remove {}", path.display()),
            e,
        )),
    }
}

/// Lists the names in [`NETNS_RUN_DIR`] (empty if the directory is missing).
pub fn list_named() -> Result<Vec<String>> {
    let rd = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {NETNS_RUN_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(format!("list {NETNS_RUN_DIR}"), e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("plx-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(".").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert_eq!(
            named_path("abc").unwrap(),
            PathBuf::from("/var/run/netns/abc")
        );
    }

    #[test]
    fn open_rejects_non_namespace_files() {
        let err = Netns::open("/proc/self/status").unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "unexpected: {err}"
        );
        let err = Netns::open("/nonexistent/netns").unwrap_err();
        assert!(err.is_not_found());
    }
}
