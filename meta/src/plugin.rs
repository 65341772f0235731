//! [`Meta`], the plugin: ADD plans, locks the attachment, writes the plan
//! and runs the delegates all-or-nothing; DEL undoes what the plan (or,
//! without one, the configuration and the delegates' result cache) names;
//! CHECK, STATUS and GC go through the delegates too.

use std::collections::HashSet;
use std::path::PathBuf;

use plexus_cni::config::Attachment;
use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, ErrorCode};
use plexus_runtime::{Cni, Exec, NetworkConfigList, RawExec};
use serde_json::Value;

use crate::backends::{Backends, LocalBackends};
use crate::cache::{self, PlanCache, Read};
use crate::config::MetaConf;
use crate::delegate::Delegates;
use crate::error::MetaError;
use crate::kube::KubeBackends;
use crate::lock::{AttachmentLock, LOCK_WAIT};
use crate::plan::{Plan, PlannedAttachment};
use crate::planner::{build_plan, PlanRequest};
use crate::routes::{self, NetlinkRoutes, RouteOps};
use crate::source::{CriAnnotations, PodSource, StatusSink};
use crate::status::FileStatusSink;
use crate::types::{AttachmentKey, NetworkStatus, PodRef};

/// The plugin. Generic over how delegates are executed and how routes are
/// changed so the orchestration is unit-tested without root.
pub struct Meta<B: Backends = LocalBackends, E: Exec + Clone = RawExec, R: RouteOps = NetlinkRoutes>
{
    pub backends: B,
    pub exec: E,
    pub routes: R,
}

impl Meta<KubeBackends> {
    /// The plugin as the binary runs it: API mode when `kubeconfig` is set.
    pub fn with_api() -> Self {
        Meta {
            backends: KubeBackends::default(),
            exec: RawExec,
            routes: NetlinkRoutes,
        }
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            backends: LocalBackends,
            exec: RawExec,
            routes: NetlinkRoutes,
        }
    }
}

/// Everything one call works with.
struct Call<'a> {
    conf: MetaConf,
    key: AttachmentKey,
    pod: PodRef,
    plugin_path: Vec<PathBuf>,
    req: &'a Request<'a>,
}

fn pod_ref(req: &Request) -> PodRef {
    let a = &req.env.args;
    PodRef {
        namespace: a.get("K8S_POD_NAMESPACE").unwrap_or_default().to_string(),
        name: a.get("K8S_POD_NAME").unwrap_or_default().to_string(),
        uid: a.get("K8S_POD_UID").unwrap_or_default().to_string(),
    }
}

impl<B: Backends, E: Exec + Clone, R: RouteOps> Meta<B, E, R> {
    fn call<'a>(&self, req: &'a Request<'a>) -> Result<Call<'a>, MetaError> {
        let conf = MetaConf::from_netconf(req.conf)?;
        // Before any command reads a plan or runs a delegate: a planted
        // link under cacheDir is refused, not followed.
        cache::check_state_dirs(&conf.cache_dir)?;
        Ok(Call {
            plugin_path: conf.plugin_path(&req.env.path),
            key: AttachmentKey {
                container_id: req.env.container_id.clone(),
                ifname: req.env.ifname.clone(),
            },
            pod: pod_ref(req),
            conf,
            req,
        })
    }

    fn delegates(&self, c: &Call, netns: Option<PathBuf>, container_id: &str) -> Delegates<E> {
        Delegates {
            cni: Cni::with_exec(
                c.plugin_path.clone(),
                cache::delegate_cache_dir(&c.conf.cache_dir),
                self.exec.clone(),
            ),
            container_id: container_id.to_string(),
            netns,
        }
    }

    fn sinks(&self, conf: &MetaConf) -> Vec<Box<dyn StatusSink>> {
        let mut v: Vec<Box<dyn StatusSink>> = vec![Box::new(FileStatusSink::new(&conf.cache_dir))];
        v.extend(self.backends.status_sinks(conf));
        v
    }

