//! Network policy, enforced by plexusd (issue 20): Kubernetes
//! NetworkPolicy on each pod's cluster-network interface and
//! MultiNetworkPolicy on the interfaces of the networks it names, one
//! engine ([`plexus_policy`]) and one set of semantics.
//!
//! ```text
//!  Kubernetes API ─ informers: pods, namespaces, networkpolicies, multi-networkpolicies ─┐
//!  meta plugin ─ policy_attach / policy_detach on plexusd.sock ──────────────────────────┤
//!                                                                                        ▼
//!                       State (what is known) → plexus_policy::compute → one table per
//!                       attached pod interface → data plane entries (owner policy)
//! ```
//!
//! * The rules live in the pod's network namespace (see [`plexus_policy`]'s
//!   docs for why): the data plane's [`crate::dataplane::Entry::Table`]
//!   commits each interface's table there, lists it again at every resync
//!   and re-sends it when it is gone or changed (drift repair), deletes it
//!   when no policy isolates the interface any more or the pod's DEL
//!   comes, and leaves it in place while plexusd stops or restarts.
//! * A pod is enforced once the meta plugin attached it (the ADD tells
//!   plexusd its namespace and interfaces, and waits until its rules are
//!   programmed, so an ADD into an isolated namespace is never open).
//!   Attachments are kept as files under `<run-dir>/policy-pods/`, so a
//!   restarted plexusd enforces the same pods again.
//! * `<run-dir>/policy-enabled` says policy is on: the meta plugin then
//!   fails every ADD with code 11 while plexusd is away.
//! * An object the informer cannot decode is logged and counted by the
//!   informer and treated as absent; a policy rule that is invalid allows
//!   nothing (fail closed), logged with the policy's name and counted.

pub mod state;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use plexus_agent_api::policy::{
    self as api, PolicyAttach, PolicyAttached, PolicyCount, PolicyDetach, PolicyDetached,
    PolicyInterfaceStatus, PolicyShow, PolicyStatus,
};
use plexus_agent_api::Request;
use plexus_netlink::nft::{self, Family};
use plexus_netlink::Netns;
use plexus_policy::{render, Kind, NamespaceInfo, PodInfo, Policy};
use plexus_store::informer::{resources, typed, KubeSource};
use plexus_store::{Event, Informer};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::ctlsock::{Handler, CODE_TRY_AGAIN};
use crate::dataplane::{DataPlane, Key, Owner};
use crate::status::Shared;
pub use state::{CheckedPolicy, Source, State};

/// How long an attach waits for the API to know its pod and for its rules
/// (within the control socket's 10 s per request).
pub const ATTACH_WAIT: Duration = Duration::from_secs(8);
/// How often drop counters are read for the metrics.
const DROPS_EVERY: Duration = Duration::from_secs(10);
/// Upper bounds (seconds) of the programming latency histogram.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The producer's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub run_dir: PathBuf,
    /// The node's addresses are read again this often.
    pub resync_every: Duration,
}

/// What the informers hand the producer.
#[derive(Debug)]
pub enum Input {
    Pod(Event<PodInfo>),
    Namespace(Event<NamespaceInfo>),
    Policy(Event<CheckedPolicy>),
    /// A (re)list of one source was handed out in full.
    Synced(Source),
}

/// The four informers over the Kubernetes API, as one stream of inputs.
/// MultiNetworkPolicies are one resource served in v1beta1 and v1beta2:
/// v1beta1 is watched (every CRD version serves it).
pub fn informers(client: kube::Client, status: &Shared) -> BoxStream<'static, Input> {
    let pods = Informer::new(
        KubeSource::new(client.clone(), &resources::pods()),
        |_, o| typed::<plexus_policy::api::Pod>(o).map(|p| PodInfo::new(&p)),
    );
    let nss = Informer::new(
        KubeSource::new(client.clone(), &resources::namespaces()),
        |_, o| typed::<plexus_policy::api::Namespace>(o).map(|n| NamespaceInfo::new(&n)),
    );
    let nps = Informer::new(
        KubeSource::new(client.clone(), &resources::network_policies()),
        |_, o| {
            typed::<plexus_policy::api::PolicyObject>(o)
                .map(|p| Policy::new(Kind::NetworkPolicy, &p))
        },
    );
    let mnps = Informer::new(
        KubeSource::new(client, &resources::multi_network_policies("v1beta1")),
        |_, o| {
            typed::<plexus_policy::api::PolicyObject>(o)
                .map(|p| Policy::new(Kind::MultiNetworkPolicy, &p))
        },
    );
    status.add_informer("policy pods", pods.stats());
    status.add_informer("policy namespaces", nss.stats());
    status.add_informer("networkpolicies", nps.stats());
    status.add_informer("multi-networkpolicies", mnps.stats());
    fn tag<T: PartialEq + Send + Sync + 'static>(
        i: Informer<T>,
        src: Source,
        f: fn(Event<T>) -> Input,
    ) -> BoxStream<'static, Input> {
        i.into_stream()
            .map(move |ev| match ev {
                Event::Synced => Input::Synced(src),
                ev => f(ev),
            })
            .boxed()
    }
    futures::stream::select_all([
        tag(pods, Source::Pods, Input::Pod),
        tag(nss, Source::Namespaces, Input::Namespace),
        tag(nps, Source::NetworkPolicies, Input::Policy),
        tag(mnps, Source::MultiNetworkPolicies, Input::Policy),
    ])
    .boxed()
}

