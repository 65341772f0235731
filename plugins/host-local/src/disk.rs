//! The reference's on-disk layout under `<dataDir>/<network>/`:
//! - one file per reserved address, named by the address (`10.1.0.5`,
//!   `fd00::5`), containing `<containerID>\r\n<ifname>`;
//! - `last_reserved_ip.<rangeSetIndex>` containing the address only;
//! - `lock`, flocked by every call (the reference uses go-filemutex, i.e.
//!   `flock(LOCK_EX)` on the same file, so both binaries exclude each other).
//!
//! Unlike the reference, we hold the lock for the whole call, and a
//! reservation file appears atomically with its full content: the record is
//! written to a temporary file that is then hard-linked to the address's name
//! (`link` fails with EEXIST exactly like `O_CREAT|O_EXCL`). A process killed
//! at any point leaves either no file or a complete one, plus at most a
//! temporary file that the next DEL or GC removes.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use plexus_base::files;

use crate::addr;
use crate::error::Error;
use crate::store::{Reservation, Store};

pub const LOCK_FILE: &str = "lock";
pub const LAST_IP_PREFIX: &str = "last_reserved_ip.";
/// Temporary files start with this; it can never parse as an address and is
/// neither the lock nor a last-reserved file.
pub const TEMP_PREFIX: &str = ".plexus-tmp.";

/// Modes: the network directory as the reference's `MkdirAll(dir, 0755)`;
/// the lock as go-filemutex creates it (0750 after umask 022 here, so we ask
/// for the same); reservation and last-reserved files 0600 as the reference
/// writes them since v1.2 (Debian's 1.1.1 still used 0644; the files carry
/// container IDs, so the stricter mode is the one we keep).
pub const DIR_MODE: u32 = 0o755;
/// `<containerID>\r\n<ifname>` at its longest. Not our own container-ID
/// limit: records the reference or an older Plexus wrote may carry any ID
/// an environment variable holds (128 KiB), and must stay readable so GC
/// can release them.
const MAX_RECORD: usize = (128 << 10) + 2 + plexus_cni::validate::MAX_IFNAME_LEN;
pub const LOCK_MODE: u32 = 0o750;
pub const FILE_MODE: u32 = 0o600;

#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    /// Held (flocked) for the store's lifetime; closing the file releases it.
    _lock: File,
}

/// `name` as one path component that stays inside its parent. Network names
/// are already validated by plexus-cni like libcni does; this guards the
/// invariant locally so no later change can walk out of dataDir.
fn safe_component(name: &str) -> Result<&str, Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Config(format!(
            "network name \"{name}\" cannot be used as a directory name"
        )));
    }
    Ok(name)
}

impl DiskStore {
    pub fn network_dir(data_dir: &Path, network: &str) -> Result<PathBuf, Error> {
        Ok(data_dir.join(safe_component(network)?))
    }

    /// Create `<dataDir>/<network>` if needed, and lock it (blocking). A
    /// network directory (or dataDir) that is a symlink or not ours is
    /// refused before anything is created or locked there.
    pub fn open(data_dir: &Path, network: &str) -> Result<DiskStore, Error> {
        let name = safe_component(network)?;
        let dir = files::create_state_dir(data_dir, Path::new(name), DIR_MODE)?;
        Self::lock_dir(dir)
    }

    /// Like [`DiskStore::open`] but never creates anything: `None` when the
    /// network directory does not exist (nothing was ever allocated).
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<DiskStore>, Error> {
        let name = safe_component(network)?;
        match files::existing_state_dir(data_dir, Path::new(name))? {
            Some(dir) => Self::lock_dir(dir).map(Some),
            None => Ok(None),
        }
    }

    fn lock_dir(dir: PathBuf) -> Result<DiskStore, Error> {
        let path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(false)
            .create(false)
            .custom_flags(libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(LOCK_MODE)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open lock {}", path.display()), e))?;
        lock.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        Ok(DiskStore { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write `content` to a temporary file (replacing a stale one).
    fn write_temp(&self, tag: &str, content: &str) -> Result<PathBuf, Error> {
        let tmp = self.dir.join(format!("{TEMP_PREFIX}{tag}"));
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        f.write_all(content.as_bytes())
            .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
        Ok(tmp)
    }
}

/// Read a small regular file without following symlinks.
fn read_regular(path: &Path) -> std::io::Result<String> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // Records are usually a few dozen bytes; reading through `take` skips
    // the size-hint syscalls `read_to_string` makes on a File (this runs
    // once per reservation on every call). The limit is the longest record
    // we can write (the longest container ID a plugin can get): a longer
    // file is not a record of ours.
    let mut buf = Vec::with_capacity(128);
    (&mut f).take(MAX_RECORD as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > MAX_RECORD {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("{} is longer than any record", path.display()),
        ));
    }
    String::from_utf8(buf).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

impl Store for DiskStore {
    fn list(&self) -> Result<Vec<Reservation>, Error> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("cannot read {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent =
                ent.map_err(|e| Error::io(format!("cannot read {}", self.dir.display()), e))?;
            let Ok(name) = ent.file_name().into_string() else {
                continue;
            };
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            // Only regular files: a symlink or directory named like an
            // address is not ours to read or delete.
            if !ent.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            // Like the reference, unreadable files are skipped, not fatal.
            let Ok(record) = read_regular(&ent.path()) else {
                continue;
            };
            out.push(Reservation {
                ip: addr::canonical(ip),
                name,
                record,
            });
        }
        Ok(out)
    }

    fn reserve(&mut self, ip: IpAddr, record: &str, range_id: usize) -> Result<bool, Error> {
        let name = ip.to_string();
        let target = self.dir.join(&name);
        let tmp = self.write_temp("reserve", record)?;
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(Error::io(format!("cannot create {}", target.display()), e)),
        }
        // Round-robin hint; written via rename so readers never see a
        // truncated file.
        let last = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        let tmp = self.write_temp("last", &name)?;
        fs::rename(&tmp, &last).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("cannot write {}", last.display()), e)
        })?;
        Ok(true)
    }

    fn release(&mut self, r: &Reservation) -> Result<(), Error> {
        // The name came from list() (parsed as an address) or from
        // IpAddr::to_string, so it is a single safe path component.
        let path = self.dir.join(safe_component(&r.name)?);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
    }

    fn last_reserved(&self, range_id: usize) -> Result<Option<IpAddr>, Error> {
        let path = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        // As in the reference, an unreadable or unparsable file just means
        // "start from the beginning"; the content is parsed untrimmed, as Go's
        // net.ParseIP does.
        Ok(read_regular(&path)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .map(addr::canonical))
    }

    fn clean_leftovers(&mut self) -> Result<usize, Error> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("cannot read {}", self.dir.display()), e))?;
        let mut n = 0;
        for ent in rd.flatten() {
            if ent.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && fs::remove_file(ent.path()).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}