    /// The plan for this call from configuration, pod and NADs.
    fn plan(&self, c: &Call, strict: bool) -> Result<Plan, MetaError> {
        let knows_pod = !c.pod.name.is_empty();
        let pod = if knows_pod {
            let sources = self
                .backends
                .pod_sources(&c.conf, &c.req.conf.runtime_config)?;
            sources.pod(&c.pod)?
        } else {
            // Not a Kubernetes pod (podman, cnitool): the CRI annotations
            // may still be given; the namespace is then "default".
            let cri = CriAnnotations::from_runtime_config(&c.req.conf.runtime_config)?;
            let p = PodRef {
                namespace: "default".into(),
                ..c.pod.clone()
            };
            PodSource::pod(&cri, &p)?
        };
        let nads = self.backends.nad_stores(&c.conf);
        let args = c.req.env.args.0.clone();
        let pr = PlanRequest {
            conf: &c.conf,
            key: c.key.clone(),
            netns: c.req.env.netns.as_deref(),
            pod: c.pod.clone(),
            args: &args,
            capability_args: &c.req.conf.runtime_config,
            plugin_path: &c.plugin_path,
            strict,
        };
        build_plan(&pr, pod.as_ref(), &nads)
    }

    fn do_add(&self, req: &Request) -> Result<CniResult, CniError> {
        let c = self.call(req)?;
        if let Some(f) = &c.conf.readiness_indicator_file {
            if !f.exists() {
                return Err(MetaError::NotReady(f.display().to_string()).into());
            }
        }
        if c.conf.kubeconfig.is_some() && !c.pod.name.is_empty() {
            // The pod's name goes into API URLs (GET, and the status PATCH
            // after the delegates ran): refuse a bad one before anything.
            check_pod_names(&c.pod)?;
        }
        let plan = self.plan(&c, true)?;
        cache::check_storable(
            &c.conf.cache_dir,
            &c.key,
            plan.attachments
                .iter()
                .map(|a| (a.network_name(), a.ifname.as_str())),
        )?;
        let lock = AttachmentLock::acquire(&c.conf.cache_dir, &c.key, LOCK_WAIT)?;
        let plans = PlanCache::new(&c.conf.cache_dir);
        if plans.exists(&c.key) {
            // A second ADD without a DEL in between: its delegates would
            // fail on the interfaces the first made, and their rollback
            // would delete them. Nothing is touched.
            return Err(MetaError::AlreadyAttached(format!(
                "container {} interface {} is already attached (plan {}); DEL it before adding it again",
                c.key.container_id,
                c.key.ifname,
                plans.path(&c.key).display()
            ))
            .into());
        }
        if let Err(e) = plans.write(&plan) {
            lock.remove();
            return Err(e.into());
        }
        let d = self.delegates(&c, req.env.netns.clone(), &c.key.container_id);
        let mut results = match d.add_all(&plan, c.conf.parallel_secondary) {
            Ok(r) => r,
            Err(f) => {
                if f.rollback.is_none() {
                    let _ = plans.remove(&c.key);
                    lock.remove();
                } else {
                    // What is left for the runtime's DEL: the attachments
                    // that were tried, the failed ones marked.
                    let left = Plan {
                        attachments: f.tried,
                        ..plan
                    };
                    if let Err(e) = plans.write(&left) {
                        tracing::warn!("cannot record the failed attachments in the plan: {e}");
                    }
                }
                return Err(with_rollback(f.error.to_cni(), f.rollback));
            }
        };
        match self.finish_add(&c, &plan, &mut results) {
            Ok(()) => Ok(results.swap_remove(0)),
            Err(e) => {
                let rollback = d.del_all(plan.attachments.iter()).err();
                if rollback.is_none() {
                    // A status file written before a later sink failed
                    // must not describe a pod that has no networks.
                    for s in self.sinks(&c.conf) {
                        let _ = s.remove(&c.key);
                    }
                    let _ = plans.remove(&c.key);
                    lock.remove();
                }
                Err(with_rollback(e.to_cni(), rollback))
            }
        }
    }

    /// After every delegate succeeded: default route, then status.
    fn finish_add(
        &self,
        c: &Call,
        plan: &Plan,
        results: &mut [CniResult],
    ) -> Result<(), MetaError> {
        let changes = routes::changes(plan);
        if !changes.is_empty() {
            let netns = c.req.env.netns.as_deref().expect("ADD has a netns");
            self.routes.apply(netns, &changes)?;
            for (r, ch) in results.iter_mut().zip(&changes) {
                routes::adjust_result(r, ch);
            }
        }
        let statuses: Vec<NetworkStatus> = plan
            .attachments
            .iter()
            .zip(results.iter())
            .map(|(a, r)| NetworkStatus::from_result(&a.name, &a.ifname, a.master, r))
            .collect();
        for s in self.sinks(&c.conf) {
            s.publish(&c.key, &plan.pod(), &statuses)?;
        }
        // Last: once this returns the pod's policy is in the kernel (a
        // failure rolls the ADD back, the runtime's DEL detaches).
        if let Some(netns) = c.req.env.netns.as_deref() {
            crate::policy::attach(
                &c.conf.run_dir,
                &c.key.container_id,
                netns,
                &c.pod,
                &statuses,
            )?;
        }
        Ok(())
    }

