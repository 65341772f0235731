//! [`KvLeaseRegistry`]: the overlay's subnet leases over any [`Kv`], in
//! flannel's layout, so flanneld and plexusd share one etcd:
//!
//! - `<prefix>/config`: the network config JSON;
//! - `<prefix>/subnets/<ip>-<len>[&<ip6>-<len6>]`: a lease, value
//!   `LeaseAttrs` JSON, attached to a 24 h TTL lease, created only if absent.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_subnet::{alloc, Lease, LeaseAttrs, NetworkConfig};

use crate::informer::{Informer, KvSource};
use crate::kv::{KeyValue, Kv, LeaseId};
use crate::{AcquireRequest, LeaseRegistry, LeaseSnapshot, Revision, StoreError};

/// A lease's TTL, as flannel's (`subnetTTL`).
pub const SUBNET_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long before a lease's expiry to renew it: flannel's default
/// `--subnet-lease-renew-margin` (60 min). Renewing every few minutes is
/// fine too: a keepalive is one small request.
pub const RENEW_MARGIN: Duration = Duration::from_secs(3600);
/// flannel's default `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// Tries before giving up when other nodes keep taking the subnets we pick.
const ACQUIRE_ATTEMPTS: u32 = 16;

/// The overlay's leases in a [`Kv`] store.
pub struct KvLeaseRegistry {
    kv: Arc<dyn Kv>,
    prefix: String,
    /// Where the config comes from when the store has none (a single node's
    /// `file:` store seeded from net-conf.json).
    config_file: Option<PathBuf>,
    /// The TTL lease each of our keys is attached to.
    held: Mutex<HashMap<String, LeaseId>>,
}

impl std::fmt::Debug for KvLeaseRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvLeaseRegistry")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Which step of the acquire order gave the lease.
enum Publish {
    /// Create; the key must be absent.
    Create,
    /// Replace the value whose mod_revision and TTL lease we read.
    Replace(KeyValue),
}

