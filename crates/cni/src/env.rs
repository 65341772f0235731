//! The `CNI_*` environment a plugin is called with.

use std::path::PathBuf;

use crate::args::CniArgs;
use crate::command::Command;
use crate::error::CniError;
use crate::validate;

/// What the runtime told us through the environment. Fields that a command
/// does not need are `None`/empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_PATH` split on ':'; empty entries dropped.
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Read from the process environment.
    pub fn from_process() -> Result<Self, CniError> {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Parse and validate as the reference skel does: the variables each
    /// command requires must be present (code 4 otherwise), and the
    /// container ID and interface name must be valid names.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, CniError> {
        let mut get = std::collections::HashMap::new();
        for (k, v) in vars {
            if k.starts_with("CNI_") {
                get.insert(k, v);
            }
        }
        let command = match get.get("CNI_COMMAND") {
            None => return Err(CniError::invalid_env(
                "required env variables [CNI_COMMAND] missing",
            )
            .with_details(
                "this binary is a CNI plugin: run it through a CNI runtime, or `plexusctl cni`",
            )),
            Some(c) => c.parse::<Command>().map_err(CniError::invalid_env)?,
        };
        use Command::*;
        let needs = |var: &str| -> bool {
            match var {
                "CNI_CONTAINERID" | "CNI_IFNAME" => matches!(command, Add | Del | Check),
                "CNI_NETNS" => matches!(command, Add | Check),
                "CNI_PATH" => matches!(command, Add | Del | Check | Gc),
                _ => false,
            }
        };
        let missing: Vec<&str> = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            .into_iter()
            .filter(|v| needs(v) && get.get(*v).is_none_or(|s| s.is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(CniError::invalid_env(format!(
                "required env variables [{}] missing",
                missing.join(" ")
            ))
            .with_details(format!("{command} needs them")));
        }
        let container_id = get.remove("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get.remove("CNI_IFNAME").unwrap_or_default();
        if needs("CNI_CONTAINERID") {
            validate::container_id(&container_id)?;
            validate::interface_name(&ifname)?;
        }
        let netns = get
            .remove("CNI_NETNS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let args = CniArgs::parse(get.get("CNI_ARGS").map(String::as_str).unwrap_or(""))?;
        let path = get
            .get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn full(cmd: &str) -> Vec<(String, String)> {
        vars(&[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
            ("CNI_ARGS", "K8S_POD_NAME=a"),
            ("OTHER", "ignored"),
        ])
    }

    #[test]
    fn parses_add() {
        let e = CniEnv::from_vars(full("ADD")).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "c1");
        assert_eq!(
            e.netns.as_deref(),
            Some(std::path::Path::new("/var/run/netns/x"))
        );
        assert_eq!(e.path.len(), 2);
        assert_eq!(e.args.get("K8S_POD_NAME"), Some("a"));
    }

    #[test]
    fn missing_variables_are_listed() {
        let e = CniEnv::from_vars(vars(&[("CNI_COMMAND", "ADD")])).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID CNI_NETNS CNI_IFNAME CNI_PATH] missing"
        );
        let e = CniEnv::from_vars(vars(&[])).unwrap_err();
        assert!(e.msg.contains("CNI_COMMAND"));
    }

    #[test]
    fn del_does_not_need_netns() {
        let mut v = full("DEL");
        v.retain(|(k, _)| k != "CNI_NETNS");
        let e = CniEnv::from_vars(v).unwrap();
        assert!(e.netns.is_none());
    }

    #[test]
    fn version_and_status_need_little() {
        assert!(CniEnv::from_vars(vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert!(CniEnv::from_vars(vars(&[("CNI_COMMAND", "STATUS")])).is_ok());
        assert_eq!(
            CniEnv::from_vars(vars(&[("CNI_COMMAND", "GC")]))
                .unwrap_err()
                .code,
            4
        );
    }

    #[test]
    fn rejects_unknown_command_and_bad_names() {
        assert_eq!(
            CniEnv::from_vars(vars(&[("CNI_COMMAND", "FOO")]))
                .unwrap_err()
                .code,
            4
        );
        let mut v = full("ADD");
        v.retain(|(k, _)| k != "CNI_IFNAME");
        v.push(("CNI_IFNAME".into(), "bad/name".into()));
        assert_eq!(CniEnv::from_vars(v).unwrap_err().code, 4);
        let mut v = full("ADD");
        v.retain(|(k, _)| k != "CNI_CONTAINERID");
        v.push(("CNI_CONTAINERID".into(), "../x".into()));
        assert_eq!(CniEnv::from_vars(v).unwrap_err().code, 4);
        for cmd in ["ADD", "DEL", "CHECK"] {
            let mut v = full(cmd);
            v.retain(|(k, _)| k != "CNI_CONTAINERID");
            let long = "c".repeat(validate::MAX_CONTAINER_ID_LEN + 1);
            v.push(("CNI_CONTAINERID".into(), long));
            let e = CniEnv::from_vars(v).unwrap_err();
            assert_eq!(e.code, 4, "{cmd}: {e}");
            assert!(e.msg.contains("containerID is 1025 bytes"), "{cmd}: {e}");
        }
        let mut v = full("ADD");
        v.retain(|(k, _)| k != "CNI_ARGS");
        v.push(("CNI_ARGS".into(), "novalue".into()));
        assert_eq!(CniEnv::from_vars(v).unwrap_err().code, 4);
    }
}
