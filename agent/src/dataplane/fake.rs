//! An in-memory kernel for the unit tests of the data plane and of every
//! producer: one map of every object "in the kernel" (ours and anyone
//! else's), with the kernel's rules that matter here: a route is created
//! only where no route sits at its key (EEXIST), listing returns only what
//! the claims make ours. Tests change it by hand as an operator would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::claims::Claims;
use super::diff::Op;
use super::entry::{Entry, Key, Kind};
use super::kernel::{Failure, Kernel};

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<Key, Entry>,
    fail: bool,
    /// Every op applied, in order.
    applied: Vec<Op>,
    lists: usize,
    /// Calls of `apply` that carried changes.
    calls: usize,
}

/// Cheap to clone: clones share the kernel, so a test keeps one while the
/// data plane owns another.
#[derive(Debug, Clone, Default)]
pub struct FakeKernel(Arc<Mutex<State>>);

impl FakeKernel {
    fn st(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the kernel holds at `key` (ours or not).
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.st().objects.get(key).cloned()
    }

    /// Everything of one kind.
    pub fn of_kind(&self, kind: Kind) -> Vec<Entry> {
        self.st()
            .objects
            .values()
            .filter(|e| e.kind() == kind)
            .cloned()
            .collect()
    }

    /// An object written by someone else (or by a previous run).
    pub fn put(&self, e: Entry) {
        self.st().objects.insert(e.key(), e);
    }

    /// An object deleted by hand.
    pub fn delete(&self, key: &Key) -> Option<Entry> {
        self.st().objects.remove(key)
    }

    /// While on, every change fails.
    pub fn fail(&self, on: bool) {
        self.st().fail = on;
    }

    /// How many ops were applied so far.
    pub fn applied(&self) -> usize {
        self.st().applied.len()
    }

    /// The ops applied so far.
    pub fn history(&self) -> Vec<Op> {
        self.st().applied.clone()
    }

    pub fn lists(&self) -> usize {
        self.st().lists
    }

    /// How many times the data plane applied changes (one batch each).
    pub fn apply_calls(&self) -> usize {
        self.st().calls
    }
}

fn ours(e: &Entry, claims: &Claims) -> bool {
    match e {
        Entry::Link(l) => claims.links.contains(l.name()),
        Entry::Addr { dev, .. } | Entry::Neigh { dev, .. } | Entry::Fdb { dev, .. } => {
            claims.links.contains(dev)
        }
        Entry::Route(r) => {
            let hop = r.hops.first();
            claims.owns_route(
                &r.dst,
                r.proto,
                r.metric,
                hop.and_then(|h| h.gateway),
                hop.and_then(|h| h.dev.as_deref()),
            )
        }
        Entry::Chain(c) => claims.chains.contains(&c.name),
        Entry::Table(t) => claims.tables.contains(&(t.netns.clone(), t.name.clone())),
    }
}

#[async_trait::async_trait]
impl Kernel for FakeKernel {
    async fn list(&mut self, kinds: &[Kind], claims: &Claims) -> anyhow::Result<Vec<Entry>> {
        let mut st = self.st();
        st.lists += 1;
        Ok(st
            .objects
            .values()
            .filter(|e| kinds.contains(&e.kind()) && ours(e, claims))
            .cloned()
            .collect())
    }

    async fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), Failure>> {
        let mut st = self.st();
        if !ops.is_empty() {
            st.calls += 1;
        }
        let mut out = Vec::new();
        for op in ops {
            if st.fail {
                out.push(Err(Failure::new("the fake kernel fails everything")));
                continue;
            }
            let r = match op {
                Op::Put { entry, replace } => {
                    let k = entry.key();
                    if !replace && matches!(entry, Entry::Route(_)) && st.objects.contains_key(&k) {
                        Err(Failure {
                            why: "File exists (os error 17)".into(),
                            not_ours: true,
                        })
                    } else {
                        st.objects.insert(k, entry.clone());
                        Ok(())
                    }
                }
                Op::Del(e) => {
                    st.objects.remove(&e.key());
                    Ok(())
                }
            };
            if r.is_ok() {
                st.applied.push(op.clone());
            }
            out.push(r);
        }
        out
    }
}
