//! The plugin skeleton: parse the environment and stdin, check versions and
//! the command's preconditions, call the plugin's handler, print the result or
//! the error JSON, exit 0 or 1.
//!
//! [`dispatch`] does all of it without touching the process, so it is unit
//! tested; [`run`] is the thin `main` wrapper.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::command::Command;
use crate::config::NetConf;
use crate::env::CniEnv;
use crate::error::{plexus_codes, CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::{SpecVersion, VersionInfo};

/// What a handler gets: the validated environment, the parsed config and the
/// raw stdin bytes (for delegating to another plugin unchanged).
#[derive(Debug)]
pub struct Request<'a> {
    pub env: &'a CniEnv,
    pub conf: &'a NetConf,
    pub stdin: &'a [u8],
}

impl Request<'_> {
    /// The netns path; ADD and CHECK always have one (the skeleton checks).
    pub fn netns(&self) -> Result<&std::path::Path, CniError> {
        self.env
            .netns
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for this command"))
    }
}

pub trait Plugin {
    /// Versions this plugin accepts in `cniVersion`.
    fn supported_versions(&self) -> &'static [SpecVersion] {
        SpecVersion::ALL
    }
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    fn del(&self, req: &Request) -> Result<(), CniError>;
    fn check(&self, req: &Request) -> Result<(), CniError>;
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// What the process should print and exit with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// Run one CNI call against `plugin`. Logging is initialised from the config's
/// `logLevel`/`logFile` once the config is parsed.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    vars: impl IntoIterator<Item = (String, String)>,
    stdin: &[u8],
) -> Outcome {
    // Errors before the config is parsed carry the newest version we speak.
    let mut version = SpecVersion::LATEST;
    match dispatch_inner(plugin, vars, stdin, &mut version) {
        Ok(Some(v)) => Outcome {
            stdout: v.to_string(),
            exit_code: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            exit_code: 0,
        },
        Err(e) => {
            tracing::error!(code = e.code, "{e}");
            Outcome {
                stdout: e.with_version(version.as_str()).to_json(),
                exit_code: 1,
            }
        }
    }
}

fn dispatch_inner<P: Plugin>(
    plugin: &P,
    vars: impl IntoIterator<Item = (String, String)>,
    stdin: &[u8],
    version: &mut SpecVersion,
) -> Result<Option<Value>, CniError> {
    let env = CniEnv::from_vars(vars)?;
    let supported = plugin.supported_versions();
    if env.command == Command::Version {
        return Ok(Some(version_answer(supported, stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    *version = conf.cni_version;
    crate::panic::set_version(conf.cni_version);
    init_logging_from(&conf);
    crate::panic::test_trigger();
    if !supported.contains(&conf.cni_version) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "this plugin does not support CNI version {}",
                conf.cni_version
            ),
        ));
    }
    match env.command {
        Command::Check if !conf.cni_version.supports_check() => {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "config version {} does not allow CHECK (needs 0.4.0 or later)",
                    conf.cni_version
                ),
            ))
        }
        Command::Status | Command::Gc if !conf.cni_version.supports_status_gc() => {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "config version {} does not allow {} (needs 1.1.0 or later)",
                    conf.cni_version, env.command
                ),
            ))
        }
        _ => {}
    }
    let req = Request {
        env: &env,
        conf: &conf,
        stdin,
    };
    tracing::debug!(command = %env.command, container = %env.container_id, ifname = %env.ifname, network = %conf.name, "CNI call");
    match env.command {
        Command::Add => Ok(Some(plugin.add(&req)?.to_value(conf.cni_version))),
        Command::Del => plugin.del(&req).map(|_| None),
        Command::Check => plugin.check(&req).map(|_| None),
        Command::Status => plugin.status(&req).map(|_| None),
        Command::Gc => plugin.gc(&req).map(|_| None),
        Command::Version => unreachable!("handled above"),
    }
}

fn version_answer(supported: &[SpecVersion], stdin: &[u8]) -> Value {
    // VERSION may carry {"cniVersion": ...}; answer in that version if we
    // speak it, else in our newest.
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str()?.parse::<SpecVersion>().ok())
        .filter(|v| supported.contains(v));
    let info = VersionInfo {
        cni_version: asked
            .unwrap_or_else(|| *supported.iter().max().unwrap_or(&SpecVersion::LATEST))
            .as_str()
            .into(),
        supported_versions: supported.iter().map(|v| v.as_str().into()).collect(),
    };
    serde_json::to_value(info).expect("version info serializes")
}

fn init_logging_from(conf: &NetConf) {
    let level = conf.raw.get("logLevel").and_then(Value::as_str);
    let file = conf
        .raw
        .get("logFile")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    plexus_base::logging::init(level, file.as_deref());
}

/// The `main` of a plugin binary.
pub fn run<P: Plugin>(plugin: &P) -> ! {
    crate::panic::install();
    let mut stdin = Vec::new();
    let env_vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let needs_stdin = env_vars
        .iter()
        .any(|(k, v)| k == "CNI_COMMAND" && v != "VERSION");
    if needs_stdin {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let err = CniError::io(format!("cannot read network configuration from stdin: {e}"))
                .with_version(SpecVersion::LATEST.as_str());
            finish(Outcome {
                stdout: err.to_json(),
                exit_code: 1,
            });
        }
    } else {
        // VERSION may or may not get stdin; never block on a terminal.
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    finish(dispatch(plugin, env_vars, &stdin))
}

