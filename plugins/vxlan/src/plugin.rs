//! The CNI commands. Every network change is the delegate's: this plugin
//! renders, saves and forwards.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use plexus_base::files;
use plexus_cni::config::VALID_ATTACHMENTS_KEY;
use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, ErrorCode};
use plexus_runtime::delegate;
use plexus_subnet::SubnetEnv;
use serde_json::{json, Map, Value};

use crate::config::VxlanConf;
use crate::render::delegate_config;
use crate::saved;

/// subnet.env is a few hundred bytes; refuse anything much larger.
const SUBNET_ENV_LIMIT: u64 = 64 << 10;

#[derive(Debug)]
pub struct VxlanPlugin;

/// Why subnet.env could not be used.
enum LeaseFileError {
    /// Not there: plexusd holds no lease yet.
    Missing(String),
    Unusable(String),
}

fn read_subnet_env(path: &Path) -> Result<SubnetEnv, LeaseFileError> {
    let text = files::read_limited_string(path, SUBNET_ENV_LIMIT).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            LeaseFileError::Missing(format!(
                "{} does not exist: plexusd holds no subnet lease on this node yet",
                path.display()
            ))
        } else {
            LeaseFileError::Unusable(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    SubnetEnv::parse(&text)
        .map_err(|e| LeaseFileError::Unusable(format!("{}: {e}", path.display())))
}

/// For ADD: no lease yet is "try again later" (11).
fn lease_for_add(path: &Path) -> Result<SubnetEnv, CniError> {
    read_subnet_env(path).map_err(|e| match e {
        LeaseFileError::Missing(m) => CniError::new(ErrorCode::TryAgainLater, m),
        LeaseFileError::Unusable(m) => CniError::io(m),
    })
}

/// dataDir is where the saved configs live: refused (code 5) when it is a
/// symlink or not ours, before anything is read, written or run; created
/// when `create`.
fn state_dir(conf: &VxlanConf, create: bool) -> Result<(), CniError> {
    if create {
        files::create_state_dir(&conf.data_dir, Path::new(""), 0o700)?;
    } else {
        files::existing_state_dir(&conf.data_dir, Path::new(""))?;
    }
    Ok(())
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

/// The delegate's `type` from a rendered or saved config.
fn delegate_type(conf: &Map<String, Value>) -> Result<String, CniError> {
    conf.get("type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CniError::invalid_config("delegate config has no string \"type\""))
}

fn to_bytes(conf: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(conf).expect("a JSON map serializes")
}

fn parse_saved(bytes: &[u8]) -> Option<Map<String, Value>> {
    serde_json::from_slice::<Value>(bytes)
        .ok()?
        .as_object()
        .filter(|m| m.get("type").is_some_and(Value::is_string))
        .cloned()
}

impl Plugin for VxlanPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = VxlanConf::load(req.conf)?;
        let env = lease_for_add(&conf.subnet_file)?;
        let rendered = delegate_config(&conf, &req.conf.name, req.conf.cni_version.as_str(), &env)?;
        let plugin = delegate_type(&rendered)?;
        let bytes = to_bytes(&rendered);
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        // Saved before the delegate runs: a DEL after a failed or
        // interrupted ADD must find what to undo.
        state_dir(&conf, true)?;
        saved::save(&conf.data_dir, cid, ifname, &bytes)
            .map_err(|e| io_err("cannot save the delegate config in", &conf.data_dir, e))?;
        tracing::debug!(delegate = %plugin, container = %cid, "delegating ADD");
        delegate::add(&plugin, &bytes, req.env).inspect_err(|_| {
            // Leave nothing behind: undo whatever the delegate got done.
            if let Err(e) = delegate::del(&plugin, &bytes, req.env) {
                tracing::warn!(error = %e, "cleanup DEL after a failed ADD failed");
            } else if let Err(e) = saved::remove(&conf.data_dir, cid, ifname) {
                tracing::warn!(error = %e, "cannot remove the saved delegate config");
            }
        })
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = VxlanConf::load(req.conf)?;
        state_dir(&conf, false)?;
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        let path = saved::path(&conf.data_dir, cid, ifname);
        let Some(bytes) = saved::load(&conf.data_dir, cid, ifname)
            .map_err(|e| io_err("cannot read", &path, e))?
        else {
            return del_unsaved(&conf, req);
        };
        let Some(saved_conf) = parse_saved(&bytes) else {
            // Not ours to run; the spec wants DEL to finish.
            tracing::warn!(path = %path.display(), "saved delegate config is unreadable; removing it");
            return saved::remove(&conf.data_dir, cid, ifname)
                .map_err(|e| io_err("cannot remove", &path, e));
        };
        let plugin = delegate_type(&saved_conf)?;
        delegate::del(&plugin, &bytes, req.env)?;
        saved::remove(&conf.data_dir, cid, ifname).map_err(|e| io_err("cannot remove", &path, e))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = VxlanConf::load(req.conf)?;
        state_dir(&conf, false)?;
        let (cid, ifname) = (&req.env.container_id, &req.env.ifname);
        let path = saved::path(&conf.data_dir, cid, ifname);
        let bytes = saved::load(&conf.data_dir, cid, ifname)
            .map_err(|e| io_err("cannot read", &path, e))?
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::UnknownContainer,
                    format!(
                        "no saved delegate config {}: the attachment was never added",
                        path.display()
                    ),
                )
            })?;
        let mut check_conf = parse_saved(&bytes).ok_or_else(|| {
            CniError::decode(format!(
                "saved delegate config {} is unreadable",
                path.display()
            ))
        })?;
        // The delegate checks against this call's version and prevResult.
        check_conf.insert("cniVersion".into(), json!(req.conf.cni_version.as_str()));
        if let Some(prev) = req.conf.raw.get("prevResult") {
            check_conf.insert("prevResult".into(), prev.clone());
        }
        let plugin = delegate_type(&check_conf)?;
        delegate::check(&plugin, &to_bytes(&check_conf), req.env)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = VxlanConf::load(req.conf)?;
        let env = read_subnet_env(&conf.subnet_file).map_err(|e| {
            let (LeaseFileError::Missing(m) | LeaseFileError::Unusable(m)) = e;
            CniError::new(ErrorCode::PluginNotAvailable, m)
        })?;
        let rendered = delegate_config(&conf, &req.conf.name, req.conf.cni_version.as_str(), &env)?;
        delegate::status(&delegate_type(&rendered)?, &to_bytes(&rendered), req.env)
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = VxlanConf::load(req.conf)?;
        state_dir(&conf, false)?;
        let valid = req.conf.valid_attachments()?;
        files::sweep_stale_temporaries(&conf.data_dir, Duration::from_secs(600));
        let saved_all = saved::list(&conf.data_dir);
        // The delegate's GC needs a config of this network: the current
        // lease's, else any saved one (the agent may be down).
        let gc_conf = match read_subnet_env(&conf.subnet_file) {
            Ok(env) => Some(delegate_config(
                &conf,
                &req.conf.name,
                req.conf.cni_version.as_str(),
                &env,
            )?),
            Err(_) => saved_all
                .iter()
                .find_map(saved::Saved::read)
                .and_then(|b| parse_saved(&b)),
        };
        if let Some(mut gc_conf) = gc_conf {
            gc_conf.insert("cniVersion".into(), json!(req.conf.cni_version.as_str()));
            gc_conf.insert(
                VALID_ATTACHMENTS_KEY.into(),
                req.conf
                    .raw
                    .get(VALID_ATTACHMENTS_KEY)
                    .cloned()
                    .unwrap_or_else(|| json!([])),
            );
            delegate::gc(&delegate_type(&gc_conf)?, &to_bytes(&gc_conf), req.env)?;
        }
        for s in saved_all {
            let live = valid
                .iter()
                .any(|a| a.container_id == s.container_id && a.ifname == s.ifname);
            if !live {
                saved::remove(&conf.data_dir, &s.container_id, &s.ifname)
                    .map_err(|e| io_err("cannot remove", &s.path, e))?;
            }
        }
        Ok(())
    }
}

/// DEL without a saved config (never added, already deleted, or the file
/// was lost). flannel stops here; we also run the delegate's DEL with the
/// config the current lease renders, when there is one, so an address or a
/// veth of a lost file is still released (host-local releases by container,
/// whatever the range). Without a lease there is nothing to render: done.
fn del_unsaved(conf: &VxlanConf, req: &Request) -> Result<(), CniError> {
    let Ok(env) = read_subnet_env(&conf.subnet_file) else {
        tracing::debug!(container = %req.env.container_id, "no saved delegate config and no lease: nothing to delete");
        return Ok(());
    };
    let rendered = delegate_config(conf, &req.conf.name, req.conf.cni_version.as_str(), &env)?;
    delegate::del(&delegate_type(&rendered)?, &to_bytes(&rendered), req.env)
}