    fn do_del(&self, req: &Request) -> Result<(), CniError> {
        let c = self.call(req)?;
        if let Some(f) = &c.conf.readiness_indicator_file {
            if !f.exists() {
                // DEL must still clean up (Multus only warns).
                tracing::warn!("readiness indicator file {} is missing", f.display());
            }
        }
        if let Err(e) = cache::check_storable(&c.conf.cache_dir, &c.key, []) {
            // ADD refuses such an attachment before anything is created.
            tracing::info!("nothing to delete: {e}");
            return Ok(());
        }
        // Waits for an ADD in progress, and for the delegates of an ADD
        // whose meta plugin was killed: they hold the lock until they exit.
        let lock = AttachmentLock::acquire(&c.conf.cache_dir, &c.key, LOCK_WAIT)?;
        // The pod's policy state goes first (while its namespace is there).
        crate::policy::detach(
            &c.conf.run_dir,
            &c.key.container_id,
            req.env.netns.as_deref(),
        );
        let plans = PlanCache::new(&c.conf.cache_dir);
        let plan = match plans.read(&c.key) {
            Read::Found(p) => *p,
            Read::Missing => self.fallback_plan(&c)?,
            Read::Corrupt(why) => {
                tracing::warn!("plan cache unreadable, deleting what can be found: {why}");
                self.fallback_plan(&c)?
            }
        };
        let d = self.delegates(&c, req.env.netns.clone(), &c.key.container_id);
        let mut errs: Vec<MetaError> = d
            .del_all(plan.attachments.iter())
            .err()
            .into_iter()
            .collect();
        if errs.is_empty() {
            for s in self.sinks(&c.conf) {
                if let Err(e) = s.remove(&c.key) {
                    errs.push(e);
                }
            }
        }
        if errs.is_empty() {
            plans.remove(&c.key)?;
            lock.remove();
            cache::sweep_stale_temporaries(&c.conf.cache_dir);
        }
        MetaError::collect(errs).map_err(Into::into)
    }

    /// DEL without a usable plan: what the configuration, pod and NADs still
    /// say, plus every delegate attachment of this container the inner
    /// result cache remembers (it holds each network's config).
    fn fallback_plan(&self, c: &Call) -> Result<Plan, MetaError> {
        let mut plan = match self.plan(c, false) {
            Ok(p) => p,
            Err(e) => {
                // A bad annotation or a gone API must not block DEL.
                tracing::warn!("cannot rebuild the plan from configuration: {e}");
                Plan::empty(&c.key, &c.pod)
            }
        };
        let inner =
            plexus_runtime::cache::ResultCache::new(cache::delegate_cache_dir(&c.conf.cache_dir));
        let cached: Vec<_> = inner
            .list(None)
            .unwrap_or_else(|e| {
                tracing::warn!("cannot list delegate results: {e}");
                Vec::new()
            })
            .into_iter()
            .filter(|e| e.container_id == c.key.container_id)
            .collect();
        // What the configuration names but no delegate remembers adding was
        // most likely never added (or its ADD failed): DEL it, but a failure
        // there must not make the pod undeletable.
        for a in &mut plan.attachments {
            a.add_failed = !cached
                .iter()
                .any(|e| e.if_name == a.ifname && e.network_name == a.network_name());
        }
        for entry in cached {
            let known = plan.attachments.iter().any(|a| a.ifname == entry.if_name);
            let Ok(config) = serde_json::from_slice::<Value>(&entry.config) else {
                continue;
            };
            if known {
                continue;
            }
            plan.attachments.push(PlannedAttachment {
                name: entry.network_name.clone(),
                ifname: entry.if_name.clone(),
                master: entry.if_name == c.key.ifname,
                config,
                cni_args: entry.cni_args.clone(),
                capability_args: entry.capability_args.clone(),
                request: None,
                add_failed: false,
            });
        }
        // The cluster network last on DEL, as if planned first.
        plan.attachments.sort_by_key(|a| !a.master);
        Ok(plan)
    }

