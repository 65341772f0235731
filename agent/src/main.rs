//! plexusd: the Plexus node agent. One process per node: it serves the
//! overlay (a subnet lease per node), the routed network (blocks and BGP)
//! and cluster IPAM, and is the one writer of the node's kernel state (the
//! data plane). See docs/plexusd.md for the flags and files.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use plexus_netlink::Netns;
use plexus_store::{open_kv, KubeNodes, StoreError, StoreOptions};
use plexus_subnet::registry::{lease_registry_over, LeaseRegistry};
use plexusd::dataplane::DataPlane;
use plexusd::overlay::{self, Settings};
use plexusd::status::Shared;
use plexusd::underlay::{KernelView, NetlinkView, UnderlaySelect};
use plexusd::{ctlsock, http, netconf, nodeclean, routed, runfiles};
use tracing::Instrument;

#[derive(Parser, Debug)]
#[command(
    name = "plexusd",
    version,
    about = "Plexus node agent (flannel-compatible overlay, or the calico-style routed network)"
)]
struct Args {
    /// This node's name (the Node object in `kubernetes` mode).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The cluster store: `etcd://HOST:PORT[,HOST:PORT...]`, `kubernetes`,
    /// or `file:PATH` (a single node without a cluster).
    #[arg(long, default_value = "file:/var/lib/plexus/store")]
    store: String,
    /// The address other nodes reach this node at (default: the address of
    /// --iface, else of the interface holding the default route).
    #[arg(long)]
    public_ip: Option<Ipv4Addr>,
    /// The interface the overlay runs over.
    #[arg(long)]
    iface: Option<String>,
    /// The IPv6 address other nodes reach this node at (IPv6Network).
    #[arg(long)]
    public_ipv6: Option<Ipv6Addr>,
    /// The interface for IPv6 (default: --iface, else the IPv6 default route's).
    #[arg(long)]
    iface_v6: Option<String>,
    /// Lease file, readiness file, control socket.
    #[arg(long, default_value = "/run/plexus")]
    run_dir: PathBuf,
    /// Key prefix of the network in etcd (flannel's).
    #[arg(long, default_value = "/coreos.com/network")]
    etcd_prefix: String,
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    #[arg(long)]
    etcd_certfile: Option<PathBuf>,
    #[arg(long)]
    etcd_keyfile: Option<PathBuf>,
    #[arg(long)]
    etcd_username: Option<String>,
    #[arg(long, env = "ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
    /// kubeconfig for `--store kubernetes` (default: in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The network config as a file (flannel's net-conf.json): required with
    /// `--store kubernetes`; otherwise used when `<prefix>/config` is absent.
    #[arg(long)]
    net_config: Option<PathBuf>,
    /// The routed network's IP pools, a JSON array of plexus-ipam pool
    /// records (deploy/'s ConfigMap key pools.json): added to the store
    /// when absent, their settings updated when different; never removed.
    /// `[]` declares none (the overlay runs unless the store holds a pool).
    #[arg(long)]
    pools_file: Option<PathBuf>,
    /// The routed network's BGP settings, `{"asn": N, "nodeToNodeMesh": B}`
    /// (the ConfigMap key bgp.json): set in the store when absent or different.
    #[arg(long)]
    bgp_file: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Masquerade traffic from the pod network leaving the cluster network
    /// (flannel's --ip-masq).
    #[arg(long)]
    ip_masq: bool,
    /// Seconds between lease renewals (the lease lives 24 h).
    #[arg(long, default_value_t = 3600)]
    renew_interval: u64,
    /// Seconds between full comparisons of the kernel with the store.
    #[arg(long, default_value_t = 60)]
    resync_interval: u64,
    /// Seconds start-up keeps retrying an unreachable store before failing.
    #[arg(long, default_value_t = 5)]
    store_wait: u64,
    /// Routed network: seconds without a store event after which the store
    /// is read again anyway (peers, nodes, this node's blocks); a watch
    /// brings changes at once, this is the fallback for a missed one.
    #[arg(long, default_value_t = 60)]
    routed_poll_interval: u64,
    /// Routed network, after a restart: seconds to wait for every peer's
    /// End-of-RIB before removing the previous run's unconfirmed routes.
    #[arg(long, default_value_t = 120)]
    routed_sync_wait: u64,
    /// When a Kubernetes Node is deleted, free its routed blocks and remove
    /// its node record (so every agent drops its BGP session), and free its
    /// cluster-IPAM blocks and addresses.
    /// `auto`: with `--store kubernetes`; `on` needs Node list/watch rights
    /// with any store (--kubeconfig, else the in-cluster config).
    #[arg(long, value_enum, default_value_t = NodeCleanup::Auto)]
    node_cleanup: NodeCleanup,
    /// Routed network: where BGP listens (default: the public address;
    /// never every address, which would include the pods' side).
    #[arg(long, value_delimiter = ',')]
    bgp_listen: Vec<std::net::IpAddr>,
    /// Network policy (NetworkPolicy, MultiNetworkPolicy) from the
    /// Kubernetes API: `auto` is on when an API is configured
    /// (--kubeconfig, or in-cluster credentials), whatever --store is.
    #[arg(long, value_enum, default_value_t = PolicyMode::Auto)]
    policy: PolicyMode,
    #[command(flatten)]
    cluster_ipam: plexusd::clusteripam::Opts,
    /// Log level or `target=level,...` directives (PLEXUS_LOG wins).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PolicyMode {
    Auto,
    On,
    Off,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum NodeCleanup {
    Auto,
    On,
    Off,
}

fn main() -> ExitCode {
    let args = Args::parse();
    plexus_base::logging::init(Some(&args.log_level), None);
    // One thread: the agent waits on the store and the kernel, it does not
    // compute; a single thread keeps RSS and idle CPU low.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexusd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Every log line of the agent carries its node; each part adds its
    // own span below (the overlay, the routed network, each request, each
    // BGP peer), and spawned tasks keep the span they were started in.
    let span = tracing::info_span!("plexusd", node = %args.node_name);
    match rt.block_on(run(args).instrument(span)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("plexusd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.run_dir)
        .with_context(|| format!("create run directory {}", args.run_dir.display()))?;
    // A ready file left by a killed agent must not claim readiness.
    runfiles::clear_ready(&args.run_dir);
    let status = Shared::default();
    status.update(|s| {
        s.node_name = args.node_name.clone();
        s.network = args.etcd_prefix.clone();
    });

    let sock_path = args.run_dir.join(runfiles::SOCKET);
    let ctl = ctlsock::bind(&sock_path)?;
    let handlers = ctlsock::Handlers::default();
    let _ctl = AbortOnDrop(tokio::spawn(
        ctlsock::serve(ctl, status.clone(), handlers.clone()).in_current_span(),
    ));
    let _http = match args.metrics_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on --metrics-addr {addr}"))?;
            Some(AbortOnDrop(tokio::spawn(
                http::serve(l, status.clone()).in_current_span(),
            )))
        }
        None => None,
    };

    let signal = shutdown_signal();
    let agent = agent(&args, &status, &handlers);
    let result = tokio::select! {
        r = agent => r,
        s = signal => {
            let s = s?;
            tracing::info!(signal = s, "shutting down; the data plane stays in place");
            Ok(())
        }
    };
    runfiles::clear_ready(&args.run_dir);
    ctlsock::remove(&sock_path);
    result
}

async fn agent(args: &Args, status: &Shared, handlers: &ctlsock::Handlers) -> anyhow::Result<()> {
    let opts = StoreOptions {
        etcd_prefix: args.etcd_prefix.clone(),
        etcd_cafile: args.etcd_cafile.clone(),
        etcd_certfile: args.etcd_certfile.clone(),
        etcd_keyfile: args.etcd_keyfile.clone(),
        etcd_username: args.etcd_username.clone(),
        etcd_password: args.etcd_password.clone(),
        kubeconfig: args.kubeconfig.clone(),
        node_name: args.node_name.clone(),
        net_config: args.net_config.clone(),
    };
    let files = netconf::Files {
        pools: args.pools_file.clone(),
        bgp: args.bgp_file.clone(),
    };
    // One handle on the store for both networks: a `file:` store can be
    // opened only once per process.
    let kv = open_kv(&args.store, &opts)
        .await
        .inspect_err(|_| status.store_error())
        .with_context(|| format!("open the store {}", args.store))?;
    // Cluster IPAM (plexus-cluster-ipam) is served whatever else the node
    // runs, from the moment the store is open; the network models answer
    // the rest of the socket's requests once they run.
    let routed_slot = ctlsock::Handlers::default();
    let front = std::sync::Arc::new(plexusd::clusteripam::WithClusterIpam::new(
        routed_slot.clone(),
    ));
    let policy_on = match args.policy {
        PolicyMode::On => true,
        PolicyMode::Off => false,
        PolicyMode::Auto => plexusd::policy::auto_enabled(args.kubeconfig.as_deref()),
    };
    if policy_on && !args.ip_masq {
        tracing::warn!("network policy is on without --ip-masq: the overlay's CNI bridge then masquerades pod traffic to other nodes, and policies see the node's address instead of the pod's (run with --ip-masq, as flanneld's rules exempt the cluster network)");
    }
    // Before anything else: from now on the meta plugin's ADDs wait for us.
    plexusd::policy::mark(&args.run_dir, policy_on)?;
    let policy_front =
        std::sync::Arc::new(plexusd::policy::WithPolicy::new(policy_on, front.clone()));
    *handlers.lock().unwrap_or_else(|p| p.into_inner()) = Some(policy_front.clone());
    let _cluster_ipam = AbortOnDrop(tokio::spawn(
        plexusd::clusteripam::serve(
            kv.clone(),
            args.node_name.clone(),
            front,
            status.clone(),
            args.cluster_ipam
                .duties(&args.store, &opts, node_cleanup(args)),
        )
        .instrument(tracing::info_span!("cluster-ipam")),
    ));
    let handlers = &routed_slot;

    // A store without any network config (not seeded yet, or wiped) is
    // waited for: unready, nothing created or removed (cluster IPAM is
    // served meanwhile). Only the embedded file store, which no one else
    // can write while we hold it, is final.
    let mut waited = false;
    let (routed, overlay) = loop {
        let routed = routed_cluster(args, kv.clone(), &files, status).await?;
        let overlay = match &routed {
            Some(cluster) => overlay_beside_routed(args, &opts, cluster, status).await?,
            None => overlay_alone(args, kv.clone(), &opts, status).await?,
        };
        if routed.is_some() || overlay.is_some() {
            break (routed, overlay);
        }
        if args.store.starts_with("file:") {
            anyhow::bail!(
                "no network config in {} (neither {}/config, --net-config nor a routed pool)",
                args.store,
                args.etcd_prefix
            );
        }
        if !waited {
            tracing::warn!(
                store = %args.store,
                "the store holds no network config (neither {}/config nor a routed pool): waiting for one",
                args.etcd_prefix
            );
            status.set_waiting(
                &args.run_dir,
                "store",
                Some("the store holds no network config"),
            );
            waited = true;
        }
        tokio::time::sleep(STORE_CONFIG_POLL).await;
    };
    if waited {
        tracing::info!("the store holds a network config now");
        status.set_waiting(&args.run_dir, "store", None);
    }
    // The one writer of the kernel, for every network this node serves.
    let ns = Netns::current().context("open this process's network namespace")?;
    let dp = DataPlane::open(
        ns,
        plexusd::dataplane::Settings {
            resync_every: Duration::from_secs(args.resync_interval.max(1)),
            ..Default::default()
        },
    )
    .await
    .context("start the data plane")?;
    let _dp_metrics = AbortOnDrop(tokio::spawn(
        publish_dataplane(dp.clone(), status.clone()).in_current_span(),
    ));
    let _policy = policy_on.then(|| {
        let settings = plexusd::policy::Settings {
            node: args.node_name.clone(),
            run_dir: args.run_dir.clone(),
            resync_every: Duration::from_secs(args.resync_interval.max(1)),
        };
        let task = plexusd::policy::serve(
            settings,
            opts.clone(),
            dp.clone(),
            status.clone(),
            policy_front,
        );
        AbortOnDrop(tokio::spawn(task.instrument(tracing::info_span!("policy"))))
    });
    match (routed, overlay) {
        (None, Some(reg)) => run_overlay(args, reg.as_ref(), &dp, status).await,
        (Some(cluster), None) => run_routed(args, &opts, cluster, &[], &dp, status, handlers).await,
        (Some(cluster), Some(reg)) => {
            tracing::info!(
                "the store holds both networks: serving the overlay and the routed network"
            );
            // No external router may announce into the overlay's networks.
            let nets: Vec<ipnet::IpNet> = match reg.network_config().await {
                Ok(cfg) => cfg
                    .network
                    .map(ipnet::IpNet::V4)
                    .into_iter()
                    .chain(cfg.ipv6_network.map(ipnet::IpNet::V6))
                    .collect(),
                Err(_) => Vec::new(),
            };
            status.expect_networks(2);
            tokio::try_join!(
                run_overlay(args, reg.as_ref(), &dp, status),
                run_routed(args, &opts, cluster, &nets, &dp, status, handlers),
            )
            .map(|_| ())
        }
        (None, None) => unreachable!("the loop above waits for one"),
    }
}

/// How often a store without network config is looked at again.
const STORE_CONFIG_POLL: Duration = Duration::from_secs(2);

/// The overlay's registry when the store (or --net-config) holds flannel's
/// network config; `None` when it holds none.
async fn overlay_alone(
    args: &Args,
    kv: std::sync::Arc<dyn plexus_store::Kv>,
    opts: &StoreOptions,
    status: &Shared,
) -> anyhow::Result<Option<Box<dyn LeaseRegistry>>> {
    // Kubernetes without --net-config: no overlay (a node serving only
    // cluster IPAM, or waiting for a routed pool).
    if args.store == "kubernetes" && args.net_config.is_none() {
        return Ok(None);
    }
    let reg = lease_registry_over(&args.store, kv, opts)
        .await
        .inspect_err(|_| status.store_error())
        .with_context(|| format!("open the store {}", args.store))?;
    match reg.network_config().await {
        Ok(_) => Ok(Some(reg)),
        Err(StoreError::NoConfig(_)) => Ok(None),
        // Unreachable now: the overlay's start-up retries and says so.
        Err(StoreError::Unavailable(_)) => Ok(Some(reg)),
        Err(e) => {
            status.store_error();
            Err(e)
                .with_context(|| format!("read the network config at {}/config", args.etcd_prefix))
        }
    }
}

/// The overlay's registry when the store also holds flannel's network
/// config, so this node serves both (pods' eth0 on the overlay, net1 on the
/// routed network). In Kubernetes mode the overlay's config is a file
/// (`--net-config`); without one the node is routed only.
async fn overlay_beside_routed(
    args: &Args,
    opts: &StoreOptions,
    cluster: &plexus_ipam::Cluster,
    status: &Shared,
) -> anyhow::Result<Option<Box<dyn LeaseRegistry>>> {
    if args.store == "kubernetes" && args.net_config.is_none() {
        return Ok(None);
    }
    let reg = lease_registry_over(&args.store, cluster.kv().clone(), opts)
        .await
        .inspect_err(|_| status.store_error())
        .with_context(|| format!("open the store {}", args.store))?;
    match reg.network_config().await {
        Ok(_) => Ok(Some(reg)),
        Err(StoreError::NoConfig(_)) => Ok(None),
        Err(e) => {
            status.store_error();
            Err(e).with_context(|| format!("read the overlay's network config in {}", args.store))
        }
    }
}

/// The data plane's figures into the status (metrics) every few seconds.
async fn publish_dataplane(dp: DataPlane, status: Shared) {
    loop {
        status.set_dataplane(dp.stats());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn run_overlay(
    args: &Args,
    reg: &dyn LeaseRegistry,
    dp: &DataPlane,
    status: &Shared,
) -> anyhow::Result<()> {
    let ns = Netns::current().context("open this process's network namespace")?;
    let mut view = NetlinkView::open(&ns).await?;
    let settings = Settings {
        network: args.etcd_prefix.clone(),
        select: UnderlaySelect {
            public_ip: args.public_ip,
            iface: args.iface.clone(),
            public_ipv6: args.public_ipv6,
            iface_v6: args.iface_v6.clone(),
            ..Default::default()
        },
        ip_masq: args.ip_masq,
        renew_every: Duration::from_secs(args.renew_interval.max(1)),
        resync_every: Duration::from_secs(args.resync_interval.max(1)),
        store_wait: Duration::from_secs(args.store_wait),
        ..Settings::new(&args.node_name, &args.run_dir)
    };
    let span = tracing::info_span!("overlay", prefix = %args.etcd_prefix);
    async {
        let mut ov = overlay::start(&settings, reg, dp, &mut view, status).await?;
        ov.run(reg, dp).await
    }
    .instrument(span)
    .await
}

/// The routed network over `kv`, when the store holds one (a pool).
/// With `files`, first applies what they declare.
async fn routed_cluster(
    args: &Args,
    kv: std::sync::Arc<dyn plexus_store::Kv>,
    files: &netconf::Files,
    status: &Shared,
) -> anyhow::Result<Option<plexus_ipam::Cluster>> {
    let cluster = plexus_ipam::Cluster::new(kv, plexus_ipam::Layout::default());
    if files.any() {
        netconf::apply_until_valid(&cluster, files, status).await?;
    }
    match routed::configured(&cluster).await {
        Ok(yes) => Ok(yes.then_some(cluster)),
        // Kubernetes without the PlexusKey CRD: no routed network, the
        // overlay (on Node objects) needs none.
        Err(e) if args.store == "kubernetes" && no_keys_resource(&e) => {
            tracing::info!(error = %format!("{e:#}"), "no routed network");
            Ok(None)
        }
        Err(e) => {
            status.store_error();
            Err(e)
        }
    }
}

/// The error says the store has no place for keys (a CRD not installed).
fn no_keys_resource(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<plexus_ipam::IpamError>(),
            Some(plexus_ipam::IpamError::Store(
                plexus_store::StoreError::NoConfig(_)
            ))
        )
    })
}

