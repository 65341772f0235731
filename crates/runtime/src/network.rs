//! Running a network's plugin chain: libcni's AddNetworkList and friends.

use std::path::PathBuf;

use plexus_cni::config::Attachment;
use plexus_cni::{validate, CniResult, Command, SpecVersion};
use serde_json::{Map, Value};

use crate::cache::{CachedAttachment, ResultCache, CACHE_KIND};
use crate::conf::{NetworkConfigList, PluginConf};
use crate::error::RuntimeError;
use crate::exec::{Exec, RawExec};
use crate::inject;

/// Who is being attached: libcni's RuntimeConf.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    /// May be absent on DEL (the sandbox is already gone).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments; each plugin sees only those it declares.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    fn validate(&self, net: &str) -> Result<(), RuntimeError> {
        let cfg = |e: plexus_cni::CniError| RuntimeError::Config(e.to_string());
        validate::container_id(&self.container_id).map_err(cfg)?;
        validate::network_name(net).map_err(cfg)?;
        validate::interface_name(&self.ifname).map_err(cfg)
    }
}

/// A CNI runtime: where plugins are, where results are cached, how plugins are
/// run.
#[derive(Debug, Clone)]
pub struct Cni<E: Exec = RawExec> {
    pub path: Vec<PathBuf>,
    pub cache: ResultCache,
    exec: E,
}

impl Cni<RawExec> {
    pub fn new(path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Cni {
            path,
            cache: ResultCache::new(cache_dir),
            exec: RawExec,
        }
    }
}

impl<E: Exec> Cni<E> {
    pub fn with_exec(path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>, exec: E) -> Self {
        Cni {
            path,
            cache: ResultCache::new(cache_dir),
            exec,
        }
    }

