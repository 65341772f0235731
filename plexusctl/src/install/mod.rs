//! `plexusctl install` and `plexusctl uninstall`: what the DaemonSet's init
//! container (and its `--watch` sidecar) run on every node.
//!
//! install puts the plugin binaries into the CNI bin dir, optionally the
//! cluster network's conflist and a kubeconfig from the pod's service
//! account into the CNI conf dir, and `00-plexus.conflist`, which wraps the
//! node's default network in the meta plugin ([`wrap`]). Everything is
//! computed and checked first (sources readable, a default network present
//! and valid, the service account readable), so bad input changes nothing;
//! then each file is written atomically and only if it differs
//! ([`apply`]), and recorded ([`record`]) for uninstall.

mod apply;
mod kubeconfig;
mod record;
mod wrap;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use plexus_base::files;
use serde_json::{Map, Value};

use apply::Desired;
use record::Record;

/// The binaries install copies: the meta plugin and every Plexus plugin.
pub const PLUGINS: &[&str] = &[
    "plexus",
    "plexus-bridge",
    "plexus-host-local",
    "plexus-ipvlan",
    "plexus-vxlan",
    "plexus-bgp-routes",
    "plexus-cluster-ipam",
];
/// Our directory in the conf dir: the record and the kubeconfig.
const STATE_DIR: &str = "plexus.d";
const RECORD_NAME: &str = "install.json";
const KUBECONFIG_NAME: &str = "plexus.kubeconfig";
/// A plugin binary is a few MB; anything near this is not one.
const BINARY_LIMIT: u64 = 256 << 20;

#[derive(Args, Debug)]
pub struct InstallCmd {
    /// Where the runtime looks for CNI plugins (the host's /opt/cni/bin).
    #[arg(long)]
    cni_bin_dir: PathBuf,
    /// Where the runtime reads network configurations (the host's /etc/cni/net.d).
    #[arg(long)]
    cni_conf_dir: PathBuf,
    /// Where the plugin binaries to install are [default: the directory of
    /// this plexusctl].
    #[arg(long)]
    source_bin_dir: Option<PathBuf>,
    /// Write a kubeconfig for the meta plugin from this pod's service
    /// account and point the wrapper's `kubeconfig` at it.
    #[arg(long)]
    kubeconfig_from_service_account: bool,
    /// The service account's token and ca.crt.
    #[arg(long, default_value = kubeconfig::DEFAULT_SERVICE_ACCOUNT_DIR)]
    service_account_dir: PathBuf,
    /// The conf dir as the host sees it, for paths written into the
    /// wrapper (the container may mount it elsewhere) [default: --cni-conf-dir].
    #[arg(long)]
    host_cni_conf_dir: Option<PathBuf>,
    /// Also install this network configuration into the conf dir, under its
    /// file name (e.g. the overlay's 10-plexus-vxlan.conflist). It becomes
    /// the default network only if no other configuration sorts before it.
    #[arg(long)]
    cluster_network: Option<PathBuf>,
    /// A JSON object of meta plugin keys merged into the wrapper's plexus
    /// entry (readinessindicatorfile, defaultNetworks, namespaceIsolation...).
    #[arg(long)]
    meta_config: Option<PathBuf>,
    /// After installing, keep the wrapper (and the kubeconfig, and the
    /// cluster network's copy) in sync with their sources until killed.
    #[arg(long)]
    watch: bool,
    /// How often --watch looks, in milliseconds (Multus: every second).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[derive(Args, Debug)]
pub struct UninstallCmd {
    /// The --cni-bin-dir install was given.
    #[arg(long)]
    cni_bin_dir: PathBuf,
    /// The --cni-conf-dir install was given.
    #[arg(long)]
    cni_conf_dir: PathBuf,
}

pub fn run_install(c: InstallCmd) -> ExitCode {
    report(install(&c))
}

pub fn run_uninstall(c: UninstallCmd) -> ExitCode {
    report(uninstall(&c.cni_bin_dir, &c.cni_conf_dir))
}

fn report(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexusctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn require_dir(what: &str, d: &Path) -> Result<()> {
    files::require_absolute_dir(what, d).map_err(|e| anyhow!(e))?;
    let m = std::fs::metadata(d).with_context(|| format!("{what} {}", d.display()))?;
    if !m.is_dir() {
        bail!("{what} {} is not a directory", d.display());
    }
    Ok(())
}

fn install(c: &InstallCmd) -> Result<()> {
    require_dir("--cni-bin-dir", &c.cni_bin_dir)?;
    require_dir("--cni-conf-dir", &c.cni_conf_dir)?;
    let source = match &c.source_bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("cannot find this program's directory (give --source-bin-dir)")?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow!("give --source-bin-dir"))?,
    };
    // What an install killed between create and rename left behind.
    for d in [&c.cni_bin_dir, &c.cni_conf_dir] {
        files::sweep_stale_temporaries(d, Duration::from_secs(600));
    }
    let mut want = binaries(&source, &c.cni_bin_dir)?;
    let (confs, wrapper) = configs(c)?;
    want.extend(confs);
    want.push(wrapper?);
    let (mut record, record_path) = open_record(&c.cni_conf_dir)?;
    let n = apply::apply(&want, &mut record, &record_path)?;
    tracing::info!(written = n, of = want.len(), "install done");
    if c.watch {
        watch(c, &mut record, &record_path)?;
    }
    Ok(())
}

