//! The routed network as a file declares it (deploy/'s ConfigMap keys
//! `pools.json` and `bgp.json`, mounted into plexusd's pod): parsed
//! strictly, checked with the same rules as `plexusctl pool add` and
//! `plexusctl bgp set`, and applied to the store idempotently, as flannel
//! reads its net-conf.json from the ConfigMap in kube mode.
//!
//! Applying adds a declared pool that is absent, updates the settings
//! that may change (`natOutgoing`, `encap`, `disabled`) of one that
//! differs, and sets the BGP settings when absent or different. It never
//! removes: a pool left out of the file stays (`plexusctl pool remove`
//! decides what happens to its addresses), and a declared pool whose CIDR
//! or block size differs from the stored one is an error, since its blocks
//! were cut by them. Every agent applies the same file at start; the
//! writes are create-if-absent and compare-and-swap, so they agree.

use serde::Deserialize;

use crate::records::{default_block_size, BgpConfig, Pool};
use crate::{validate, Cluster, IpamError};

/// One pool as written in `pools.json` (plexus-ipam's record, camelCase;
/// `blockSize` optional as in `plexusctl pool add`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoolSpec {
    name: String,
    cidr: String,
    block_size: Option<u8>,
    #[serde(default)]
    nat_outgoing: bool,
    #[serde(default = "no_encap")]
    encap: String,
    #[serde(default)]
    disabled: bool,
}

fn no_encap() -> String {
    "none".into()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BgpSpec {
    asn: u64,
    #[serde(default = "mesh_on")]
    node_to_node_mesh: bool,
}

fn mesh_on() -> bool {
    true
}

/// `pools.json`: a JSON array of pools. Each is checked alone (name, CIDR
/// without host bits, block size, encapsulation) and against the others
/// (no repeated name, no overlap).
pub fn parse_pools(text: &[u8]) -> Result<Vec<Pool>, IpamError> {
    let specs: Vec<PoolSpec> =
        serde_json::from_slice(text).map_err(|e| IpamError::Invalid(format!("pools: {e}")))?;
    let mut pools: Vec<Pool> = Vec::new();
    for s in specs {
        let ctx = |e: IpamError| IpamError::Invalid(format!("pool {:?}: {e}", s.name));
        let cidr = validate::pool_cidr(&s.cidr).map_err(ctx)?;
        let pool = Pool {
            name: s.name.clone(),
            cidr,
            block_size: s.block_size.unwrap_or_else(|| default_block_size(&cidr)),
            nat_outgoing: s.nat_outgoing,
            encap: s
                .encap
                .parse()
                .map_err(|e: String| ctx(IpamError::Invalid(e)))?,
            disabled: s.disabled,
        };
        validate::pool(&pool).map_err(ctx)?;
        if let Some(o) = pools
            .iter()
            .find(|o| o.name == pool.name || crate::arith::overlaps(&o.cidr, &pool.cidr))
        {
            return Err(IpamError::Invalid(format!(
                "pools {} ({}) and {} ({}) clash: names and CIDRs must be unique",
                o.name, o.cidr, pool.name, pool.cidr
            )));
        }
        pools.push(pool);
    }
    Ok(pools)
}

/// `bgp.json`: `{"asn": N, "nodeToNodeMesh": BOOL}` (the mesh on by default).
pub fn parse_bgp(text: &[u8]) -> Result<BgpConfig, IpamError> {
    let s: BgpSpec =
        serde_json::from_slice(text).map_err(|e| IpamError::Invalid(format!("bgp: {e}")))?;
    Ok(BgpConfig {
        asn: validate::asn(&s.asn.to_string())
            .map_err(|e| IpamError::Invalid(format!("bgp: {e}")))?,
        node_to_node_mesh: s.node_to_node_mesh,
        ..Default::default()
    })
}

/// What applying changed (names of pools), for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub bgp_set: bool,
}

impl Applied {
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.updated.is_empty() || self.bgp_set
    }
}

/// How often a pool created or changed by another agent in between is
/// looked at again.
const ATTEMPTS: usize = 8;

impl Cluster {
    /// Make the store hold `pools` and `bgp` (see the module doc).
    pub async fn apply_declared(
        &self,
        pools: &[Pool],
        bgp: Option<&BgpConfig>,
    ) -> Result<Applied, IpamError> {
        let mut out = Applied::default();
        for want in pools {
            self.apply_pool(want, &mut out).await?;
        }
        if let Some(bgp) = bgp {
            let key = self.layout().bgp_config();
            let stored = crate::stored::get::<BgpConfig>(&**self.kv(), &key).await?;
            // The file declares the AS and the mesh; the other settings
            // (sessions, services, ECMP: plexusctl's) stay as stored.
            let had = stored.map(|s| s.value);
            let mut next = had.clone().unwrap_or_default();
            next.asn = bgp.asn;
            next.node_to_node_mesh = bgp.node_to_node_mesh;
            if had.as_ref() != Some(&next) {
                self.set_bgp_config(&next).await?;
                out.bgp_set = true;
            }
        }
        Ok(out)
    }