    fn path_env(&self) -> String {
        self.path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn env(&self, cmd: Command, rt: &RuntimeConf) -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), cmd.as_str().into()),
            ("CNI_CONTAINERID".into(), rt.container_id.clone()),
            (
                "CNI_NETNS".into(),
                rt.netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "CNI_ARGS".into(),
                rt.args
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            ("CNI_IFNAME".into(), rt.ifname.clone()),
            ("CNI_PATH".into(), self.path_env()),
        ]
    }

    fn invoke(
        &self,
        cmd: Command,
        plugin: &PluginConf,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, RuntimeError> {
        let bin = self.exec.find(&plugin.plugin_type, &self.path)?;
        tracing::debug!(command = %cmd, plugin = %plugin.plugin_type, "invoking plugin");
        self.exec.run(&bin, env, stdin)
    }

    /// ADD one plugin of a chain.
    pub fn add_plugin(
        &self,
        list_name: &str,
        version: SpecVersion,
        plugin: &PluginConf,
        prev: Option<&CniResult>,
        rt: &RuntimeConf,
    ) -> Result<CniResult, RuntimeError> {
        let stdin = inject::plugin_stdin(plugin, list_name, version, prev, &rt.capability_args);
        let out = self.invoke(Command::Add, plugin, &self.env(Command::Add, rt), &stdin)?;
        CniResult::from_slice(&out).map_err(|e| RuntimeError::BadResult {
            plugin: plugin.plugin_type.clone(),
            msg: e.msg,
        })
    }

    fn del_or_check_plugin(
        &self,
        cmd: Command,
        list_name: &str,
        version: SpecVersion,
        plugin: &PluginConf,
        prev: Option<&CniResult>,
        rt: &RuntimeConf,
    ) -> Result<(), RuntimeError> {
        let stdin = inject::plugin_stdin(plugin, list_name, version, prev, &rt.capability_args);
        self.invoke(cmd, plugin, &self.env(cmd, rt), &stdin)
            .map(|_| ())
    }

    /// ADD the whole chain in order, each plugin getting the previous result,
    /// and cache the final result. Like libcni, a failure part-way is returned
    /// as is: the caller decides whether to DEL (the meta plugin does).
    pub fn add_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<CniResult, RuntimeError> {
        rt.validate(&list.name)?;
        self.cache
            .check_storable(&list.name, &rt.container_id, &rt.ifname)?;
        let mut prev: Option<CniResult> = None;
        for plugin in &list.plugins {
            prev =
                Some(self.add_plugin(&list.name, list.cni_version, plugin, prev.as_ref(), rt)?);
        }
        let result = prev.expect("a list has at least one plugin");
        self.cache.write(&cache_entry(list, rt, &result))?;
        Ok(result)
    }

    fn cached_result(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<Option<CniResult>, RuntimeError> {
        let Some(entry) = self.cache.read(&list.name, &rt.container_id, &rt.ifname)? else {
            return Ok(None);
        };
        match entry.result.as_ref().map(CniResult::from_value) {
            Some(Ok(r)) => Ok(Some(r)),
            Some(Err(e)) => {
                // A cached result we cannot read must not block DEL.
                tracing::warn!(network = %list.name, "ignoring unreadable cached result: {e}");
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// DEL the chain in reverse with the cached result as prevResult
    /// (0.4.0+). Unlike libcni, it keeps going past a failing plugin so one
    /// broken plugin does not leak what the others hold; every error is
    /// reported, and the cache entry is removed only when all succeeded.
    pub fn del_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<(), RuntimeError> {
        rt.validate(&list.name)?;
        let cached = if list.cni_version >= SpecVersion::V0_4_0 {
            self.cached_result(list, rt)?
        } else {
            None
        };
        let mut errs = Vec::new();
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.del_or_check_plugin(
                Command::Del,
                &list.name,
                list.cni_version,
                plugin,
                cached.as_ref(),
                rt,
            ) {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            self.cache
                .delete(&list.name, &rt.container_id, &rt.ifname)?;
        }
        RuntimeError::collect(errs)
    }

    /// CHECK the chain against the cached result (0.4.0+).
    pub fn check_network_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<(), RuntimeError> {
        rt.validate(&list.name)?;
        if !list.cni_version.supports_check() {
            return Err(RuntimeError::Unsupported(format!(
                "configuration version \"{}\" does not support the CHECK command",
                list.cni_version
            )));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self.cached_result(list, rt)?.ok_or_else(|| {
            RuntimeError::Config(format!(
                "cannot check network \"{}\" for container {} interface {}: no cached result (was it added?)",
                list.name, rt.container_id, rt.ifname
            ))
        })?;
        for plugin in &list.plugins {
            self.del_or_check_plugin(
                Command::Check,
                &list.name,
                list.cni_version,
                plugin,
                Some(&cached),
                rt,
            )?;
        }
        Ok(())
    }

    /// STATUS of every plugin (1.1.0+; older lists have no STATUS and are
    /// reported ready, as libcni does).
    pub fn status_network_list(&self, list: &NetworkConfigList) -> Result<(), RuntimeError> {
        if !list.cni_version.supports_status_gc() {
            return Ok(());
        }
        let env = vec![
            ("CNI_COMMAND".to_string(), "STATUS".to_string()),
            ("CNI_PATH".to_string(), self.path_env()),
        ];
        for plugin in &list.plugins {
            let stdin = inject::gc_or_status_stdin(plugin, &list.name, list.cni_version, None);
            self.invoke(Command::Status, plugin, &env, &stdin)?;
        }
        Ok(())
    }

    /// GC as libcni does it: DEL every cached attachment of this network that
    /// is not in `valid`, then (1.1.0+) send GC with the valid list to every
    /// plugin so they release what they hold for anything else.
    pub fn gc_network_list(
        &self,
        list: &NetworkConfigList,
        valid: &[Attachment],
    ) -> Result<(), RuntimeError> {
        if list.disable_gc {
            return Ok(());
        }
        self.cache.sweep_stale_temporaries();
        let mut errs = Vec::new();
        for cached in self.cache.list(Some(&list.name))? {
            let still_valid = valid
                .iter()
                .any(|a| a.container_id == cached.container_id && a.ifname == cached.if_name);
            if still_valid {
                continue;
            }
            let rt = RuntimeConf {
                container_id: cached.container_id.clone(),
                netns: (!cached.netns.is_empty()).then(|| PathBuf::from(&cached.netns)),
                ifname: cached.if_name.clone(),
                args: cached
                    .cni_args
                    .iter()
                    .map(|[k, v]| (k.clone(), v.clone()))
                    .collect(),
                capability_args: cached.capability_args.clone(),
            };
            if let Err(e) = self.del_network_list(list, &rt) {
                errs.push(RuntimeError::Config(format!(
                    "failed to delete stale attachment {} {}: {e}",
                    rt.container_id, rt.ifname
                )));
            }
        }
        if list.cni_version.supports_status_gc() {
            let va = serde_json::to_value(valid).expect("serializes");
            let env = vec![
                ("CNI_COMMAND".to_string(), "GC".to_string()),
                ("CNI_PATH".to_string(), self.path_env()),
            ];
            for plugin in &list.plugins {
                let stdin =
                    inject::gc_or_status_stdin(plugin, &list.name, list.cni_version, Some(&va));
                if let Err(e) = self.invoke(Command::Gc, plugin, &env, &stdin) {
                    errs.push(e);
                }
            }
        }
        RuntimeError::collect(errs)
    }
}

fn cache_entry(list: &NetworkConfigList, rt: &RuntimeConf, result: &CniResult) -> CachedAttachment {
    CachedAttachment {
        kind: CACHE_KIND.into(),
        container_id: rt.container_id.clone(),
        config: list.bytes.clone(),
        if_name: rt.ifname.clone(),
        network_name: list.name.clone(),
        netns: rt
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        cni_args: rt
            .args
            .iter()
            .map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        capability_args: rt.capability_args.clone(),
        result: Some(result.to_value(list.cni_version)),
    }
}