/// The plugin binaries, read whole: all of them must be there before any
/// is installed.
fn binaries(source: &Path, bin_dir: &Path) -> Result<Vec<Desired>> {
    PLUGINS
        .iter()
        .map(|name| {
            let from = source.join(name);
            let bytes = files::read_limited(&from, BINARY_LIMIT)
                .with_context(|| format!("cannot read the plugin {}", from.display()))?;
            Ok(Desired {
                path: bin_dir.join(name),
                bytes,
                mode: 0o755,
            })
        })
        .collect()
}

/// The conf dir's files: the cluster network's copy and the kubeconfig,
/// and apart from them the wrapper, which depends on a file that is not
/// ours (the default network): `--watch` still follows the others while
/// that one is broken. What `--watch` recomputes.
fn configs(c: &InstallCmd) -> Result<(Vec<Desired>, Result<Desired>)> {
    let conf_dir = &c.cni_conf_dir;
    let host_conf_dir = c.host_cni_conf_dir.as_deref().unwrap_or(conf_dir);
    let mut want = Vec::new();

    // The cluster network's copy counts as present when choosing the
    // default network.
    let mut pending: Option<(String, Value)> = None;
    if let Some(src) = &c.cluster_network {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| wrap::is_conf_name(n) && *n != wrap::CONFLIST_NAME)
            .ok_or_else(|| {
                anyhow!(
                    "--cluster-network {}: the file name must end in .conf or .conflist and not be {}",
                    src.display(),
                    wrap::CONFLIST_NAME
                )
            })?
            .to_string();
        let v = wrap::read_network(src)?;
        let bytes = files::read_limited(src, files::DEFAULT_READ_LIMIT)
            .with_context(|| format!("cannot read {}", src.display()))?;
        want.push(Desired {
            path: conf_dir.join(&name),
            bytes,
            mode: 0o644,
        });
        pending = Some((name, v));
    }

    let mut opts = wrap::WrapOptions::default();
    if c.kubeconfig_from_service_account {
        let env = kubeconfig::ApiServerEnv::from_env();
        want.push(Desired {
            path: conf_dir.join(STATE_DIR).join(KUBECONFIG_NAME),
            bytes: kubeconfig::render(&c.service_account_dir, &env)?,
            mode: 0o600,
        });
        opts.kubeconfig = Some(host_conf_dir.join(STATE_DIR).join(KUBECONFIG_NAME));
    }
    if let Some(p) = &c.meta_config {
        let bytes = files::read_limited(p, files::DEFAULT_READ_LIMIT)
            .with_context(|| format!("cannot read --meta-config {}", p.display()))?;
        opts.extra = serde_json::from_slice::<Map<String, Value>>(&bytes)
            .with_context(|| format!("--meta-config {} is not a JSON object", p.display()))?;
    }

    let wrapper = wrapper(conf_dir, pending.as_ref(), &opts);
    Ok((want, wrapper))
}