    async fn apply_pool(&self, want: &Pool, out: &mut Applied) -> Result<(), IpamError> {
        for _ in 0..ATTEMPTS {
            let Some(have) = self.pool(&want.name).await? else {
                match self.add_pool(want).await {
                    Ok(()) => {
                        out.added.push(want.name.clone());
                        return Ok(());
                    }
                    // Another agent added it just now: compare with theirs.
                    Err(IpamError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            if have == *want {
                return Ok(());
            }
            if (have.cidr, have.block_size) != (want.cidr, want.block_size) {
                return Err(IpamError::Invalid(format!(
                    "pool {} is {} with /{} blocks in the store, but declared as {} with /{} blocks: \
                     a pool's CIDR and block size cannot change (plexusctl pool remove it first)",
                    want.name, have.cidr, have.block_size, want.cidr, want.block_size
                )));
            }
            self.update_pool(&want.name, |p| {
                p.nat_outgoing = want.nat_outgoing;
                p.encap = want.encap;
                p.disabled = want.disabled;
            })
            .await?;
            out.updated.push(want.name.clone());
            return Ok(());
        }
        Err(IpamError::Conflict(format!(
            "pool {} kept changing under us; try again",
            want.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Layout;
    use std::sync::Arc;

    #[test]
    fn files_are_checked_like_plexusctl_input() {
        let pools = parse_pools(
            br#"[{"name":"a","cidr":"10.245.0.0/16","natOutgoing":true},
                 {"name":"b","cidr":"fd00:245::/48","blockSize":122}]"#,
        )
        .unwrap();
        assert_eq!(pools[0].block_size, 26);
        assert!(pools[0].nat_outgoing);
        assert_eq!(pools[1].block_size, 122);
        for (bad, want) in [
            (&br#"{"name":"a"}"#[..], "pools: invalid type"),
            (br#"[{"name":"a","cidr":"10.0.0.1/16"}]"#, "host bits"),
            (
                br#"[{"name":"a","cidr":"10.0.0.0/16","blockSize":8}]"#,
                "block size",
            ),
            (
                br#"[{"name":"a","cidr":"10.0.0.0/16","encap":"gre"}]"#,
                "unknown encapsulation",
            ),
            (br#"[{"name":"a b","cidr":"10.0.0.0/16"}]"#, "may hold only"),
            (
                br#"[{"name":"a","cidr":"10.0.0.0/16","blocksize":26}]"#,
                "unknown field",
            ),
            (
                br#"[{"name":"a","cidr":"10.0.0.0/16"},{"name":"b","cidr":"10.0.1.0/24"}]"#,
                "clash",
            ),
        ] {
            let e = parse_pools(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse_bgp(br#"{"asn": 65001}"#).unwrap(),
            BgpConfig {
                asn: 65001,
                node_to_node_mesh: true,
                ..Default::default()
            }
        );
        for (bad, want) in [
            (&br#"{"asn": 0}"#[..], "reserved"),
            (br#"{"asn": 4294967296}"#, "out of range"),
            (br#"{"asn": 1, "mesh": false}"#, "unknown field"),
        ] {
            let e = parse_bgp(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn applying_is_idempotent_and_never_recuts_a_pool() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kv = Arc::new(plexus_store::FileKv::open(&dir.path().join("s")).unwrap());
            let c = Cluster::new(kv, Layout::default());
            let mut pools = parse_pools(br#"[{"name":"a","cidr":"10.245.0.0/16"}]"#).unwrap();
            let bgp = parse_bgp(br#"{"asn": 65001, "nodeToNodeMesh": false}"#).unwrap();
            let first = c.apply_declared(&pools, Some(&bgp)).await.unwrap();
            assert_eq!(first.added, ["a"]);
            assert!(first.bgp_set);
            let again = c.apply_declared(&pools, Some(&bgp)).await.unwrap();
            assert!(!again.changed(), "{again:?}");
            assert_eq!(c.bgp_config().await.unwrap(), bgp);
            // A setting that may change is updated in place.
            pools[0].nat_outgoing = true;
            let upd = c.apply_declared(&pools, None).await.unwrap();
            assert_eq!(upd.updated, ["a"]);
            assert!(c.pool("a").await.unwrap().unwrap().nat_outgoing);
            // A new CIDR for the same name is refused, nothing changes.
            let recut = parse_pools(br#"[{"name":"a","cidr":"10.246.0.0/16"}]"#).unwrap();
            let e = c
                .apply_declared(&recut, None)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("cannot change"), "{e}");
            assert_eq!(c.pools().await.unwrap(), pools);
        });
    }
}