/// A request of the control socket for the producer.
#[derive(Debug)]
pub enum Cmd {
    Attach(PolicyAttach, oneshot::Sender<Value>),
    Detach(PolicyDetach, oneshot::Sender<Value>),
    Show(PolicyShow, oneshot::Sender<Value>),
}

/// The producer's side of the control socket.
#[derive(Debug, Clone)]
pub struct PolicyHandler {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl PolicyHandler {
    pub fn new() -> (PolicyHandler, mpsc::UnboundedReceiver<Cmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (PolicyHandler { tx }, rx)
    }
}

fn error(msg: impl Into<String>, code: Option<u32>) -> Value {
    let mut v = json!({ "error": msg.into() });
    if let Some(c) = code {
        v["code"] = c.into();
    }
    v
}

#[async_trait::async_trait]
impl Handler for PolicyHandler {
    async fn handle(&self, request: Request) -> Value {
        let (reply, rx) = oneshot::channel();
        let cmd = match request {
            Request::PolicyAttach(a) => Cmd::Attach(a, reply),
            Request::PolicyDetach(d) => Cmd::Detach(d, reply),
            Request::PolicyShow(s) => Cmd::Show(s, reply),
            other => return error(format!("not a policy request: {}", other.command()), None),
        };
        if self.tx.send(cmd).is_err() {
            return error("network policy has stopped", Some(CODE_TRY_AGAIN));
        }
        rx.await
            .unwrap_or_else(|_| error("network policy has stopped", Some(CODE_TRY_AGAIN)))
    }
}

/// The control socket's front: policy requests to the producer (once it
/// runs), the rest to `rest`.
pub struct WithPolicy {
    /// `None` while the producer is not running yet (code 11), or for good
    /// with policy off.
    pub policy: std::sync::RwLock<Option<Arc<dyn Handler>>>,
    pub enabled: bool,
    pub rest: Arc<dyn Handler>,
}

impl WithPolicy {
    pub fn new(enabled: bool, rest: Arc<dyn Handler>) -> WithPolicy {
        WithPolicy {
            policy: Default::default(),
            enabled,
            rest,
        }
    }

