//! Running a plugin binary: find it in CNI_PATH, pass the environment and
//! stdin, read its result or its error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use plexus_cni::error::plexus_codes;
use plexus_cni::CniError;

use crate::error::RuntimeError;

/// How plugins are run. The real thing is [`RawExec`]; tests may substitute
/// their own to avoid spawning processes.
pub trait Exec: Send + Sync {
    /// Run `plugin` with exactly the CNI variables in `cni_env` (others are
    /// inherited from this process) and return its stdout.
    fn run(
        &self,
        plugin: &Path,
        cni_env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, RuntimeError>;

    /// Resolve a plugin `type` to a binary in `path`.
    fn find(&self, plugin_type: &str, path: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
        find_in_path(plugin_type, path)
    }
}

/// Find `plugin_type` in the CNI_PATH directories. A type is a plain file
/// name: anything with a '/' is refused so a config cannot run arbitrary
/// binaries.
pub fn find_in_path(plugin_type: &str, path: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
    if plugin_type.is_empty()
        || plugin_type.contains('/')
        || plugin_type == "."
        || plugin_type == ".."
    {
        return Err(RuntimeError::InvalidPluginName(plugin_type.to_string()));
    }
    for dir in path {
        let candidate = dir.join(plugin_type);
        if std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            return Ok(candidate);
        }
    }
    Err(RuntimeError::PluginNotFound {
        plugin: plugin_type.to_string(),
        path: path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    })
}

/// Spawns plugin processes.
#[derive(Debug, Default, Clone)]
pub struct RawExec;

/// "Text file busy" happens when a plugin binary is being replaced while we
/// exec it (an upgrade on a live node); libcni retries, so do we.
const ETXTBSY_RETRIES: u32 = 5;

impl Exec for RawExec {
    fn run(
        &self,
        plugin: &Path,
        cni_env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut attempt = 0;
        let output = loop {
            let mut cmd = Command::new(plugin);
            // Our own CNI_* variables (the meta plugin is itself called with
            // them) must not leak into the delegate's environment.
            for (k, _) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| k.starts_with("CNI_")) {
                    cmd.env_remove(k);
                }
            }
            cmd.envs(cni_env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            die_with_parent(&mut cmd);
            match cmd.spawn() {
                Ok(mut child) => {
                    let mut sin = child.stdin.take().expect("piped");
                    // A plugin may exit without reading stdin (e.g. on bad
                    // env); a broken pipe then is not our error.
                    let _ = sin.write_all(stdin);
                    drop(sin);
                    break child
                        .wait_with_output()
                        .map_err(|source| RuntimeError::Spawn {
                            plugin: plugin.to_path_buf(),
                            source,
                        })?;
                }
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < ETXTBSY_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                }
                Err(source) => {
                    return Err(RuntimeError::Spawn {
                        plugin: plugin.to_path_buf(),
                        source,
                    })
                }
            }
        };
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(RuntimeError::Plugin {
            plugin: plugin_name(plugin),
            error: plugin_error(&output.stdout, &output.stderr, output.status),
        })
    }
}

/// A plugin dies with the process that runs it (PR_SET_PDEATHSIG). A
/// runtime that kills its plugin on a timeout (kill -9) must not leave that
/// plugin's delegates running on: they would finish their ADD after the
/// runtime's DEL and leak what they made. The signal follows the *thread*
/// that spawned the child, which here is the one waiting for it.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then no signal
            // will ever come, so do not start at all.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn plugin_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The spec says errors are JSON on stdout; plugins that crash print text on
/// stderr instead, which we wrap so the caller still sees why.
fn plugin_error(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> CniError {
    if let Ok(e) = serde_json::from_slice::<CniError>(stdout) {
        return e;
    }
    let text = if !stdout.iter().all(u8::is_ascii_whitespace) {
        String::from_utf8_lossy(stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(stderr).trim().to_string()
    };
    let msg = if text.is_empty() {
        format!("plugin exited with {status} and printed nothing")
    } else {
        format!("netplugin failed: {text}")
    };
    CniError::plugin(plexus_codes::DELEGATE_FAILED, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn finds_plugins_and_refuses_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "ok", "true");
        let path = vec![PathBuf::from("/nonexistent"), d.path().to_path_buf()];
        assert_eq!(find_in_path("ok", &path).unwrap(), p);
        assert!(matches!(
            find_in_path("missing", &path),
            Err(RuntimeError::PluginNotFound { .. })
        ));
        for bad in ["../ok", "/bin/sh", "", ".."] {
            assert!(matches!(
                find_in_path(bad, &path),
                Err(RuntimeError::InvalidPluginName(_))
            ));
        }
    }

    #[test]
    fn passes_env_and_stdin() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "echo",
            r#"printf '{"cmd":"%s","stdin":%s}' "$CNI_COMMAND" "$(cat)""#,
        );
        let out = RawExec
            .run(&p, &[("CNI_COMMAND".into(), "ADD".into())], br#"{"a":1}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cmd"], "ADD");
        assert_eq!(v["stdin"]["a"], 1);
    }

    #[test]
    fn plugins_are_told_to_die_with_their_parent() {
        let d = tempfile::tempdir().unwrap();
        // Without the parent-death signal the script would run to the end
        // and waitpid below would see it exit normally with the marker made.
        let marker = d.path().join("survived");
        let p = script(
            d.path(),
            "sleeper",
            &format!("sleep 2; touch {}", marker.display()),
        );
        let t = std::thread::spawn(move || {
            // The thread that spawned the plugin goes away at once.
            let mut cmd = Command::new(&p);
            cmd.stdout(Stdio::null());
            die_with_parent(&mut cmd);
            cmd.spawn().unwrap().id()
        });
        let pid = t.join().unwrap();
        // Reap it: the kill arrives when the spawning thread exits.
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        assert_eq!(rc, pid as i32);
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGKILL);
        assert!(!marker.exists());
    }

    #[test]
    fn error_json_and_stderr_text() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "fails",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"later"}'; exit 1"#,
        );
        match RawExec.run(&p, &[], b"") {
            Err(RuntimeError::Plugin { error, plugin }) => {
                assert_eq!(error.code, 11);
                assert_eq!(plugin, "fails");
            }
            other => panic!("{other:?}"),
        }
        let p = script(d.path(), "crashes", "echo 'panic: boom' >&2; exit 2");
        match RawExec.run(&p, &[], b"") {
            Err(RuntimeError::Plugin { error, .. }) => {
                assert!(error.msg.contains("panic: boom"), "{}", error.msg);
                assert_eq!(error.code, plexus_codes::DELEGATE_FAILED);
            }
            other => panic!("{other:?}"),
        }
    }
}