impl KvLeaseRegistry {
    /// `prefix` is flannel's `--etcd-prefix` (empty = `/coreos.com/network`).
    pub fn new(kv: Arc<dyn Kv>, prefix: &str) -> KvLeaseRegistry {
        let prefix = prefix.trim_end_matches('/');
        KvLeaseRegistry {
            kv,
            prefix: if prefix.is_empty() {
                DEFAULT_PREFIX.to_string()
            } else {
                prefix.to_string()
            },
            config_file: None,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Read the config from `path` when `<prefix>/config` is absent.
    pub fn with_config_file(mut self, path: Option<PathBuf>) -> KvLeaseRegistry {
        self.config_file = path;
        self
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/`, the leases' common prefix.
    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// The store key of a lease.
    pub fn lease_key(&self, lease: &Lease) -> String {
        format!("{}{}", self.subnets_prefix(), lease.key())
    }

    async fn leases(&self) -> Result<(Vec<(KeyValue, Lease)>, Revision), StoreError> {
        let prefix = self.subnets_prefix();
        let r = self.kv.range(&prefix).await?;
        let leases = r
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let lease = to_lease(&prefix, &kv)?;
                Some((kv, lease))
            })
            .collect();
        Ok((leases, r.revision))
    }

    /// Publish `attrs` for `subnets` on a fresh TTL lease. `Ok(false)` when
    /// the store changed under us (the key was taken, or changed since read).
    async fn publish(&self, lease: &Lease, how: Publish) -> Result<bool, StoreError> {
        let key = self.lease_key(lease);
        let value = lease.attrs.to_json();
        let id = self.kv.grant(SUBNET_TTL).await?;
        let res = match &how {
            Publish::Create => self.kv.create(&key, value.as_bytes(), Some(id)).await,
            Publish::Replace(cur) => {
                self.kv
                    .put(&key, value.as_bytes(), Some(id), Some(cur.mod_revision))
                    .await
            }
        };
        match res {
            Ok(Some(_)) => {
                let old = self.held.lock().unwrap().insert(key.clone(), id);
                // The key's previous TTL lease (ours from before a restart,
                // or flannel's) now holds no key: end it.
                let stale = match &how {
                    Publish::Replace(cur) if cur.lease != 0 && cur.lease != id => Some(cur.lease),
                    _ => old.filter(|o| *o != id),
                };
                if let Some(stale) = stale {
                    if let Err(e) = self.kv.revoke(stale).await {
                        tracing::warn!(key, lease = stale, error = %e, "cannot revoke a replaced lease; it expires by itself");
                    }
                }
                Ok(true)
            }
            Ok(None) => {
                let _ = self.kv.revoke(id).await;
                Ok(false)
            }
            Err(e) => {
                let _ = self.kv.revoke(id).await;
                Err(e)
            }
        }
    }

    /// Create a lease key if absent; `Ok(false)` when another node has it.
    async fn claim(&self, cfg: &NetworkConfig, lease: &Lease) -> Result<bool, StoreError> {
        if !self.publish(lease, Publish::Create).await? {
            return Ok(false);
        }
        let dual = cfg.enable_ipv4 && cfg.enable_ipv6;
        Ok(!(dual && self.lost_dual_stack_race(lease).await?))
    }

    /// After creating a dual-stack key: another key created earlier may
    /// hold one of our two subnets (the create transaction only guards the
    /// exact key). The earlier creator keeps it; we give ours back.
    async fn lost_dual_stack_race(&self, ours: &Lease) -> Result<bool, StoreError> {
        let (leases, _) = self.leases().await?;
        let Some((mine, _)) = leases.iter().find(|(_, l)| l.same_subnets(ours)) else {
            return Ok(true);
        };
        let lost = leases.iter().any(|(kv, l)| {
            !l.same_subnets(ours)
                && kv.create_revision < mine.create_revision
                && ((l.subnet.is_some() && l.subnet == ours.subnet)
                    || (l.subnet6.is_some() && l.subnet6 == ours.subnet6))
        });
        if lost {
            let key = self.lease_key(ours);
            self.kv.delete(&key, Some(mine.mod_revision)).await?;
            let held = self.held.lock().unwrap().remove(&key);
            if let Some(id) = held {
                let _ = self.kv.revoke(id).await;
            }
        }
        Ok(lost)
    }
}

fn to_lease(prefix: &str, kv: &KeyValue) -> Option<Lease> {
    let key = kv.key.strip_prefix(prefix)?;
    match Lease::from_kv(key, &kv.value) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "ignoring a malformed lease");
            None
        }
    }
}

fn carries_our_ip(l: &Lease, req: &AcquireRequest) -> bool {
    match (req.public_ip, req.public_ipv6) {
        (Some(ip), _) => l.attrs.public_ip == Some(ip),
        (None, Some(ip6)) => l.attrs.public_ipv6 == Some(ip6),
        (None, None) => false,
    }
}

/// A lease left by this node before its address changed: it carries the
/// address we published last, and our VTEP MAC where the backend has one.
fn moved_here(l: &Lease, req: &AcquireRequest) -> bool {
    let old = req
        .previous_public_ip
        .is_some_and(|ip| l.attrs.public_ip == Some(ip) && req.public_ip != Some(ip));
    let same_mac = match (&l.attrs.backend_data, &req.attrs.backend_data) {
        (Some(a), Some(b)) => a.vtep_mac == b.vtep_mac,
        (None, None) => true,
        _ => false,
    };
    old && same_mac
}

fn overlaps(a: &Lease, b: &Lease) -> bool {
    (a.subnet.is_some() && a.subnet == b.subnet) || (a.subnet6.is_some() && a.subnet6 == b.subnet6)
}

/// Different nodes start their search at different places, and retries
/// move on: a hash of the node name, the attempt and the clock.
fn seed(node: &str, attempt: u32) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(node.as_bytes());
    h.write_u32(attempt);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[async_trait::async_trait]
impl LeaseRegistry for KvLeaseRegistry {
    async fn network_config(&self) -> Result<NetworkConfig, StoreError> {
        let key = self.config_key();
        if let Some(kv) = self.kv.get(&key).await? {
            return Ok(NetworkConfig::parse(&kv.value)?);
        }
        match &self.config_file {
            Some(path) => {
                let bytes = plexus_base::files::read_limited(path, 1 << 20).map_err(|e| {
                    StoreError::NoConfig(format!("{key} (and {}: {e})", path.display()))
                })?;
                Ok(NetworkConfig::parse(&bytes)?)
            }
            None => Err(StoreError::NoConfig(key)),
        }
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease, StoreError> {
        let cfg = self.network_config().await?;
        let mut lost: Vec<Lease> = Vec::new();
        for attempt in 0..ACQUIRE_ATTEMPTS {
            let (leases, _) = self.leases().await?;
            // 1. The lease already carrying our public IP (our own, from
            //    before a restart): keep its subnet, publish our attributes.
            //    Several may carry it (one planted, or left by a node that
            //    had our address before): the one we held before wins,
            //    else the oldest.
            let ours: Vec<&(KeyValue, Lease)> = leases
                .iter()
                .filter(|(_, l)| carries_our_ip(l, req) && cfg.fits(l))
                .collect();
            let mine = ours
                .iter()
                .find(|(_, l)| req.previous.as_ref().is_some_and(|p| l.same_subnets(p)))
                .or_else(|| ours.iter().min_by_key(|(kv, _)| kv.create_revision));
            if let Some((kv, l)) = mine {
                for (other, _) in ours.iter().filter(|(o, _)| o.key != kv.key) {
                    tracing::warn!(key = %other.key, ours = %kv.key, "another lease carries this node's public IP: ignored (a lease conflict)");
                }
                let lease = Lease {
                    attrs: req.attrs.clone(),
                    ..l.clone()
                };
                if self.publish(&lease, Publish::Replace(kv.clone())).await? {
                    return Ok(lease);
                }
                continue;
            }
            // 1b. Our previous subnet still carrying our previous address
            //     (and our VTEP MAC): this node's own lease from before its
            //     address changed. It moves with the node, as flannel's
            //     renewal with a new IP does; other nodes follow the change.
            if let Some((kv, l)) = req.previous.as_ref().and_then(|p| {
                leases
                    .iter()
                    .find(|(_, l)| l.same_subnets(p) && moved_here(l, req) && cfg.fits(l))
            }) {
                tracing::info!(key = %kv.key, old = ?l.attrs.public_ip, new = ?req.public_ip, "this node's address changed: its lease moves with it");
                let lease = Lease {
                    attrs: req.attrs.clone(),
                    ..l.clone()
                };
                if self.publish(&lease, Publish::Replace(kv.clone())).await? {
                    return Ok(lease);
                }
                continue;
            }
            // 2. The subnet we held before (subnet.env), if still free.
            if let Some(prev) = req.previous.as_ref().filter(|p| cfg.fits(p)) {
                let free = !leases.iter().any(|(_, l)| overlaps(l, prev))
                    && !lost.iter().any(|l| overlaps(l, prev));
                if free {
                    let lease = Lease {
                        attrs: req.attrs.clone(),
                        ..prev.clone()
                    };
                    if self.claim(&cfg, &lease).await? {
                        return Ok(lease);
                    }
                    lost.push(lease);
                    continue;
                }
            }
            // 3. A free subnet, starting the search at a random place.
            let taken: Vec<Lease> = leases
                .into_iter()
                .map(|(_, l)| l)
                .chain(lost.iter().cloned())
                .collect();
            let (subnet, subnet6) =
                alloc::free_subnets(&cfg, &taken, seed(&req.node_name, attempt))?;
            let lease = Lease {
                subnet,
                subnet6,
                attrs: req.attrs.clone(),
            };
            if self.claim(&cfg, &lease).await? {
                return Ok(lease);
            }
            tracing::debug!(key = %lease.key(), "subnet taken by another node meanwhile; trying another");
            lost.push(lease);
        }
        Err(StoreError::Other(format!(
            "no subnet lease after {ACQUIRE_ATTEMPTS} attempts: other nodes kept taking the subnets picked"
        )))
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        let key = self.lease_key(lease);
        let held = self.held.lock().unwrap().get(&key).copied();
        let Some(cur) = self.kv.get(&key).await? else {
            // Gone (deleted by hand, or expired): claim it again if free.
            if self.publish(lease, Publish::Create).await? {
                return Ok(());
            }
            return Err(StoreError::Other(format!(
                "lease {key} was lost and taken by another node"
            )));
        };
        if cur.lease != 0
            && held == Some(cur.lease)
            && self.kv.keepalive(cur.lease).await?.is_some()
        {
            if cur.value == lease.attrs.to_json().as_bytes() {
                return Ok(());
            }
            // Attributes changed (e.g. a new public IP): rewrite, same lease.
            return match self
                .kv
                .put(
                    &key,
                    lease.attrs.to_json().as_bytes(),
                    Some(cur.lease),
                    Some(cur.mod_revision),
                )
                .await?
            {
                Some(_) => Ok(()),
                None => Err(StoreError::Other(format!(
                    "lease {key} changed under us while renewing"
                ))),
            };
        }
        // Not on a TTL lease of ours (written before a restart, or by
        // flannel): still ours if it carries our public IP.
        let theirs = LeaseAttrs::from_json(&cur.value).unwrap_or_default();
        if theirs.public_ip != lease.attrs.public_ip
            || theirs.public_ipv6 != lease.attrs.public_ipv6
        {
            return Err(StoreError::Other(format!(
                "lease {key} now belongs to another node (public IP {:?})",
                theirs
                    .public_ip
                    .map(|i| i.to_string())
                    .or(theirs.public_ipv6.map(|i| i.to_string()))
            )));
        }
        if self.publish(lease, Publish::Replace(cur)).await? {
            Ok(())
        } else {
            Err(StoreError::Other(format!(
                "lease {key} changed under us while renewing"
            )))
        }
    }

    async fn reassert(&self, lease: &Lease) -> Result<(), StoreError> {
        let key = self.lease_key(lease);
        for _ in 0..ACQUIRE_ATTEMPTS {
            let how = match self.kv.get(&key).await? {
                Some(cur) => Publish::Replace(cur),
                None => Publish::Create,
            };
            if self.publish(lease, how).await? {
                return Ok(());
            }
        }
        Err(StoreError::Other(format!(
            "lease {key} kept changing while we wrote it back"
        )))
    }

    async fn list(&self) -> Result<LeaseSnapshot, StoreError> {
        let (leases, revision) = self.leases().await?;
        Ok(LeaseSnapshot {
            leases: leases.into_iter().map(|(_, l)| l).collect(),
            revision,
        })
    }

    fn follow(&self) -> Informer<Lease> {
        let prefix = self.subnets_prefix();
        let source = KvSource::new(self.kv.clone(), &prefix);
        Informer::new(source, move |key: &str, kv: &KeyValue| {
            let short = key
                .strip_prefix(&prefix)
                .ok_or_else(|| format!("not under {prefix}"))?;
            Lease::from_kv(short, &kv.value).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt;
    use crate::Event;
    use crate::FileKv;
    use plexus_subnet::VxlanBackendData;

    const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;

    fn req(node: &str, ip: &str, mac: u8) -> AcquireRequest {
        AcquireRequest {
            node_name: node.into(),
            public_ip: Some(ip.parse().unwrap()),
            public_ipv6: None,
            previous: None,
            previous_public_ip: None,
            attrs: LeaseAttrs {
                public_ip: Some(ip.parse().unwrap()),
                backend_type: "vxlan".into(),
                backend_data: Some(VxlanBackendData {
                    vni: 1,
                    vtep_mac: [2, 0, 0, 0, 0, mac],
                }),
                ..Default::default()
            },
        }
    }

    async fn registry(dir: &std::path::Path) -> (Arc<dyn Kv>, KvLeaseRegistry) {
        let kv: Arc<dyn Kv> = Arc::new(FileKv::open(&dir.join("store.json")).unwrap());
        kv.put("/coreos.com/network/config", CONFIG.as_bytes(), None, None)
            .await
            .unwrap();
        (kv.clone(), KvLeaseRegistry::new(kv, ""))
    }

    #[test]
    fn no_config_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let kv: Arc<dyn Kv> = Arc::new(FileKv::open(&dir.path().join("s.json")).unwrap());
            let r = KvLeaseRegistry::new(kv, "/x/");
            let e = r.acquire(&req("a", "192.168.0.1", 1)).await.unwrap_err();
            assert!(
                matches!(&e, StoreError::NoConfig(k) if k == "/x/config"),
                "{e}"
            );
            // The config file is the fallback.
            let f = dir.path().join("net-conf.json");
            std::fs::write(&f, CONFIG).unwrap();
            let r = r.with_config_file(Some(f));
            assert_eq!(r.network_config().await.unwrap().subnet_len, 24);
        });
    }

    #[test]
    fn acquire_order_own_ip_then_previous_then_free() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (kv, r) = registry(dir.path()).await;
            let a = r.acquire(&req("a", "192.168.0.1", 1)).await.unwrap();
            let stored = kv.get(&r.lease_key(&a)).await.unwrap().unwrap();
            assert_eq!(stored.value, a.attrs.to_json().as_bytes());
            assert_ne!(stored.lease, 0, "attached to a TTL lease");
            // Same public IP again (a restart): the same subnet, new MAC published.
            let again = r.acquire(&req("a", "192.168.0.1", 9)).await.unwrap();
            assert_eq!(again.subnet, a.subnet);
            assert_eq!(again.attrs.backend_data.unwrap().vtep_mac[5], 9);
            assert_eq!(r.list().await.unwrap().leases.len(), 1);
            // A new IP with a previous subnet that is free: that subnet.
            let mut b = req("b", "192.168.0.2", 2);
            b.previous = Some(Lease {
                subnet: Some("10.5.77.0/24".parse().unwrap()),
                subnet6: None,
                attrs: LeaseAttrs::default(),
            });
            assert_eq!(
                r.acquire(&b).await.unwrap().subnet,
                Some("10.5.77.0/24".parse().unwrap())
            );
            // A previous subnet held by another node is not taken over.
            let mut c = req("c", "192.168.0.3", 3);
            c.previous = Some(Lease {
                subnet: a.subnet,
                subnet6: None,
                attrs: LeaseAttrs::default(),
            });
            let cl = r.acquire(&c).await.unwrap();
            assert!(cl.subnet != a.subnet && cl.subnet != Some("10.5.77.0/24".parse().unwrap()));
            r.renew(&cl).await.unwrap();
        });
    }

    #[test]
    fn many_registries_on_one_store_never_share_a_subnet() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (kv, _) = registry(dir.path()).await;
            // A tiny network: 3 subnets for 3 nodes, so every pick collides.
            kv.put(
                "/coreos.com/network/config",
                br#"{"Network":"10.5.0.0/28","Backend":{"Type":"vxlan"}}"#,
                None,
                None,
            )
            .await
            .unwrap();
            let regs: Vec<KvLeaseRegistry> = (0..3)
                .map(|_| KvLeaseRegistry::new(kv.clone(), ""))
                .collect();
            let reqs: Vec<AcquireRequest> = (0..3)
                .map(|i| req(&format!("n{i}"), &format!("192.168.0.{}", i + 1), i))
                .collect();
            let got =
                futures::future::join_all(regs.iter().zip(&reqs).map(|(r, q)| r.acquire(q))).await;
            let mut subnets: Vec<_> = got
                .into_iter()
                .map(|l| l.unwrap().subnet.unwrap())
                .collect();
            subnets.sort();
            subnets.dedup();
            assert_eq!(subnets.len(), 3);
            let e = regs[0]
                .acquire(&req("n9", "192.168.0.9", 9))
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("no free subnet left"), "{e}");
        });
    }

    #[test]
    fn a_dual_stack_key_sharing_a_subnet_with_an_earlier_one_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (kv, r) = registry(dir.path()).await;
            let cfg = NetworkConfig::parse(
                br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
            )
            .unwrap();
            // Another node created 10.5.1.0 with another IPv6 subnet first
            // (both picked 10.5.1.0 from the same listing).
            let earlier = "/coreos.com/network/subnets/10.5.1.0-24&fc00:0:0:7::-64";
            kv.create(earlier, br#"{"PublicIP":"192.168.0.7"}"#, None).await.unwrap();
            let ours = Lease {
                subnet: Some("10.5.1.0/24".parse().unwrap()),
                subnet6: Some("fc00:0:0:9::/64".parse().unwrap()),
                attrs: req("a", "192.168.0.1", 1).attrs,
            };
            assert!(!r.claim(&cfg, &ours).await.unwrap(), "the earlier key keeps the subnet");
            assert_eq!(kv.get(&r.lease_key(&ours)).await.unwrap(), None, "ours is deleted again");
            // Without a clash the claim stands.
            let free = Lease { subnet: Some("10.5.2.0/24".parse().unwrap()), ..ours };
            assert!(r.claim(&cfg, &free).await.unwrap());
            assert!(kv.get(&r.lease_key(&free)).await.unwrap().is_some());
        });
    }

    #[test]
    fn follow_hands_out_leases_as_they_come_and_go_and_skips_malformed_ones() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (kv, r) = registry(dir.path()).await;
            let mut f = r.follow();
            assert_eq!(f.next().await, Event::Synced);
            let a = r.acquire(&req("a", "192.168.0.1", 1)).await.unwrap();
            let key = r.lease_key(&a);
            assert_eq!(
                f.next().await,
                Event::Added(key.clone(), Arc::new(a.clone()))
            );
            // A malformed lease is no event; the next good one is.
            kv.put("/coreos.com/network/subnets/10.5.9.0-24", b"{", None, None)
                .await
                .unwrap();
            kv.delete(&key, None).await.unwrap();
            assert_eq!(f.next().await, Event::Deleted(key, Arc::new(a)));
            let b = r.acquire(&req("b", "192.168.0.2", 2)).await.unwrap();
            assert_eq!(f.next().await, Event::Added(r.lease_key(&b), Arc::new(b)));
            assert_eq!(f.stats().counts().refused, 1);
        });
    }
}