    pub fn set(&self, h: Arc<dyn Handler>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }
}

#[async_trait::async_trait]
impl Handler for WithPolicy {
    async fn handle(&self, request: Request) -> Value {
        if !request.is_policy() {
            return self.rest.handle(request).await;
        }
        if !self.enabled {
            // A DEL after policy was turned off has nothing to undo.
            if let Request::PolicyDetach(_) = request {
                return serde_json::to_value(PolicyDetached { removed: 0 }).unwrap_or_default();
            }
            return error("network policy is off on this node (--policy off)", None);
        }
        let h = self
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match h {
            Some(h) => h.handle(request).await,
            None => error(
                "the node agent's network policy is not running yet",
                Some(CODE_TRY_AGAIN),
            ),
        }
    }
}

/// Says on disk whether policy is on (the meta plugin reads it); with
/// policy off, no attachment record stays either.
pub fn mark(run_dir: &Path, on: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let marker = run_dir.join(api::MARKER);
    if on {
        std::fs::create_dir_all(run_dir.join(api::PODS_DIR))
            .with_context(|| format!("create {}", run_dir.join(api::PODS_DIR).display()))?;
        plexus_base::files::write_atomic(
            &marker,
            b"plexusd enforces network policy on this node\n",
            false,
        )
        .with_context(|| format!("write {}", marker.display()))?;
    } else {
        let _ = std::fs::remove_file(&marker);
        let _ = std::fs::remove_dir_all(run_dir.join(api::PODS_DIR));
    }
    Ok(())
}

/// The attachments a previous run recorded whose namespace still exists
/// (a record of a gone one is removed).
pub fn load_records(run_dir: &Path) -> Vec<PolicyAttach> {
    let dir = run_dir.join(api::PODS_DIR);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let rec = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<PolicyAttach>(&b).ok());
        match rec {
            Some(a) if Path::new(&a.netns).exists() => out.push(a),
            Some(_) => {
                tracing::info!(record = %path.display(), "the pod's namespace is gone: record removed");
                let _ = std::fs::remove_file(&path);
            }
            None => {
                tracing::warn!(record = %path.display(), "unreadable attachment record removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}

fn write_record(run_dir: &Path, a: &PolicyAttach) -> anyhow::Result<()> {
    let path = api::attachment_record(run_dir, &a.container_id);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    plexus_base::files::write_atomic(&path, &serde_json::to_vec(a)?, true)?;
    Ok(())
}

/// The node's own addresses (not loopback).
pub async fn node_addrs() -> anyhow::Result<Vec<IpAddr>> {
    let ns = Netns::current()?;
    let nl = plexus_netlink::Netlink::open(&ns).await?;
    let mut v: Vec<IpAddr> = nl
        .addrs(None)
        .await?
        .into_iter()
        .map(|a| a.net.addr())
        .filter(|a| !a.is_loopback())
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// What one interface's table dropped, read in the pod's namespace.
pub async fn read_drops(netns: &Path, table: &str) -> Option<render::Drops> {
    let ns = Netns::open(netns).ok()?;
    let table = table.to_string();
    let got = ns
        .run_async(move || -> plexus_netlink::Result<Vec<nft::CounterInfo>> {
            let sock = nft::Socket::open()?;
            nft::list_counters(&sock, Family::Inet, &table)
        })
        .await;
    match got {
        Ok(Ok(c)) => Some(render::drops(&c)),
        _ => None,
    }
}

/// A request answered once its pod's rules are programmed.
enum Waiting {
    Attach(PolicyAttach),
    /// How many tables the detach removes.
    Detach(usize),
}

struct Pending {
    what: Waiting,
    reply: oneshot::Sender<Value>,
    deadline: Instant,
}

/// The drops of one isolated interface, for the metrics.
type DropRow = (String, String, String, render::Drops);

/// The producer: informers and attachments in, data plane entries out.
pub struct Producer {
    pub st: State,
    settings: Settings,
    dp: DataPlane,
    status: Shared,
    pending: Vec<Pending>,
    /// Keys whose last programming failed.
    failing: BTreeSet<Key>,
    /// Since when something is waiting to be programmed.
    dirty: Option<Instant>,
    latency: [u64; LATENCY_BUCKETS.len() + 1],
    latency_sum: f64,
    drops: Vec<DropRow>,
    /// Whether addresses are read from the kernel (not in unit tests).
    read_kernel: bool,
    /// The tables of attached interfaces no policy isolates have been
    /// claimed (once, after the first complete programming round, so a
    /// previous run's table of such an interface goes, and none that is
    /// still wanted is ever gone meanwhile).
    stale_claimed: bool,
}

impl Producer {
    pub fn new(settings: Settings, dp: DataPlane, status: Shared) -> Producer {
        Producer {
            st: State::new(&settings.node),
            settings,
            dp,
            status,
            pending: Vec::new(),
            failing: BTreeSet::new(),
            dirty: None,
            latency: [0; LATENCY_BUCKETS.len() + 1],
            latency_sum: 0.0,
            drops: Vec::new(),
            read_kernel: true,
            stale_claimed: false,
        }
    }

    /// For unit tests: the node's addresses are given, not read.
    pub fn with_node_addrs(mut self, addrs: Vec<IpAddr>) -> Producer {
        self.st.node_addrs = addrs;
        self.read_kernel = false;
        self
    }

    /// Runs until `inputs` and `cmds` end (never, in plexusd).
    pub async fn run(
        mut self,
        mut inputs: BoxStream<'static, Input>,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
    ) {
        for a in load_records(&self.settings.run_dir) {
            tracing::info!(container = %a.container_id, pod = %format!("{}/{}", a.pod.namespace, a.pod.name), "attachment of a previous run enforced again");
            self.st.attached.insert(a.container_id.clone(), a);
        }
        if self.read_kernel {
            self.refresh_addrs().await;
        }
        let mut tick = tokio::time::interval(self.settings.resync_every);
        tick.tick().await;
        let mut drops_tick = tokio::time::interval(DROPS_EVERY);
        let (drops_tx, mut drops_rx) = mpsc::unbounded_channel::<Vec<DropRow>>();
        let (mut inputs_done, mut cmds_done) = (false, false);
        loop {
            let next_deadline = self.pending.iter().map(|p| p.deadline).min();
            tokio::select! {
                biased;
                i = inputs.next(), if !inputs_done => match i {
                    Some(i) => self.input(i),
                    None => inputs_done = true,
                },
                c = cmds.recv(), if !cmds_done => match c {
                    Some(c) => self.command(c),
                    None => cmds_done = true,
                },
                _ = tick.tick() => {
                    if self.read_kernel {
                        self.refresh_addrs().await;
                        if self.st.attached.values().any(|a| !Path::new(&a.netns).exists()) {
                            self.touch();
                        }
                    }
                }
                Some(d) = drops_rx.recv() => {
                    self.drops = d;
                    self.publish();
                }
                _ = drops_tick.tick() => {
                    let rows = self.isolated_tables();
                    let tx = drops_tx.clone();
                    tokio::spawn(async move {
                        let mut out = Vec::new();
                        for (ns, pod, ifname, netns, table) in rows {
                            if let Some(d) = read_drops(&netns, &table).await {
                                out.push((ns, pod, ifname, d));
                            }
                        }
                        let _ = tx.send(out);
                    }.in_current_span());
                }
                _ = sleep_until(next_deadline) => self.expire(),
                _ = std::future::ready(()), if self.dirty.is_some() => {
                    // Everything the informers already hold goes into this
                    // round (a relist, a mass deletion): one computation.
                    use futures::FutureExt;
                    while let Some(Some(i)) = inputs.next().now_or_never() {
                        self.input(i);
                    }
                    self.program().await
                }
                else => return,
            }
            if inputs_done && cmds_done && self.dirty.is_none() && self.pending.is_empty() {
                return;
            }
        }
    }

    async fn refresh_addrs(&mut self) {
        match node_addrs().await {
            Ok(a) if a != self.st.node_addrs => {
                self.st.node_addrs = a;
                self.touch();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read the node's addresses"),
        }
    }

    fn touch(&mut self) {
        self.dirty.get_or_insert_with(Instant::now);
    }

    /// One informer event.
    pub fn input(&mut self, i: Input) {
        let changed = match i {
            Input::Pod(ev) => self.st.pod_event(ev),
            Input::Namespace(ev) => self.st.namespace_event(ev),
            Input::Policy(ev) => self.st.policy_event(ev),
            Input::Synced(src) => {
                let first = self.st.synced.insert(src);
                if first && self.st.all_synced() {
                    tracing::info!("network policy: pods, namespaces and policies listed");
                }
                first
            }
        };
        if changed {
            self.touch();
        }
    }

    /// One request of the control socket.
    pub fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Attach(a, reply) => {
                if a.netns.is_empty() || !Path::new(&a.netns).is_absolute() {
                    let _ = reply.send(error(
                        format!("policy_attach: netns {:?} is not an absolute path", a.netns),
                        None,
                    ));
                    return;
                }
                if self.read_kernel {
                    if let Err(e) = write_record(&self.settings.run_dir, &a) {
                        let _ = reply.send(error(
                            format!("policy_attach: cannot record the attachment: {e:#}"),
                            None,
                        ));
                        return;
                    }
                }
                self.st.attached.insert(a.container_id.clone(), a.clone());
                self.pending.push(Pending {
                    what: Waiting::Attach(a),
                    reply,
                    deadline: Instant::now() + ATTACH_WAIT,
                });
                self.touch();
            }
            Cmd::Detach(d, reply) => {
                let _ = std::fs::remove_file(api::attachment_record(
                    &self.settings.run_dir,
                    &d.container_id,
                ));
                let removed = self.st.keys_of(&d.container_id).len();
                self.st.attached.remove(&d.container_id);
                // An ADD still waiting for its rules has lost its pod.
                self.pending.retain(
                    |p| !matches!(&p.what, Waiting::Attach(a) if a.container_id == d.container_id),
                );
                self.touch();
                // Answered after the next programming round, so the
                // tables are gone when the DEL returns.
                self.pending.push(Pending {
                    what: Waiting::Detach(removed),
                    reply,
                    deadline: Instant::now() + ATTACH_WAIT,
                });
            }
            Cmd::Show(s, reply) => {
                let st = self.show(&s);
                let rows: Vec<(usize, PathBuf, String)> = st
                    .interfaces
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| i.ingress_isolated || i.egress_isolated)
                    .filter_map(|(n, i)| {
                        let p = self.st.interfaces.values().find(|p| {
                            p.rules.pod.namespace == i.namespace
                                && p.rules.pod.name == i.pod
                                && p.rules.ifname == i.interface
                        })?;
                        Some((n, p.netns.clone(), render::table_name(&i.interface)))
                    })
                    .collect();
                tokio::spawn(
                    async move {
                        let mut st = st;
                        for (n, netns, table) in rows {
                            if let Some(d) = read_drops(&netns, &table).await {
                                let i = &mut st.interfaces[n];
                                i.ingress_dropped = count(d.ingress);
                                i.egress_dropped = count(d.egress);
                            }
                        }
                        let _ = reply.send(serde_json::to_value(st).unwrap_or_default());
                    }
                    .in_current_span(),
                );
            }
        }
    }

    /// Computes and hands the changes to the data plane; answers the
    /// requests that were waiting for it.
    pub async fn program(&mut self) {
        let Some(since) = self.dirty.take() else {
            return;
        };
        if self.read_kernel {
            self.prune_gone();
        }
        let (put, remove) = self.st.recompute();
        if !put.is_empty() || !remove.is_empty() {
            let keys: Vec<Key> = put
                .iter()
                .map(|e| e.key())
                .chain(remove.iter().cloned())
                .collect();
            let (n_put, n_remove) = (put.len(), remove.len());
            let out = self.dp.update(Owner::Policy, put, remove).await;
            for k in &keys {
                self.failing.remove(k);
            }
            let missing: Vec<Key> = out.missing().into_iter().cloned().collect();
            if !missing.is_empty() {
                self.status.programming_failed(missing.len());
                tracing::warn!(
                    failed = missing.len(),
                    "policy tables not programmed (the data plane retries)"
                );
            }
            self.failing.extend(missing);
            self.observe(since.elapsed());
            tracing::debug!(put = n_put, removed = n_remove, took = ?since.elapsed(), "policy programmed");
        }
        if !self.stale_claimed && self.st.all_synced() {
            self.stale_claimed = true;
            let open: Vec<(PathBuf, String)> = self
                .st
                .interfaces
                .values()
                .filter(|p| !p.rules.is_isolated())
                .map(|p| (p.netns.clone(), render::table_name(&p.rules.ifname)))
                .collect();
            if !open.is_empty() {
                self.dp.claim_tables(open);
            }
        }
        self.answer_ready();
        self.publish();
    }

    /// Attachments whose namespace is gone (a pod whose DEL never came):
    /// its tables went with it; the record goes too.
    fn prune_gone(&mut self) {
        let gone: Vec<String> = self
            .st
            .attached
            .values()
            .filter(|a| !Path::new(&a.netns).exists())
            .map(|a| a.container_id.clone())
            .collect();
        for c in gone {
            tracing::info!(container = %c, "the pod's namespace is gone: its attachment is dropped");
            self.st.attached.remove(&c);
            let _ = std::fs::remove_file(api::attachment_record(&self.settings.run_dir, &c));
        }
    }

    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        self.latency_sum += secs;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.latency[i] += 1;
            }
        }
        self.latency[LATENCY_BUCKETS.len()] += 1;
    }