    fn do_check(&self, req: &Request) -> Result<(), CniError> {
        let c = self.call(req)?;
        let plan = match PlanCache::new(&c.conf.cache_dir).read(&c.key) {
            Read::Found(p) => *p,
            _ => {
                return Err(CniError::invalid_config(format!(
                    "no readable plan for container {} interface {} (was it added?)",
                    c.key.container_id, c.key.ifname
                )))
            }
        };
        let d = self.delegates(&c, req.env.netns.clone(), &c.key.container_id);
        for a in &plan.attachments {
            d.check(a)?;
        }
        Ok(())
    }

    /// The networks every pod gets (cluster + defaults), for STATUS and GC.
    fn configured_networks(&self, c: &Call) -> Result<Vec<NetworkConfigList>, MetaError> {
        let plan = self.plan(c, false)?;
        plan.attachments
            .iter()
            .map(PlannedAttachment::network_list)
            .collect()
    }

    fn do_status(&self, req: &Request) -> Result<(), CniError> {
        let c = self.call_without_container(req)?;
        if let Some(f) = &c.conf.readiness_indicator_file {
            if !f.exists() {
                return Err(CniError::new(
                    ErrorCode::PluginNotAvailable,
                    MetaError::NotReady(f.display().to_string()).to_string(),
                ));
            }
        }
        let d = self.delegates(&c, None, "status");
        for list in self.configured_networks(&c)? {
            d.cni.status_network_list(&list).map_err(|e| e.to_cni())?;
        }
        Ok(())
    }

    /// GC: DEL every meta attachment whose plan is not in the valid list,
    /// then let every known delegate network collect what belongs to no
    /// valid container.
    fn do_gc(&self, req: &Request) -> Result<(), CniError> {
        let c = self.call_without_container(req)?;
        let valid = req.conf.valid_attachments()?;
        let plans = PlanCache::new(&c.conf.cache_dir);
        cache::sweep_stale_temporaries(&c.conf.cache_dir);
        let mut errs = Vec::new();
        let mut lists: Vec<NetworkConfigList> = Vec::new();
        let listing = plans.list();
        // Containers an ADD or DEL is working on right now: their delegates
        // are not the inner GC's either.
        let mut busy: HashSet<String> = HashSet::new();
        for why in &listing.unreadable {
            tracing::warn!("GC: ignoring unreadable plan {why}");
        }
        for p in listing.items {
            let is_valid = valid
                .iter()
                .any(|v| v.container_id == p.container_id && v.ifname == p.ifname);
            if is_valid {
                for a in &p.attachments {
                    if let Ok(l) = a.network_list() {
                        lists.push(l);
                    }
                }
                continue;
            }
            // An ADD or DEL of it is running (or a killed ADD's delegates
            // are): not stale, or not ours to delete now.
            let lock = match AttachmentLock::try_acquire(&c.conf.cache_dir, &p.key()) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    busy.insert(p.container_id.clone());
                    continue;
                }
                Err(e) => {
                    errs.push(e);
                    continue;
                }
            };
            let netns = (!p.netns.is_empty()).then(|| PathBuf::from(&p.netns));
            let d = self.delegates(&c, netns, &p.container_id);
            match d.del_all(p.attachments.iter()) {
                Ok(()) => {
                    for s in self.sinks(&c.conf) {
                        let _ = s.remove(&p.key());
                    }
                    let _ = plans.remove(&p.key());
                    lock.remove();
                }
                Err(e) => errs.push(e),
            }
        }
        match self.configured_networks(&c) {
            Ok(l) => lists.extend(l),
            Err(e) => tracing::warn!("GC: cannot load the configured networks: {e}"),
        }
        let valid_ids: HashSet<&str> = valid
            .iter()
            .map(|v| v.container_id.as_str())
            .chain(busy.iter().map(String::as_str))
            .collect();
        let d = self.delegates(&c, None, "gc");
        // Inner attachments of a valid container are valid whatever their
        // interface name.
        let inner_valid: Vec<Attachment> = d
            .cni
            .cache
            .list(None)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| valid_ids.contains(e.container_id.as_str()))
            .map(|e| Attachment {
                container_id: e.container_id,
                ifname: e.if_name,
            })
            .collect();
        let mut seen = HashSet::new();
        for l in lists {
            if seen.insert(l.name.clone()) {
                if let Err(e) = d.cni.gc_network_list(&l, &inner_valid) {
                    errs.push(MetaError::Delegate {
                        network: l.name.clone(),
                        ifname: String::new(),
                        source: Box::new(e),
                    });
                }
            }
        }
        MetaError::collect(errs).map_err(Into::into)
    }

    /// STATUS and GC have no container: plan the configured networks under
    /// a placeholder identity.
    fn call_without_container<'a>(&self, req: &'a Request<'a>) -> Result<Call<'a>, MetaError> {
        let mut c = self.call(req)?;
        c.key = AttachmentKey {
            container_id: "none".into(),
            ifname: "eth0".into(),
        };
        c.pod = PodRef::default();
        Ok(c)
    }
}

