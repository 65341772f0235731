//! `plexusctl cni ...`: cnitool's interface over plexus-runtime.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use plexus_cni::config::Attachment;
use plexus_cni::CniError;
use plexus_runtime::{Cni, NetworkConfigList, RuntimeConf, RuntimeError};
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

#[derive(Args)]
pub struct CniCmd {
    /// Directory of network configurations.
    #[arg(
        long,
        env = "NETCONFPATH",
        default_value = "/etc/cni/net.d",
        global = true
    )]
    conf_dir: PathBuf,
    /// Directories to search for plugin binaries, ':'-separated.
    #[arg(long, env = "CNI_PATH", default_value = "/opt/cni/bin", global = true)]
    cni_path: String,
    /// Where results are cached (libcni's format, so cnitool can read it).
    #[arg(long, env = "PLEXUS_CACHE_DIR", default_value = plexus_runtime::cache::DEFAULT_CACHE_DIR, global = true)]
    cache_dir: PathBuf,
    /// Interface name inside the sandbox.
    #[arg(long, env = "CNI_IFNAME", default_value = "eth0", global = true)]
    ifname: String,
    /// CNI_ARGS passed to plugins, K=V;K=V.
    #[arg(long, env = "CNI_ARGS", default_value = "", global = true)]
    args: String,
    /// Capability arguments as a JSON object (cnitool's CAP_ARGS).
    #[arg(long, env = "CAP_ARGS", default_value = "", global = true)]
    cap_args: String,
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand)]
enum Op {
    /// Attach the sandbox at NETNS to network NET; prints the result.
    Add { net: String, netns: PathBuf },
    /// Verify an attachment made by `add`.
    Check { net: String, netns: PathBuf },
    /// Detach; works when the netns is already gone.
    Del { net: String, netns: PathBuf },
    /// Ask every plugin of NET whether it is ready (CNI 1.1.0).
    Status { net: String },
    /// Release everything NET holds except the attachments given with --valid.
    Gc {
        net: String,
        /// A still-valid attachment, CONTAINERID/IFNAME (repeatable). With
        /// none given, every cached attachment of NET is deleted.
        #[arg(long = "valid", value_name = "CONTAINERID/IFNAME")]
        valid: Vec<String>,
    },
}

/// cnitool's container ID: "cnitool-" and the first 10 bytes of the SHA-512
/// of the absolute netns path, in hex, so both tools agree on cache entries.
pub fn container_id_for(netns: &Path) -> String {
    let digest = Sha512::digest(netns.as_os_str().as_encoded_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("cannot resolve a relative netns path")?
            .join(p))
    }
}

fn parse_args(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.contains('=') => Ok((k.into(), v.into())),
            _ => bail!("invalid CNI_ARGS pair \"{pair}\" (expected K=V;K=V)"),
        })
        .collect()
}

fn parse_cap_args(s: &str) -> anyhow::Result<Map<String, Value>> {
    if s.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(s).context("CAP_ARGS is not valid JSON")? {
        Value::Object(m) => Ok(m),
        _ => bail!("CAP_ARGS must be a JSON object"),
    }
}

fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

pub fn run(cmd: CniCmd) -> ExitCode {
    match run_inner(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A plugin's own CNI error is printed as the plugin printed it,
            // so scripts get the code; everything else as text.
            let cni: CniError = match e.downcast_ref::<RuntimeError>() {
                Some(re) => re.to_cni(),
                None => CniError::invalid_config(format!("{e:#}")),
            };
            print_json(&serde_json::to_value(&cni).expect("serializes"));
            eprintln!("plexusctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(cmd: CniCmd) -> anyhow::Result<()> {
    let path: Vec<PathBuf> = cmd
        .cni_path
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let cni = Cni::new(path, &cmd.cache_dir);
    let load = |net: &str| NetworkConfigList::load(&cmd.conf_dir, net);
    let runtime_conf = |netns: &Path| -> anyhow::Result<RuntimeConf> {
        let netns = absolute(netns)?;
        Ok(RuntimeConf {
            container_id: container_id_for(&netns),
            netns: Some(netns),
            ifname: cmd.ifname.clone(),
            args: parse_args(&cmd.args)?,
            capability_args: parse_cap_args(&cmd.cap_args)?,
        })
    };
    match &cmd.op {
        Op::Add { net, netns } => {
            let list = load(net)?;
            let rt = runtime_conf(netns)?;
            if !netns_exists(rt.netns.as_deref().expect("set")) {
                bail!("network namespace {} does not exist", netns.display());
            }
            let result = cni.add_network_list(&list, &rt)?;
            print_json(&result.to_value(list.cni_version));
        }
        Op::Check { net, netns } => {
            let list = load(net)?;
            cni.check_network_list(&list, &runtime_conf(netns)?)?;
        }
        Op::Del { net, netns } => {
            let list = load(net)?;
            cni.del_network_list(&list, &runtime_conf(netns)?)?;
        }
        Op::Status { net } => {
            let list = load(net)?;
            cni.status_network_list(&list)?;
        }
        Op::Gc { net, valid } => {
            let list = load(net)?;
            let valid = valid
                .iter()
                .map(|v| match v.split_once('/') {
                    Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok(Attachment {
                        container_id: c.into(),
                        ifname: i.into(),
                    }),
                    _ => bail!("--valid takes CONTAINERID/IFNAME, got \"{v}\""),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            cni.gc_network_list(&list, &valid)?;
        }
    }
    Ok(())
}

fn netns_exists(p: &Path) -> bool {
    std::fs::metadata(p).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_matches_cnitool() {
        // cnitool: fmt.Sprintf("cnitool-%x", sha512.Sum512([]byte(netns))[:10])
        let id = container_id_for(Path::new("/var/run/netns/test"));
        // printf /var/run/netns/test | sha512sum | cut -c1-20
        assert_eq!(id, "cnitool-7b8a61d5d8e94d07cbe4");
        assert_eq!(id.len(), "cnitool-".len() + 20);
        assert!(id.starts_with("cnitool-"));
        let digest = Sha512::digest(b"/var/run/netns/test");
        assert!(id.ends_with(&format!("{:02x}{:02x}", digest[8], digest[9])));
    }

    #[test]
    fn args_and_cap_args() {
        assert_eq!(
            parse_args("A=1;B=2").unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert!(parse_args("A").is_err());
        assert!(parse_args("A=1=2").is_err());
        assert!(parse_cap_args("[1]").is_err());
        assert!(parse_cap_args("{").is_err());
        assert_eq!(parse_cap_args(r#"{"mac":"x"}"#).unwrap()["mac"], "x");
    }
}
