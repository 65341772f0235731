//! What the Kubernetes-mode reconciler releases: addresses whose owning
//! pod no longer exists, judged by the pod's UID, never by its name.
//!
//! A StatefulSet's pod is deleted and created again under the same name,
//! often on another node, while the old one's address may still be held:
//! judging by name would keep the old address forever (the name exists) or,
//! worse, release the new pod's address when the old one's record is found
//! missing. Whereabouts' reconciler did the latter. A UID is never reused,
//! so "no pod with this UID exists" is final.
//!
//! [`Reconciler::decide`] is pure: given the addresses held, the pod UIDs
//! the informer has seen (and whether its cache is a complete list), and
//! the time, it says which holders have been missing for the grace period.
//! The caller confirms each with a direct read of the pod before releasing
//! it (the cache may lag), and releases only the exact holder seen.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::records::Holder;

/// An address held, as the reconciler tracks it.
pub type Held = (IpAddr, Holder);

/// The reconciler's memory: since when each holder's pod has been missing.
#[derive(Debug, Clone)]
pub struct Reconciler {
    /// How long a pod must be seen missing before its address goes: covers
    /// an informer that lags behind the API (a pod created just before its
    /// CNI ADD), and a pod deleted while its DEL is still coming.
    pub grace: Duration,
    missing: BTreeMap<Held, Instant>,
}

impl Reconciler {
    pub fn new(grace: Duration) -> Reconciler {
        Reconciler {
            grace,
            missing: BTreeMap::new(),
        }
    }

    /// How many holders are being watched as missing (for logs, metrics).
    pub fn pending(&self) -> usize {
        self.missing.len()
    }

    /// The holders to release now: those with a pod UID that is not among
    /// `pods` and has not been since at least `grace` before `now`.
    ///
    /// - With `synced` false (the informer has not listed yet, or is
    ///   relisting) the cache proves nothing: nothing is released and no
    ///   new missing holder is recorded (the clocks already running keep
    ///   running: a relist does not restart them).
    /// - A holder without a pod UID (a runtime that passed no
    ///   `K8S_POD_UID`) is never judged here: CNI GC and node removal free
    ///   those.
    /// - A holder whose UID is seen again is forgotten (its clock stops).
    /// - Holders no longer held are forgotten.
    pub fn decide(
        &mut self,
        held: &[Held],
        pods: &HashSet<String>,
        synced: bool,
        now: Instant,
    ) -> Vec<Held> {
        let current: HashSet<&Held> = held.iter().collect();
        self.missing.retain(|h, _| current.contains(h));
        let mut out = Vec::new();
        for h in held {
            let uid = &h.1.pod_uid;
            if uid.is_empty() || pods.contains(uid) {
                self.missing.remove(h);
                continue;
            }
            let since = match self.missing.get(h) {
                Some(t) => *t,
                None if synced => {
                    self.missing.insert(h.clone(), now);
                    now
                }
                None => continue,
            };
            if synced && now.saturating_duration_since(since) >= self.grace {
                out.push(h.clone());
            }
        }
        out
    }

    /// A holder's pod turned out to exist after all (the direct read found
    /// it): its clock starts again from scratch next time.
    pub fn exists(&mut self, h: &Held) {
        self.missing.remove(h);
    }

    /// A holder was released (or found gone): forget it.
    pub fn released(&mut self, h: &Held) {
        self.missing.remove(h);
    }
}

/// What a direct read of the holder's pod says (`namespace/name` as the
/// runtime gave them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodNow {
    /// No pod of that name.
    Absent,
    /// A pod of that name, with this UID.
    Uid(String),
    /// The holder names no pod (no namespace or name): only the UID cache
    /// can judge it.
    Unnamed,
}

