//! For plugins that call another plugin with their own stdin and environment,
//! the way the reference plugins call their IPAM plugin (pkg/ipam ExecAdd).

use plexus_cni::{CniEnv, CniError, CniResult, Command};

use crate::exec::{Exec, RawExec};

/// The CNI environment to pass on, with `cmd` as the command.
fn env_for(cmd: Command, env: &CniEnv) -> Vec<(String, String)> {
    let mut out = vec![("CNI_COMMAND".to_string(), cmd.as_str().to_string())];
    if matches!(cmd, Command::Add | Command::Del | Command::Check) {
        out.push(("CNI_CONTAINERID".into(), env.container_id.clone()));
        out.push((
            "CNI_NETNS".into(),
            env.netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ));
        out.push(("CNI_IFNAME".into(), env.ifname.clone()));
        out.push(("CNI_ARGS".into(), env.args.to_env_string()));
    }
    out.push((
        "CNI_PATH".into(),
        env.path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    ));
    out
}

fn run(cmd: Command, plugin_type: &str, stdin: &[u8], env: &CniEnv) -> Result<Vec<u8>, CniError> {
    let bin = RawExec
        .find(plugin_type, &env.path)
        .map_err(|e| e.to_cni())?;
    RawExec
        .run(&bin, &env_for(cmd, env), stdin)
        .map_err(|e| e.to_cni())
}

/// ADD through `plugin_type`, returning its result.
pub fn add(plugin_type: &str, stdin: &[u8], env: &CniEnv) -> Result<CniResult, CniError> {
    let out = run(Command::Add, plugin_type, stdin, env)?;
    CniResult::from_slice(&out).map_err(|e| {
        CniError::decode(format!(
            "{plugin_type} returned an unreadable result: {}",
            e.msg
        ))
    })
}

pub fn del(plugin_type: &str, stdin: &[u8], env: &CniEnv) -> Result<(), CniError> {
    run(Command::Del, plugin_type, stdin, env).map(|_| ())
}

pub fn check(plugin_type: &str, stdin: &[u8], env: &CniEnv) -> Result<(), CniError> {
    run(Command::Check, plugin_type, stdin, env).map(|_| ())
}

pub fn status(plugin_type: &str, stdin: &[u8], env: &CniEnv) -> Result<(), CniError> {
    run(Command::Status, plugin_type, stdin, env).map(|_| ())
}

pub fn gc(plugin_type: &str, stdin: &[u8], env: &CniEnv) -> Result<(), CniError> {
    run(Command::Gc, plugin_type, stdin, env).map(|_| ())
}