/// `00-plexus.conflist` for the conf dir's current default network
/// (`pending`: the cluster network's copy about to be written).
fn wrapper(
    conf_dir: &Path,
    pending: Option<&(String, Value)>,
    opts: &wrap::WrapOptions,
) -> Result<Desired> {
    let mut names = wrap::conf_names(conf_dir)?;
    names.extend(pending.iter().map(|(n, _)| n.clone()));
    let Some(default) = wrap::pick_default(names.iter().map(String::as_str)) else {
        bail!(
            "no default network in {}: no .conf or .conflist file other than {} \
             (install the cluster network first, or give --cluster-network)",
            conf_dir.display(),
            wrap::CONFLIST_NAME
        );
    };
    let network = match pending {
        Some((n, v)) if n == default => v.clone(),
        _ => wrap::read_network(&conf_dir.join(default))?,
    };
    let bytes = wrap::render(&network, opts)
        .with_context(|| format!("cannot wrap {}", conf_dir.join(default).display()))?;
    tracing::debug!(default, "default network");
    Ok(Desired {
        path: conf_dir.join(wrap::CONFLIST_NAME),
        bytes,
        mode: 0o644,
    })
}

/// The record, with our state directory made (and recorded) if missing.
fn open_record(conf_dir: &Path) -> Result<(Record, PathBuf)> {
    let state = conf_dir.join(STATE_DIR);
    let path = state.join(RECORD_NAME);
    let mut record = Record::load(&path)?;
    let mut changed = false;
    if !state.is_dir() {
        std::fs::create_dir(&state)
            .with_context(|| format!("cannot create {}", state.display()))?;
        record.created_dirs.push(state.clone());
        changed = true;
    }
    if !record.has_file(&path) {
        record.files.push(record::RecordedFile {
            path: path.clone(),
            backup: None,
        });
        changed = true;
    }
    // Unchanged, it is not rewritten: a second install writes nothing.
    if changed {
        record.save(&path)?;
    }
    Ok((record, path))
}

/// Polls until SIGTERM or SIGINT, then returns once no write is under
/// way. In a container this runs as PID 1, which the kernel does not kill
/// on SIGTERM by default: without this it would sit out the whole grace
/// period.
fn watch(c: &InstallCmd, record: &mut Record, record_path: &Path) -> Result<()> {
    let every = Duration::from_millis(c.interval_ms.max(10));
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    // Blocked here, before the poller starts, so it inherits the mask and
    // the signals wait for sigwait below.
    signals
        .thread_block()
        .context("cannot block SIGTERM/SIGINT")?;
    let busy = Mutex::new(());
    tracing::info!(
        interval_ms = every.as_millis() as u64,
        "watching for changes"
    );
    std::thread::scope(|s| -> Result<()> {
        s.spawn(|| loop {
            std::thread::sleep(every);
            let _writing = busy.lock().unwrap_or_else(|e| e.into_inner());
            // A default network that is missing or broken for a moment
            // (being rewritten by its own installer) keeps the last good
            // wrapper, as Multus does; the next round tries again.
            let round = configs(c).and_then(|(mut want, wrapper)| {
                let broken = wrapper.map(|w| want.push(w)).err();
                let n = apply::apply(&want, record, record_path)?;
                broken.map_or(Ok(n), |e| {
                    Err(e.context("00-plexus.conflist left as it was"))
                })
            });
            match round {
                Ok(0) => {}
                Ok(n) => tracing::info!(written = n, "configuration followed a change"),
                Err(e) => tracing::warn!("not updated: {e:#}"),
            }
        });
        let sig = signals.wait().context("waiting for SIGTERM")?;
        let _idle = busy.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!(signal = ?sig, "stopping; the installed files stay");
        // The poller never returns: leave without joining it.
        std::process::exit(0)
    })
}

fn uninstall(bin_dir: &Path, conf_dir: &Path) -> Result<()> {
    require_dir("--cni-bin-dir", bin_dir)?;
    require_dir("--cni-conf-dir", conf_dir)?;
    let path = conf_dir.join(STATE_DIR).join(RECORD_NAME);
    if !path.exists() {
        tracing::info!(record = %path.display(), "nothing installed here: nothing to undo");
        return Ok(());
    }
    let record = Record::load(&path)?;
    record.check_paths(&[bin_dir, conf_dir])?;
    record::undo(&record)?;
    record::remove_created_dirs(&record)
}