    /// Whether an attach can be answered: everything listed, its pod
    /// known to the API, its tables (if any) in the kernel.
    fn ready(&self, a: &PolicyAttach) -> Option<Result<Vec<String>, String>> {
        if !self.st.all_synced() || self.st.api_pod(a).is_none() || self.dirty.is_some() {
            return None;
        }
        let keys = self.st.keys_of(&a.container_id);
        if keys.iter().any(|k| self.failing.contains(k)) {
            return Some(Err(format!(
                "the pod's policy tables could not be programmed ({} of them)",
                keys.iter().filter(|k| self.failing.contains(*k)).count()
            )));
        }
        let mut isolated: Vec<String> = self
            .st
            .interfaces
            .values()
            .filter(|p| p.container_id == a.container_id && p.rules.is_isolated())
            .map(|p| p.rules.ifname.clone())
            .collect();
        isolated.sort();
        Some(Ok(isolated))
    }

    fn answer_ready(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            match &p.what {
                Waiting::Detach(removed) => {
                    let v = serde_json::to_value(PolicyDetached { removed: *removed });
                    let _ = p.reply.send(v.unwrap_or_default());
                }
                Waiting::Attach(a) => match self.ready(a) {
                    None => self.pending.push(p),
                    Some(Ok(isolated)) => {
                        let v = serde_json::to_value(PolicyAttached { isolated });
                        let _ = p.reply.send(v.unwrap_or_default());
                    }
                    Some(Err(why)) => {
                        let _ = p.reply.send(error(why, Some(CODE_TRY_AGAIN)));
                    }
                },
            }
        }
    }

    /// Requests whose time is up: an attach whose pod the API does not
    /// know (yet) is refused with code 11 (the runtime tries again).
    fn expire(&mut self) {
        let now = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if p.deadline > now {
                self.pending.push(p);
                continue;
            }
            let why = match &p.what {
                Waiting::Attach(a) if !self.st.all_synced() => format!(
                    "pod {}/{}: the node agent has not listed the API's pods and policies yet",
                    a.pod.namespace, a.pod.name
                ),
                Waiting::Attach(a) if self.st.api_pod(a).is_none() => format!(
                    "pod {}/{} (uid {:?}) is not known to the API (yet): its policy cannot be decided",
                    a.pod.namespace, a.pod.name, a.pod.uid
                ),
                _ => "the pod's policy tables are not programmed yet".to_string(),
            };
            tracing::warn!(error = %why, "policy request not answered in time");
            let _ = p.reply.send(error(why, Some(CODE_TRY_AGAIN)));
        }
    }

    /// `policy show`, without the drop counters (read by the caller).
    pub fn show(&self, s: &PolicyShow) -> PolicyStatus {
        let mut interfaces: Vec<PolicyInterfaceStatus> = self
            .st
            .interfaces
            .iter()
            .filter(|(_, p)| {
                s.pod.as_deref().is_none_or(|want| {
                    want == format!("{}/{}", p.rules.pod.namespace, p.rules.pod.name)
                })
            })
            .map(|(k, p)| PolicyInterfaceStatus {
                namespace: p.rules.pod.namespace.clone(),
                pod: p.rules.pod.name.clone(),
                interface: p.rules.ifname.clone(),
                network: p.rules.network.to_string(),
                ingress_isolated: p.rules.ingress.isolated,
                egress_isolated: p.rules.egress.isolated,
                policies: p.rules.policies.iter().map(|id| id.to_string()).collect(),
                ingress_dropped: PolicyCount::default(),
                egress_dropped: PolicyCount::default(),
                programmed: !self.failing.contains(k),
            })
            .collect();
        interfaces.sort_by(|a, b| {
            (&a.namespace, &a.pod, &a.interface).cmp(&(&b.namespace, &b.pod, &b.interface))
        });
        PolicyStatus {
            policies: self.st.policies.len(),
            synced: self.st.all_synced(),
            interfaces,
            problems: self.st.problems(),
        }
    }

    /// (namespace, pod, interface, netns, table) of every isolated interface.
    fn isolated_tables(&self) -> Vec<(String, String, String, PathBuf, String)> {
        self.st
            .interfaces
            .values()
            .filter(|p| p.rules.is_isolated())
            .map(|p| {
                (
                    p.rules.pod.namespace.clone(),
                    p.rules.pod.name.clone(),
                    p.rules.ifname.clone(),
                    p.netns.clone(),
                    render::table_name(&p.rules.ifname),
                )
            })
            .collect()
    }

    /// The policy metrics, into plexusd's /metrics.
    pub fn metrics(&self) -> String {
        let mut o = String::new();
        let head = |o: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(o, "# HELP plexusd_policy_{name} {help}");
            let _ = writeln!(o, "# TYPE plexusd_policy_{name} {kind}");
        };
        head(&mut o, "policies", "Policies known, by kind.", "gauge");
        for kind in [Kind::NetworkPolicy, Kind::MultiNetworkPolicy] {
            let n = self.st.policies.keys().filter(|id| id.kind == kind).count();
            let _ = writeln!(o, "plexusd_policy_policies{{kind=\"{kind}\"}} {n}");
        }
        let selected: BTreeSet<&str> = self
            .st
            .interfaces
            .values()
            .filter(|p| !p.rules.policies.is_empty())
            .map(|p| p.container_id.as_str())
            .collect();
        for (name, help, v) in [
            (
                "attached_pods",
                "Pods of this node the meta plugin attached.",
                self.st.attached.len(),
            ),
            (
                "selected_pods",
                "Pods of this node some policy selects.",
                selected.len(),
            ),
            (
                "isolated_interfaces",
                "Pod interfaces of this node with a policy table.",
                self.st
                    .interfaces
                    .values()
                    .filter(|p| p.rules.is_isolated())
                    .count(),
            ),
            (
                "failing_interfaces",
                "Policy tables whose programming failed (retried).",
                self.failing.len(),
            ),
        ] {
            head(&mut o, name, help, "gauge");
            let _ = writeln!(o, "plexusd_policy_{name} {v}");
        }
        head(
            &mut o,
            "problems_total",
            "Policy rules refused as invalid (fail closed), each policy version once.",
            "counter",
        );
        let _ = writeln!(
            o,
            "plexusd_policy_problems_total {}",
            self.st.problems_total
        );
        head(
            &mut o,
            "programming_seconds",
            "From a change (API object, attach, detach) to its tables in the kernel.",
            "histogram",
        );
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexusd_policy_programming_seconds_bucket{{le=\"{le}\"}} {}",
                self.latency[i]
            );
        }
        let n = self.latency[LATENCY_BUCKETS.len()];
        let _ = writeln!(
            o,
            "plexusd_policy_programming_seconds_bucket{{le=\"+Inf\"}} {n}"
        );
        let _ = writeln!(
            o,
            "plexusd_policy_programming_seconds_sum {}",
            self.latency_sum
        );
        let _ = writeln!(o, "plexusd_policy_programming_seconds_count {n}");
        for (what, pick) in [
            (
                "packets",
                (|c: &render::Count| c.packets) as fn(&render::Count) -> u64,
            ),
            ("bytes", |c: &render::Count| c.bytes),
        ] {
            let name = format!("dropped_{what}_total");
            head(
                &mut o,
                &name,
                &format!(
                    "{what} dropped by policy, per pod interface and direction (read every 10 s)."
                ),
                "counter",
            );
            for (ns, pod, ifname, d) in &self.drops {
                for (dir, c) in [("ingress", &d.ingress), ("egress", &d.egress)] {
                    let _ = writeln!(
                        o,
                        "plexusd_policy_{name}{{namespace=\"{ns}\",pod=\"{pod}\",interface=\"{ifname}\",direction=\"{dir}\"}} {}",
                        pick(c)
                    );
                }
            }
        }
        o
    }

    fn publish(&self) {
        self.status.set_extra_metrics("policy", self.metrics());
    }
}

fn count(c: render::Count) -> PolicyCount {
    PolicyCount {
        packets: c.packets,
        bytes: c.bytes,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// `--policy auto`: on when an API is configured (`--kubeconfig`, or the
/// in-cluster credentials), whatever the store.
pub fn auto_enabled(kubeconfig: Option<&Path>) -> bool {
    kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Runs network policy: connects to the API (retried until it answers),
/// then the informers and the producer over `dp`, whose handler goes into
/// `front`. Never returns.
pub async fn serve(
    settings: Settings,
    opts: plexus_store::StoreOptions,
    dp: DataPlane,
    status: Shared,
    front: Arc<WithPolicy>,
) {
    let mut logged = false;
    let client = loop {
        match plexus_store::kubeclient::connect(&opts).await {
            Ok(c) => break c,
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "network policy: cannot reach the Kubernetes API (trying again every 5 s); ADDs wait");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let (h, rx) = PolicyHandler::new();
    front.set(Arc::new(h));
    let inputs = informers(client, &status);
    tracing::info!("network policy enforced (NetworkPolicy on the cluster network, MultiNetworkPolicy on the others)");
    Producer::new(settings, dp, status).run(inputs, rx).await;
}

#[cfg(test)]
mod tests;
