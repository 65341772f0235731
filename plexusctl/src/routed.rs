//! What the routed network's commands (`pool`, `bgp`, `node`, `ipam`)
//! share: the store flags, opening the store, and running a command that
//! returns its output (table or JSON) or an error for stderr.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use plexus_ipam::{Cluster, Layout};
use plexus_store::Kv;
use serde::Serialize;

/// How to reach the store, as plexusd takes it.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The cluster store: etcd://HOST:PORT[,HOST:PORT...], file:PATH, or
    /// kubernetes (PlexusKey objects; --kubeconfig, else the in-cluster
    /// config).
    #[arg(long, env = "PLEXUS_STORE", global = true)]
    store: Option<String>,
    /// kubeconfig for `--store kubernetes`.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Where the routed network's keys live in the store.
    #[arg(long, env = "PLEXUS_ROUTED_PREFIX", default_value = plexus_ipam::DEFAULT_PREFIX, global = true)]
    routed_prefix: String,
    #[arg(long, global = true)]
    etcd_cafile: Option<PathBuf>,
    #[arg(long, global = true)]
    etcd_certfile: Option<PathBuf>,
    #[arg(long, global = true)]
    etcd_keyfile: Option<PathBuf>,
    #[arg(long, global = true)]
    etcd_username: Option<String>,
    #[arg(long, env = "PLEXUS_ETCD_PASSWORD", global = true)]
    etcd_password: Option<String>,
}

impl StoreArgs {
    /// The `--store` URL, when one was given.
    pub fn url(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The store's key-value space (the overlay's leases and the routed
    /// network's records both live there).
    pub async fn open_kv(&self) -> anyhow::Result<Arc<dyn Kv>> {
        let Some(url) = &self.store else {
            bail!("--store is required: etcd://HOST:PORT[,...], file:PATH or kubernetes (or set PLEXUS_STORE)");
        };
        let opts = plexus_store::StoreOptions {
            etcd_cafile: self.etcd_cafile.clone(),
            etcd_certfile: self.etcd_certfile.clone(),
            etcd_keyfile: self.etcd_keyfile.clone(),
            etcd_username: self.etcd_username.clone(),
            etcd_password: self.etcd_password.clone(),
            kubeconfig: self.kubeconfig.clone(),
            ..Default::default()
        };
        plexus_store::open_kv(url, &opts)
            .await
            .with_context(|| format!("opening the store {url}"))
    }

    /// The routed network's state over `kv`.
    pub fn cluster(&self, kv: Arc<dyn Kv>) -> Cluster {
        Cluster::new(kv, Layout::new(&self.routed_prefix))
    }

    async fn open(&self) -> anyhow::Result<Cluster> {
        Ok(self.cluster(self.open_kv().await?))
    }
}

/// Run one command against the store: its output goes to stdout, an
/// error to stderr with a non-zero exit.
pub fn run<F, Fut>(store: &StoreArgs, cmd: F) -> ExitCode
where
    F: FnOnce(Cluster) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexusctl: error: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let cluster = store.open().await?;
        cmd(cluster).await
    });
    match result {
        Ok(text) => {
            // A closed pipe (e.g. `| head`) is not an error worth reporting.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plexusctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `v` as pretty JSON and a newline.
pub fn json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A table as text.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = crate::table::write_table(&mut out, header, rows);
    String::from_utf8_lossy(&out).into_owned()
}

/// "yes"/"no" for boolean columns.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A confirmation line, or `record` as JSON with `--json`.
pub fn done<T: Serialize>(json_out: bool, message: String, record: &T) -> String {
    if json_out {
        json(record)
    } else {
        message + "\n"
    }
}