fn check_pod_names(pod: &PodRef) -> Result<(), MetaError> {
    use crate::annotation::{is_dns1123_label, is_dns1123_subdomain};
    if !is_dns1123_label(&pod.namespace) || !is_dns1123_subdomain(&pod.name) {
        return Err(MetaError::Config(format!(
            "CNI_ARGS K8S_POD_NAMESPACE={:?} K8S_POD_NAME={:?}: not a Kubernetes namespace and pod name",
            pod.namespace, pod.name
        )));
    }
    Ok(())
}

fn with_rollback(mut e: CniError, rollback: Option<MetaError>) -> CniError {
    if let Some(r) = rollback {
        tracing::error!("rollback after a failed ADD left state behind: {r}");
        let extra = format!("rollback failed, a later DEL will retry: {r}");
        e.details = if e.details.is_empty() {
            extra
        } else {
            format!("{}; {extra}", e.details)
        };
    }
    e
}

impl<B: Backends, E: Exec + Clone, R: RouteOps> Plugin for Meta<B, E, R> {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        self.do_add(req)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        self.do_del(req)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        self.do_check(req)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        self.do_status(req)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        self.do_gc(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delegate::tests::env_var;
    use plexus_cni::{CniEnv, NetConf};
    use plexus_runtime::RuntimeError;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// Records "COMMAND network"; ADD of "bad" fails, DEL of "bad" always
    /// fails, DEL of "a" fails while `del_a_fails` is set.
    #[derive(Clone, Default)]
    struct Fake {
        calls: Arc<Mutex<Vec<String>>>,
        del_a_fails: Arc<AtomicBool>,
    }

    impl Exec for Fake {
        fn run(
            &self,
            _: &Path,
            env: &[(String, String)],
            stdin: &[u8],
        ) -> Result<Vec<u8>, RuntimeError> {
            let (cmd, ifname) = (env_var(env, "CNI_COMMAND"), env_var(env, "CNI_IFNAME"));
            let conf: Value = serde_json::from_slice(stdin).unwrap();
            let net = conf["name"].as_str().unwrap().to_string();
            self.calls.lock().unwrap().push(format!("{cmd} {net}"));
            let fail = match (cmd.as_str(), net.as_str()) {
                ("ADD", "bad") | ("DEL", "bad") => true,
                ("DEL", "a") => self.del_a_fails.load(Ordering::SeqCst),
                _ => false,
            };
            if fail {
                return Err(RuntimeError::Plugin {
                    plugin: "fake".into(),
                    error: CniError::plugin(120, format!("{cmd} {net} failed")),
                });
            }
            Ok(format!(
                r#"{{"cniVersion":"1.0.0","interfaces":[{{"name":"{ifname}","sandbox":"/x"}}]}}"#
            )
            .into_bytes())
        }
    }

    /// The attachment every fixture call is about.
    fn key() -> AttachmentKey {
        AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        meta: Meta<LocalBackends, Fake, NetlinkRoutes>,
        fake: Fake,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("bin")).unwrap();
            std::fs::write(dir.path().join("bin/fake"), "").unwrap();
            let fake = Fake::default();
            let meta = Meta {
                backends: LocalBackends,
                exec: fake.clone(),
                routes: NetlinkRoutes,
            };
            Fixture { dir, meta, fake }
        }

        fn cache(&self) -> PathBuf {
            self.dir.path().join("cache")
        }

