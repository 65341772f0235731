//! `plexusctl topology`: the cluster as the network sees it.
//!
//! Collecting and drawing are apart: [`store`], [`agents`] and the meta
//! plugin's caches (through [`crate::status::collect`]) are read, [`build`]
//! merges them into a plain [`model::Topology`], and [`text`] or [`dot`]
//! draw it; `svg` pipes the DOT through Graphviz (see [`svg`]). What cannot
//! be read is a warning on stderr and a partial picture.

pub mod agents;
pub mod build;
pub mod dot;
pub mod model;
pub mod store;
pub mod svg;
#[cfg(test)]
mod tests;
pub mod text;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::routed::StoreArgs;

use self::agents::RunDir;

#[derive(Args)]
pub struct TopologyCmd {
    /// A node's plexusd run dir (holding plexusd.sock), optionally named:
    /// `[NODE=]DIR`. Repeat for each node (and each agent of a node).
    #[arg(long = "run-dir", value_name = "[NODE=]DIR", value_parser = parse_run_dir)]
    run_dirs: Vec<RunDir>,
    /// A node's meta plugin cacheDir: `NODE=DIR`. Repeat for each node.
    #[arg(long = "cache-dir", value_name = "NODE=DIR", value_parser = parse_cache_dir)]
    cache_dirs: Vec<(String, PathBuf)>,
    /// text (an indented tree), dot (Graphviz) or svg (DOT through `dot -Tsvg`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the picture to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The overlay's key prefix in the store (flannel's --etcd-prefix).
    #[arg(long, default_value = plexus_subnet::registry::DEFAULT_PREFIX)]
    etcd_prefix: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Svg,
}

/// `[NODE=]DIR`: a name before `=` when that part holds no `/`.
fn parse_run_dir(s: &str) -> Result<RunDir, String> {
    match s.split_once('=') {
        Some((node, dir)) if !node.contains('/') => {
            if node.is_empty() || dir.is_empty() {
                return Err(format!(
                    "{s:?}: expected [NODE=]DIR with both parts non-empty"
                ));
            }
            Ok(RunDir {
                node: Some(node.into()),
                dir: dir.into(),
            })
        }
        _ if s.is_empty() => Err("expected [NODE=]DIR, got an empty value".into()),
        _ => Ok(RunDir {
            node: None,
            dir: s.into(),
        }),
    }
}

fn parse_cache_dir(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((node, dir)) if !node.is_empty() && !dir.is_empty() && !node.contains('/') => {
            Ok((node.into(), dir.into()))
        }
        _ => Err(format!(
            "{s:?}: expected NODE=DIR (the node whose meta plugin cache DIR is)"
        )),
    }
}

pub fn run(cmd: TopologyCmd, store: &StoreArgs) -> ExitCode {
    match render(cmd, store) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexusctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn render(cmd: TopologyCmd, store: &StoreArgs) -> anyhow::Result<()> {
    if store.url().is_none() && cmd.run_dirs.is_empty() && cmd.cache_dirs.is_empty() {
        bail!("nothing to draw: give --store URL, --run-dir [NODE=]DIR or --cache-dir NODE=DIR");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    let view = rt.block_on(store::read(store, &cmd.etcd_prefix));
    let mut warnings = Vec::new();
    let agents = cmd
        .run_dirs
        .iter()
        .filter_map(|rd| agents::ask(rd).map_err(|w| warnings.push(w)).ok())
        .collect();
    let pods = cmd
        .cache_dirs
        .iter()
        .map(|(node, dir)| {
            if !dir.is_dir() {
                warnings.push(format!(
                    "node {node}: cache dir {} does not exist",
                    dir.display()
                ));
            }
            (node.clone(), crate::status::collect(dir))
        })
        .collect();
    let mut topology = build::build(view, agents, pods);
    topology.warnings.extend(warnings);
    for w in &topology.warnings {
        eprintln!("plexusctl: warning: {w}");
    }
    let bytes = match cmd.format {
        Format::Text => text::render(&topology).into_bytes(),
        Format::Dot => dot::render(&topology).into_bytes(),
        Format::Svg => {
            let d = dot::render(&topology);
            match svg::from_dot(&d)? {
                Some(svg) => svg,
                None => {
                    eprintln!(
                        "plexusctl: warning: Graphviz `dot` is not installed (apt-get install graphviz); printing DOT instead of SVG"
                    );
                    d.into_bytes()
                }
            }
        }
    };
    match &cmd.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            // A closed pipe (e.g. `| head`) is not an error worth reporting.
            let _ = std::io::stdout().lock().write_all(&bytes);
        }
    }
    Ok(())
}
