//! `plexusd` under test: one process in a node's netns, with its own run-dir
//! and log file, killed by its own pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bin_dir;

/// How long an agent may take to become ready (debug build, fresh etcd).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long SIGTERM may take before the guard uses SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// Whether the agent binary is built; tests skip (or fail under
/// PLEXUS_REQUIRE_ALL=1) without it.
pub fn plexusd_available() -> bool {
    bin_dir().join("plexusd").exists()
}

/// A running `plexusd`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    netns: PathBuf,
    args: Vec<String>,
    pub run_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Start `plexusd ARGS` in the netns at `netns` (the caller passes
    /// `--run-dir run_dir`), logging to `log`. Does not wait for readiness.
    pub fn spawn(netns: &Path, run_dir: &Path, log: &Path, args: Vec<String>) -> Daemon {
        let mut d = Daemon {
            child: None,
            netns: netns.to_path_buf(),
            args,
            run_dir: run_dir.to_path_buf(),
            log: log.to_path_buf(),
        };
        d.launch();
        d
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open agent log");
        // nsenter execs plexusd: the child's pid is the agent's.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg(bin_dir().join("plexusd"))
            .args(&self.args)
            .env(
                "PLEXUS_LOG",
                std::env::var("PLEXUS_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn plexusd");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn ready_file(&self) -> PathBuf {
        self.run_dir.join("ready")
    }

    pub fn is_ready(&self) -> bool {
        self.ready_file().exists()
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Block until `<run-dir>/ready` exists; panics with the log if the
    /// agent exits first or never gets there.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.is_ready() {
            if let Some(st) = self.try_wait() {
                panic!(
                    "plexusd exited ({st}) before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "plexusd not ready after {READY_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the agent has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("wait for plexusd")
    }

    /// Wait up to `timeout` for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// SIGKILL now (no clean-up of its own) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freeze the agent (SIGSTOP): its socket stays, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaw an agent frozen by [`Daemon::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGTERM, then SIGKILL after a grace period; returns how it exited
    /// (a SIGKILL shows as a signal exit, never as success).
    pub fn stop(&mut self) -> ExitStatus {
        if self.child.is_none() {
            panic!("plexusd is not running");
        }
        if let Some(st) = self.try_wait() {
            self.child = None;
            return st;
        }
        self.signal(libc::SIGTERM);
        // A paused agent would only see the SIGTERM once thawed.
        self.signal(libc::SIGCONT);
        let st = self.wait_exit(TERM_GRACE).unwrap_or_else(|| {
            self.signal(libc::SIGKILL);
            self.child
                .as_mut()
                .unwrap()
                .wait()
                .expect("wait for plexusd")
        });
        self.child = None;
        st
    }

    /// Start again with the same arguments (after [`Daemon::stop`]); does
    /// not wait for readiness. The old ready marker is removed first, so
    /// readiness seen afterwards is the new process's.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the agent before starting it again"
        );
        let _ = std::fs::remove_file(self.ready_file());
        self.launch();
    }

    /// SIGTERM (which must exit 0), start again, wait until ready.
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(
            st.success(),
            "plexusd did not exit 0 on SIGTERM ({st}); log:\n{}",
            self.log_text()
        );
        self.start_again();
        self.wait_ready();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}
