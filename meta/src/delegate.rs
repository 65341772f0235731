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

    /// DEL `attachments` in reverse, past errors; all errors reported,
    /// except those of attachments whose own ADD failed
    /// ([`PlannedAttachment::add_failed`]), which are logged.
    pub fn del_all<'a>(
        &self,
        attachments: impl DoubleEndedIterator<Item = &'a PlannedAttachment>,
    ) -> Result<(), MetaError> {
        let errs: Vec<MetaError> = attachments
            .rev()
            .filter_map(|a| match self.del(a) {
                Err(e) if a.add_failed => {
                    tracing::warn!(network = %a.name, ifname = %a.ifname,
                        "DEL of a delegate whose ADD failed also failed (ignored): {e}");
                    None
                }
                r => r.err(),
            })
            .collect();
        MetaError::collect(errs)
    }

    /// ADD every attachment of `plan`: the cluster network first, then the
    /// others in order or, with `parallel`, all at once (they touch
    /// different interfaces). All or nothing: on a failure every attachment
    /// that was tried (the failed ones too, which may hold half-made
    /// state such as an IPAM lease) is deleted in reverse order, and the
    /// first failure (in plan order) is returned with any rollback failure.
    /// A failed attachment's own DEL failing does not fail the rollback (see
    /// [`PlannedAttachment::add_failed`]).
    pub fn add_all(&self, plan: &Plan, parallel: bool) -> Result<Vec<CniResult>, Box<AddFailure>> {
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
        let tried: Vec<PlannedAttachment> = atts
            .iter()
            .zip(&results)
            .filter_map(|(a, r)| {
                let mut a = a.clone();
                a.add_failed = r.as_ref()?.is_err();
                Some(a)
            })
            .collect();
        let error = results
            .into_iter()
            .flatten()
            .find_map(Result::err)
            .expect("a failure exists");
        let rollback = self.del_all(tried.iter());
        Err(Box::new(AddFailure {
            error,
            rollback: rollback.err(),
            tried,
        }))
    }
}

/// A failed ADD: the original error, and what the rollback could not undo.
#[derive(Debug)]
pub struct AddFailure {
    pub error: MetaError,
    pub rollback: Option<MetaError>,
    /// The attachments that were tried, in plan order, with `add_failed`
    /// set on those that failed: what a later DEL still has to undo.
    pub tried: Vec<PlannedAttachment>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::PLAN_KIND;
    use plexus_runtime::RuntimeError;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// The value of `k` in a plugin's environment, for fake executors.
    pub(crate) fn env_var(env: &[(String, String)], k: &str) -> String {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Records (command, ifname) and fails ADD for networks named "bad*".
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Vec<(String, String)>>>);

    impl Exec for Fake {
        fn run(
            &self,
            _plugin: &Path,
            env: &[(String, String)],
            stdin: &[u8],
        ) -> Result<Vec<u8>, RuntimeError> {
            let cmd = env_var(env, "CNI_COMMAND");
            let ifname = env_var(env, "CNI_IFNAME");
            self.0.lock().unwrap().push((cmd.clone(), ifname.clone()));
            let conf: serde_json::Value = serde_json::from_slice(stdin).unwrap();
            let name = conf["name"].as_str().unwrap();
            if (cmd == "ADD" && name.starts_with("bad")) || name.starts_with("broken") {
                return Err(RuntimeError::Plugin {
                    plugin: "fake".into(),
                    error: plexus_cni::CniError::plugin(120, "boom"),
                });
            }
            Ok(format!(
                r#"{{"cniVersion":"1.0.0","interfaces":[{{"name":"{ifname}","sandbox":"/x"}}],"ips":[{{"address":"10.0.0.2/24","interface":0}}]}}"#
            )
            .into_bytes())
        }
        fn find(&self, t: &str, _: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
            Ok(PathBuf::from(t))
        }
    }

    fn plan(nets: &[&str]) -> Plan {
        Plan {
            kind: PLAN_KIND.into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: String::new(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
            attachments: nets
                .iter()
                .enumerate()
                .map(|(i, n)| PlannedAttachment {
                    name: n.to_string(),
                    ifname: if i == 0 { "eth0".into() } else { format!("net{i}") },
                    master: i == 0,
                    config: serde_json::json!({"cniVersion":"1.0.0","name":n,"plugins":[{"type":"fake"}]}),
                    cni_args: vec![],
                    capability_args: Default::default(),
                    request: None,
                    add_failed: false,
                })
                .collect(),
        }
    }

    fn delegates(dir: &Path, fake: &Fake) -> Delegates<Fake> {
        Delegates {
            cni: Cni::with_exec(vec![], dir, fake.clone()),
            container_id: "c1".into(),
            netns: Some("/x".into()),
        }
    }

    fn calls(f: &Fake) -> Vec<String> {
        f.0.lock()
            .unwrap()
            .iter()
            .map(|(c, i)| format!("{c} {i}"))
            .collect()
    }

    #[test]
    fn sequential_rollback_deletes_in_reverse_including_the_failed() {
        let d = tempfile::tempdir().unwrap();
        let fake = Fake::default();
        let err = delegates(d.path(), &fake)
            .add_all(&plan(&["a", "b", "bad", "never"]), false)
            .unwrap_err();
        assert!(err.rollback.is_none());
        assert!(err.error.to_string().contains("\"bad\" on net2"));
        assert_eq!(err.error.to_cni().code, 120);
        assert_eq!(
            calls(&fake),
            ["ADD eth0", "ADD net1", "ADD net2", "DEL net2", "DEL net1", "DEL eth0"]
        );
    }

    #[test]
    fn a_delegate_failing_every_command_does_not_fail_the_rollback() {
        let d = tempfile::tempdir().unwrap();
        let fake = Fake::default();
        let err = delegates(d.path(), &fake)
            .add_all(&plan(&["a", "broken", "never"]), false)
            .unwrap_err();
        assert!(err.rollback.is_none(), "{:?}", err.rollback);
        assert_eq!(
            calls(&fake),
            ["ADD eth0", "ADD net1", "DEL net1", "DEL eth0"]
        );
        let flags: Vec<(&str, bool)> = err
            .tried
            .iter()
            .map(|a| (a.name.as_str(), a.add_failed))
            .collect();
        assert_eq!(flags, [("a", false), ("broken", true)]);
    }

    #[test]
    fn parallel_adds_all_and_rolls_back_all() {
        let d = tempfile::tempdir().unwrap();
        let fake = Fake::default();
        let ok = delegates(d.path(), &fake)
            .add_all(&plan(&["a", "b", "c"]), true)
            .unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[2].interfaces[0].name, "net2");
        assert_eq!(calls(&fake)[0], "ADD eth0");

        let fake = Fake::default();
        let err = delegates(d.path(), &fake)
            .add_all(&plan(&["x", "bad", "y"]), true)
            .unwrap_err();
        assert!(err.error.to_string().contains("\"bad\""));
        let c = calls(&fake);
        assert_eq!(c.len(), 6, "{c:?}");
        assert_eq!(&c[3..], ["DEL net2", "DEL net1", "DEL eth0"]);

        // A failing cluster network stops before any secondary runs.
        let fake = Fake::default();
        delegates(d.path(), &fake)
            .add_all(&plan(&["bad", "y"]), true)
            .unwrap_err();
        assert_eq!(calls(&fake), ["ADD eth0", "DEL eth0"]);
    }
}
