//! Running one planned attachment through the runtime library (chains,
//! prevResult, capability filtering, result cache), and ADD-all-or-nothing
//! over a whole plan, sequential or with secondaries in parallel.

use std::path::PathBuf;

use plexus_cni::CniResult;
use plexus_runtime::{Cni, Exec, RuntimeConf};

use crate::error::MetaError;
use crate::plan::{Plan, PlannedAttachment};

/// The inner runtime: its result cache lives under `<cacheDir>/delegates`
/// so delegates' cached results never collide with the outer runtime's.
#[derive(Debug, Clone)]
pub struct Delegates<E: Exec> {
    pub cni: Cni<E>,
    pub container_id: String,
    /// None on DEL when the sandbox is already gone.
    pub netns: Option<PathBuf>,
}

impl<E: Exec> Delegates<E> {
    fn rt(&self, a: &PlannedAttachment) -> RuntimeConf {
        RuntimeConf {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: a.ifname.clone(),
            args: a
                .cni_args
                .iter()
                .map(|[k, v]| (k.clone(), v.clone()))
                .collect(),
            capability_args: a.capability_args.clone(),
        }
    }

    fn wrap(a: &PlannedAttachment, source: plexus_runtime::RuntimeError) -> MetaError {
        MetaError::Delegate {
            network: a.name.clone(),
            ifname: a.ifname.clone(),
            source: Box::new(source),
        }
    }

    pub fn add(&self, a: &PlannedAttachment) -> Result<CniResult, MetaError> {
        let list = a.network_list()?;
        tracing::debug!(network = %a.name, ifname = %a.ifname, "delegate ADD");
        self.cni
            .add_network_list(&list, &self.rt(a))
            .map_err(|e| Self::wrap(a, e))
    }

    pub fn del(&self, a: &PlannedAttachment) -> Result<(), MetaError> {
        let list = a.network_list()?;
        tracing::debug!(network = %a.name, ifname = %a.ifname, "delegate DEL");
        self.cni
            .del_network_list(&list, &self.rt(a))
            .map_err(|e| Self::wrap(a, e))
    }

    pub fn check(&self, a: &PlannedAttachment) -> Result<(), MetaError> {
        let list = a.network_list()?;
        self.cni
            .check_network_list(&list, &self.rt(a))
            .map_err(|e| Self::wrap(a, e))
    }

    /// DEL `attachments` in reverse, past errors; all errors reported.
    pub fn del_all<'a>(
        &self,
        attachments: impl DoubleEndedIterator<Item = &'a PlannedAttachment>,
    ) -> Result<(), MetaError> {
        let errs: Vec<MetaError> = attachments
            .rev()
            .filter_map(|a| self.del(a).err())
            .collect();
        MetaError::collect(errs)
    }

    /// ADD every attachment of `plan`: the cluster network first, then the
    /// others in order or, with `parallel`, all at once (they touch
    /// different interfaces). All or nothing: on a failure every attachment
    /// that was tried (the failed ones too, which may hold half-made
    /// state such as an IPAM lease) is deleted in reverse order, and the
    /// first failure (in plan order) is returned with any rollback failure.
    pub fn add_all(&self, plan: &Plan, parallel: bool) -> Result<Vec<CniResult>, AddFailure> {
        let atts = &plan.attachments;
        let mut results: Vec<Option<Result<CniResult, MetaError>>> =
            (0..atts.len()).map(|_| None).collect();
        let split = if parallel {
            1.min(atts.len())
        } else {
            atts.len()
        };
        for (i, a) in atts[..split].iter().enumerate() {
            let r = self.add(a);
            let failed = r.is_err();
            results[i] = Some(r);
            if failed {
                break;
            }
        }
        let head_ok = results[..split].iter().all(|r| matches!(r, Some(Ok(_))));
        if head_ok && split < atts.len() {
            let tail: Vec<Result<CniResult, MetaError>> = std::thread::scope(|s| {
                let handles: Vec<_> = atts[split..]
                    .iter()
                    .map(|a| s.spawn(move || self.add(a)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            for (i, r) in tail.into_iter().enumerate() {
                results[split + i] = Some(r);
            }
        }
        if results.iter().all(|r| matches!(r, Some(Ok(_)))) {
            return Ok(results.into_iter().flatten().flatten().collect());
        }
        let tried: Vec<&PlannedAttachment> = atts
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_some())
            .map(|(a, _)| a)
            .collect();
        let error = results
            .into_iter()
            .flatten()
            .find_map(Result::err)
            .expect("a failure exists");
        let rollback = self.del_all(tried.into_iter());
        Err(AddFailure {
            error,
            rollback: rollback.err(),
        })
    }
}

/// A failed ADD: the original error, and what the rollback could not undo.
#[derive(Debug)]
pub struct AddFailure {
    pub error: MetaError,
    pub rollback: Option<MetaError>,
}