async fn run_routed(
    args: &Args,
    opts: &StoreOptions,
    cluster: plexus_ipam::Cluster,
    cluster_networks: &[ipnet::IpNet],
    dp: &DataPlane,
    status: &Shared,
    handlers: &ctlsock::Handlers,
) -> anyhow::Result<()> {
    let public_ip = match args.public_ip {
        Some(ip) => ip,
        None => {
            let ns = Netns::current().context("open this process's network namespace")?;
            let mut view = NetlinkView::open(&ns).await?;
            let sel = UnderlaySelect {
                iface: args.iface.clone(),
                want_v4: true,
                ..Default::default()
            };
            view.underlay(&sel)
                .await?
                .v4
                .map(|(ip, _)| ip)
                .context("the routed network needs an IPv4 address (--public-ip)")?
        }
    };
    let settings = routed::Settings {
        node: args.node_name.clone(),
        run_dir: args.run_dir.clone(),
        public_ip,
        public_ipv6: args.public_ipv6,
        poll_every: Duration::from_secs(args.routed_poll_interval.max(1)),
        sync_wait: Duration::from_secs(args.routed_sync_wait),
        bgp_listen: args.bgp_listen.clone(),
        cluster_networks: cluster_networks.to_vec(),
        secrets: routed::secrets::for_store(&args.store, opts).await,
        kube_services: routed::svclocal::for_store(&args.store, opts).await,
    };
    let _cleanup = if node_cleanup(args) {
        let nodes = KubeNodes::connect(opts)
            .await
            .context("--node-cleanup: connect to the Kubernetes API")?;
        let cleaner = nodeclean::Cleaner {
            cluster: cluster.clone(),
            me: args.node_name.clone(),
        };
        let span = tracing::info_span!("node-cleanup");
        Some(AbortOnDrop(tokio::spawn(
            cleaner.run(nodes, status.clone()).instrument(span),
        )))
    } else {
        None
    };
    let span = tracing::info_span!("routed");
    routed::run(&settings, cluster, dp, status, handlers)
        .instrument(span)
        .await
}

/// Whether deleted Kubernetes Nodes are cleaned up after (--node-cleanup).
fn node_cleanup(args: &Args) -> bool {
    match args.node_cleanup {
        NodeCleanup::Auto => args.store == "kubernetes",
        NodeCleanup::On => true,
        NodeCleanup::Off => false,
    }
}

/// Stops a background task when the agent stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