/// Whether a holder the grace period condemned may be released, given a
/// direct read of its pod: yes unless the pod of that name is the same pod
/// (its UID). A pod of that name with another UID is a new pod (the
/// StatefulSet case): the old holder goes, the new pod's address is not
/// this holder's.
pub fn confirm(h: &Holder, now: &PodNow) -> bool {
    match now {
        PodNow::Absent | PodNow::Unnamed => true,
        PodNow::Uid(uid) => *uid != h.pod_uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(cid: &str, uid: &str) -> Held {
        (
            format!("10.1.0.{}", cid.len()).parse().unwrap(),
            Holder {
                node: "n1".into(),
                network: "net".into(),
                container_id: cid.into(),
                ifname: "net1".into(),
                range: "10.1.0.0/24".parse().unwrap(),
                pod_namespace: "ns".into(),
                pod_name: "web-0".into(),
                pod_uid: uid.into(),
            },
        )
    }

    fn uids(u: &[&str]) -> HashSet<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn a_missing_pod_is_released_only_after_the_grace_period() {
        let mut r = Reconciler::new(GRACE);
        let t0 = Instant::now();
        let held = vec![holder("a", "uid-a"), holder("bb", "uid-b")];
        let pods = uids(&["uid-b"]);
        assert!(r.decide(&held, &pods, true, t0).is_empty());
        assert_eq!(r.pending(), 1);
        assert!(r
            .decide(&held, &pods, true, t0 + GRACE - Duration::from_secs(1))
            .is_empty());
        assert_eq!(
            r.decide(&held, &pods, true, t0 + GRACE),
            vec![held[0].clone()]
        );
    }

    #[test]
    fn a_pod_that_exists_is_never_released_however_long() {
        let mut r = Reconciler::new(GRACE);
        let t0 = Instant::now();
        let held = vec![holder("a", "uid-a")];
        for i in 0..10 {
            let out = r.decide(&held, &uids(&["uid-a"]), true, t0 + GRACE * i);
            assert!(out.is_empty());
        }
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn the_statefulset_case_goes_by_uid_not_by_name() {
        // web-0 (uid-old) deleted, web-0 re-created as uid-new on another
        // node: the old holder goes, the new one (same name) stays.
        let mut r = Reconciler::new(GRACE);
        let t0 = Instant::now();
        let old = holder("a", "uid-old");
        let new = holder("bb", "uid-new");
        let held = vec![old.clone(), new.clone()];
        let pods = uids(&["uid-new"]);
        r.decide(&held, &pods, true, t0);
        assert_eq!(r.decide(&held, &pods, true, t0 + GRACE), vec![old.clone()]);
        // The direct read finds web-0 with the new UID: the old holder may
        // go; the new one would not.
        let now = PodNow::Uid("uid-new".into());
        assert!(confirm(&old.1, &now));
        assert!(!confirm(&new.1, &now));
        assert!(confirm(&old.1, &PodNow::Absent));
    }

    #[test]
    fn an_unsynced_cache_proves_nothing() {
        let mut r = Reconciler::new(GRACE);
        let t0 = Instant::now();
        let held = vec![holder("a", "uid-a")];
        // Before the first list: no clock starts, nothing goes.
        assert!(r.decide(&held, &uids(&[]), false, t0).is_empty());
        assert!(r
            .decide(&held, &uids(&[]), false, t0 + GRACE * 5)
            .is_empty());
        assert_eq!(r.pending(), 0);
        // Listed: the clock starts now, not at t0.
        let t1 = t0 + GRACE * 5;
        assert!(r.decide(&held, &uids(&[]), true, t1).is_empty());
        // A relist under way does not release even a condemned holder.
        assert!(r.decide(&held, &uids(&[]), false, t1 + GRACE).is_empty());
        assert_eq!(r.pending(), 1);
        assert_eq!(r.decide(&held, &uids(&[]), true, t1 + GRACE).len(), 1);
    }

    #[test]
    fn a_pod_seen_again_restarts_its_clock_and_unheld_ones_are_forgotten() {
        let mut r = Reconciler::new(GRACE);
        let t0 = Instant::now();
        let held = vec![holder("a", "uid-a")];
        r.decide(&held, &uids(&[]), true, t0);
        // Seen again (a lagging informer caught up).
        r.decide(&held, &uids(&["uid-a"]), true, t0 + GRACE / 2);
        assert!(r.decide(&held, &uids(&[]), true, t0 + GRACE).is_empty());
        assert_eq!(r.decide(&held, &uids(&[]), true, t0 + GRACE * 2).len(), 1);
        // Released by its DEL meanwhile: forgotten.
        r.decide(&[], &uids(&[]), true, t0 + GRACE * 2);
        assert_eq!(r.pending(), 0);
        // The direct read found it: the clock starts over.
        r.decide(&held, &uids(&[]), true, t0 + GRACE * 3);
        r.exists(&held[0]);
        assert!(r.decide(&held, &uids(&[]), true, t0 + GRACE * 4).is_empty());
    }

    #[test]
    fn holders_without_a_pod_uid_are_left_alone() {
        let mut r = Reconciler::new(Duration::ZERO);
        let held = vec![holder("a", "")];
        assert!(r.decide(&held, &uids(&[]), true, Instant::now()).is_empty());
        assert_eq!(r.pending(), 0);
    }
}