fn finish(out: Outcome) -> ! {
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    std::process::exit(out.exit_code)
}

/// A plugin binary that exists so the workspace builds, but does nothing yet.
/// It says so with a CNI error rather than pretending to work.
#[derive(Debug)]
pub struct NotImplemented {
    pub name: &'static str,
    pub planned: &'static str,
}

impl Plugin for NotImplemented {
    fn add(&self, _: &Request) -> Result<CniResult, CniError> {
        Err(self.error())
    }
    fn del(&self, _: &Request) -> Result<(), CniError> {
        Err(self.error())
    }
    fn check(&self, _: &Request) -> Result<(), CniError> {
        Err(self.error())
    }
    fn status(&self, _: &Request) -> Result<(), CniError> {
        Err(self.error())
    }
    fn gc(&self, _: &Request) -> Result<(), CniError> {
        Err(self.error())
    }
}

impl NotImplemented {
    fn error(&self) -> CniError {
        CniError::plugin(
            plexus_codes::NOT_IMPLEMENTED,
            format!("{} is a placeholder and is not implemented yet", self.name),
        )
        .with_details(self.planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<Command>>,
        fail: Option<CniError>,
    }

    impl Plugin for Recorder {
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            self.calls.borrow_mut().push(Command::Add);
            if let Some(e) = &self.fail {
                return Err(e.clone());
            }
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                ..req.conf.prev_result.clone().unwrap_or_default()
            })
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            self.calls.borrow_mut().push(Command::Del);
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            self.calls.borrow_mut().push(Command::Check);
            Ok(())
        }
        fn gc(&self, req: &Request) -> Result<(), CniError> {
            req.conf.valid_attachments()?;
            self.calls.borrow_mut().push(Command::Gc);
            Ok(())
        }
    }

    fn env(cmd: &str) -> Vec<(String, String)> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn conf(v: &str) -> Vec<u8> {
        format!(r#"{{"cniVersion":"{v}","name":"n","type":"t"}}"#).into_bytes()
    }

    fn err(o: &Outcome) -> serde_json::Value {
        assert_eq!(o.exit_code, 1, "{}", o.stdout);
        serde_json::from_str(&o.stdout).unwrap()
    }

    #[test]
    fn add_prints_result_in_config_version() {
        let p = Recorder::default();
        let o = dispatch(&p, env("ADD"), &conf("0.4.0"));
        assert_eq!(o.exit_code, 0);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        let o = dispatch(&p, env("ADD"), &conf("1.1.0"));
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn del_check_print_nothing() {
        let p = Recorder::default();
        for cmd in ["DEL", "CHECK"] {
            let o = dispatch(&p, env(cmd), &conf("1.0.0"));
            assert_eq!(
                o,
                Outcome {
                    stdout: String::new(),
                    exit_code: 0
                }
            );
        }
        assert_eq!(*p.calls.borrow(), vec![Command::Del, Command::Check]);
    }

    #[test]
    fn version_command() {
        let p = Recorder::default();
        let vars = vec![("CNI_COMMAND".to_string(), "VERSION".to_string())];
        let o = dispatch(&p, vars.clone(), b"");
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let o = dispatch(&p, vars, br#"{"cniVersion":"0.4.0"}"#);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
    }

    #[test]
    fn version_gates() {
        let p = Recorder::default();
        assert_eq!(err(&dispatch(&p, env("CHECK"), &conf("0.3.1")))["code"], 1);
        assert_eq!(err(&dispatch(&p, env("GC"), &conf("1.0.0")))["code"], 1);
        assert_eq!(err(&dispatch(&p, env("STATUS"), &conf("0.4.0")))["code"], 1);
        assert!(
            p.calls.borrow().is_empty(),
            "no handler runs on a gated call"
        );
        assert_eq!(dispatch(&p, env("GC"), &conf("1.1.0")).exit_code, 0);
    }

    #[test]
    fn errors_are_json_with_version() {
        let p = Recorder::default();
        let e = err(&dispatch(&p, env("ADD"), b"{not json"));
        assert_eq!(e["code"], 6);
        assert_eq!(e["cniVersion"], "1.1.0");
        let e = err(&dispatch(&p, env("ADD"), &conf("9.0.0")));
        assert_eq!(e["code"], 1);
        let mut bad = env("ADD");
        bad.retain(|(k, _)| k != "CNI_NETNS");
        assert_eq!(err(&dispatch(&p, bad, &conf("1.0.0")))["code"], 4);
        let p = Recorder {
            fail: Some(CniError::plugin(120, "boom")),
            ..Default::default()
        };
        let e = err(&dispatch(&p, env("ADD"), &conf("0.3.1")));
        assert_eq!(e["code"], 120);
        assert_eq!(e["cniVersion"], "0.3.1");
        assert!(p.calls.borrow().len() == 1);
    }

    #[test]
    fn gc_validates_attachments() {
        let p = Recorder::default();
        let c = br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":1}]}"#;
        assert_eq!(err(&dispatch(&p, env("GC"), c))["code"], 7);
    }

    #[test]
    fn placeholder_says_so() {
        let p = NotImplemented {
            name: "plexus-x",
            planned: "see issue 9",
        };
        let e = err(&dispatch(&p, env("ADD"), &conf("1.0.0")));
        assert_eq!(e["code"], 199);
        assert!(e["msg"].as_str().unwrap().contains("not implemented"));
    }
}