        fn call(&self, cmd: &str, nets: &[&str]) -> Result<(), CniError> {
            let delegates: Vec<Value> = nets
                .iter()
                .map(|n| serde_json::json!({"cniVersion": "1.0.0", "name": n, "type": "fake"}))
                .collect();
            let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
                "delegates": delegates, "cacheDir": self.cache()});
            let conf = NetConf::parse(&serde_json::to_vec(&conf).unwrap()).unwrap();
            let env = CniEnv::from_vars([
                ("CNI_COMMAND".to_string(), cmd.to_string()),
                ("CNI_CONTAINERID".into(), "c1".into()),
                ("CNI_NETNS".into(), "/var/run/netns/x".into()),
                ("CNI_IFNAME".into(), "eth0".into()),
                (
                    "CNI_PATH".into(),
                    self.dir.path().join("bin").display().to_string(),
                ),
            ])
            .unwrap();
            let req = Request {
                env: &env,
                conf: &conf,
                stdin: b"",
            };
            match cmd {
                "ADD" => self.meta.add(&req).map(|_| ()),
                "DEL" => self.meta.del(&req),
                "GC" => self.meta.gc(&req),
                _ => unreachable!(),
            }
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.fake.calls.lock().unwrap())
        }

        fn files(&self) -> Vec<String> {
            let mut out = Vec::new();
            for sub in ["plans", "status", "locks"] {
                if let Ok(rd) = std::fs::read_dir(self.cache().join(sub)) {
                    out.extend(
                        rd.flatten()
                            .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy())),
                    );
                }
            }
            out.sort();
            out
        }
    }

    #[test]
    fn failed_rollback_leaves_a_plan_del_can_always_finish() {
        let f = Fixture::new();
        f.fake.del_a_fails.store(true, Ordering::SeqCst);
        let e = f.call("ADD", &["a", "bad", "never"]).unwrap_err();
        assert_eq!(e.code, 120);
        assert!(e.details.contains("rollback failed"), "{e:?}");
        assert_eq!(f.calls(), ["ADD a", "ADD bad", "DEL bad", "DEL a"]);
        // The plan now names what was tried, the failed one marked.
        let Read::Found(plan) = PlanCache::new(&f.cache()).read(&key()) else {
            panic!("no plan kept")
        };
        let kept: Vec<(&str, bool)> = plan
            .attachments
            .iter()
            .map(|a| (a.name.as_str(), a.add_failed))
            .collect();
        assert_eq!(kept, [("a", false), ("bad", true)]);
        // "bad" still fails DEL; once "a" can be deleted, DEL succeeds and
        // leaves nothing.
        assert!(f.call("DEL", &["a", "bad", "never"]).is_err());
        f.calls();
        f.fake.del_a_fails.store(false, Ordering::SeqCst);
        f.call("DEL", &["a", "bad", "never"]).unwrap();
        assert_eq!(f.calls(), ["DEL bad", "DEL a"]);
        assert_eq!(f.files(), Vec::<String>::new());
    }

    #[test]
    fn gc_leaves_an_attachment_whose_add_still_runs() {
        let f = Fixture::new();
        f.call("ADD", &["a", "b"]).unwrap();
        f.calls();
        let key = key();
        // Held as by an ADD in progress (or a killed ADD's delegates).
        let busy = AttachmentLock::try_acquire(&f.cache(), &key)
            .unwrap()
            .unwrap();
        f.call("GC", &["a", "b"]).unwrap();
        assert!(!f.calls().iter().any(|c| c.starts_with("DEL")));
        assert!(PlanCache::new(&f.cache()).exists(&key));
        drop(busy);
        // Free again: not in the (empty) valid list, so GC deletes it.
        f.call("GC", &["a", "b"]).unwrap();
        assert_eq!(f.calls()[..2], ["DEL b", "DEL a"]);
        assert_eq!(f.files(), Vec::<String>::new());
    }

    #[test]
    fn a_second_add_touches_nothing() {
        let f = Fixture::new();
        f.call("ADD", &["a", "b"]).unwrap();
        f.calls();
        let before = f.files();
        let e = f.call("ADD", &["a", "b"]).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("already attached"), "{e:?}");
        assert_eq!(f.calls(), Vec::<String>::new());
        assert_eq!(f.files(), before);
        f.call("DEL", &["a", "b"]).unwrap();
        assert_eq!(f.calls(), ["DEL b", "DEL a"]);
        assert_eq!(f.files(), Vec::<String>::new());
    }
}
