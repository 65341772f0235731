//! ADD, DEL, CHECK, STATUS and GC: each one request to the agent.

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_agent_api::{
    AttachmentKey, ClusterAllocate, ClusterAllocation, ClusterCheck, ClusterGc, ClusterRelease,
    GcDone, Released, Request as AgentRequest, Status,
};
use plexus_cni::error::plexus_codes;
use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, ErrorCode, IpConfig};

use crate::agent::ask;
use crate::config::{socket_lenient, IpamConf};

#[derive(Debug)]
pub struct ClusterIpam;

fn net(c: &plexus_agent_api::Cidr) -> Result<IpNet, CniError> {
    IpNet::new(c.addr, c.prefix_len).map_err(|_| {
        CniError::plugin(
            plexus_codes::DELEGATE_FAILED,
            format!("the node agent answered with {c}, not an address"),
        )
    })
}

impl Plugin for ClusterIpam {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let c = IpamConf::load(req.conf, &req.env.args)?;
        let a: ClusterAllocation = ask(
            &c.socket,
            &AgentRequest::ClusterIpamAllocate(ClusterAllocate {
                network: req.conf.name.clone(),
                container_id: req.env.container_id.clone(),
                ifname: req.env.ifname.clone(),
                network_name: c.network_name.clone(),
                overlapping: c.overlapping,
                ranges: c.ranges.clone(),
                requested: c.requested.clone(),
                pod: c.pod.clone(),
                block_size_v4: c.block_size_v4,
                block_size_v6: c.block_size_v6,
            }),
            "allocate addresses",
        )?;
        let ips = a
            .ips
            .iter()
            .map(|i| {
                Ok(IpConfig {
                    address: net(&i.address)?,
                    gateway: i.gateway,
                    interface: None,
                })
            })
            .collect::<Result<Vec<_>, CniError>>();
        let ips = match ips {
            Ok(ips) if ips.len() == c.ranges.len() => ips,
            Ok(ips) => {
                self.release_best_effort(req);
                return Err(CniError::plugin(
                    plexus_codes::DELEGATE_FAILED,
                    format!(
                        "the node agent gave {} address(es) for {} range(s)",
                        ips.len(),
                        c.ranges.len()
                    ),
                ));
            }
            Err(e) => {
                self.release_best_effort(req);
                return Err(e);
            }
        };
        Ok(CniResult {
            ips,
            routes: c.routes,
            dns: c.dns,
            ..Default::default()
        })
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        // Whatever config ADD had: only the socket is needed, and a DEL
        // with nothing held succeeds.
        let r: Released = ask(
            &socket_lenient(req.conf),
            &AgentRequest::ClusterIpamRelease(ClusterRelease {
                network: req.conf.name.clone(),
                container_id: req.env.container_id.clone(),
                ifname: req.env.ifname.clone(),
            }),
            "release addresses",
        )?;
        tracing::debug!(released = r.released, "released");
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let c = IpamConf::load(req.conf, &req.env.args)?;
        let held: ClusterAllocation = ask(
            &c.socket,
            &AgentRequest::ClusterIpamCheck(ClusterCheck {
                network: req.conf.name.clone(),
                container_id: req.env.container_id.clone(),
                ifname: req.env.ifname.clone(),
            }),
            "check the attachment's addresses",
        )?;
        let held: Vec<IpAddr> = held.ips.iter().map(|i| i.address.addr).collect();
        for r in &c.ranges {
            let found = held.iter().find(|a| {
                IpNet::new(r.range.addr, r.range.prefix_len).is_ok_and(|n| n.contains(*a))
            });
            let Some(a) = found else {
                return Err(CniError::new(
                    ErrorCode::UnknownContainer,
                    format!(
                        "the store holds no address of range {} for container {} interface {}",
                        r.range, req.env.container_id, req.env.ifname
                    ),
                ));
            };
            if let Some(prev) = &req.conf.prev_result {
                if !prev.ips.iter().any(|i| i.address.addr() == *a) {
                    return Err(CniError::new(
                        ErrorCode::UnknownContainer,
                        format!("prevResult lacks {a}, which the store holds for this attachment"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let socket = socket_lenient(req.conf);
        let unavailable = |msg: String| CniError::new(ErrorCode::PluginNotAvailable, msg);
        let s: Status = plexus_agent_api::call(
            &socket,
            &AgentRequest::Status,
            plexus_agent_api::DEFAULT_TIMEOUT,
        )
        .map_err(|e| unavailable(e.to_string()))?;
        // Cluster IPAM is served as soon as the agent has its store, even
        // while the node's networks wait for theirs.
        let serving = s.rest.get("cluster_ipam").and_then(|v| v.as_bool()) == Some(true);
        if !s.ready && !serving {
            return Err(unavailable(format!(
                "the node agent at {} does not serve cluster IPAM yet",
                socket.display()
            )));
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let valid = req
            .conf
            .valid_attachments()?
            .into_iter()
            .map(|a| AttachmentKey {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect();
        let r: GcDone = ask(
            &socket_lenient(req.conf),
            &AgentRequest::ClusterIpamGc(ClusterGc {
                network: req.conf.name.clone(),
                valid,
            }),
            "collect stale addresses",
        )?;
        tracing::debug!(released = r.released, "GC");
        Ok(())
    }
}

impl ClusterIpam {
    /// After a failed ADD: release, logging a failure (the ADD's error is
    /// the one to report).
    fn release_best_effort(&self, req: &Request) {
        if let Err(e) = self.del(req) {
            tracing::warn!("releasing after a failed ADD: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::plugin::dispatch;
    use serde_json::{json, Value};

    fn env(cmd: &str, run_dir: &str) -> (Vec<(String, String)>, Vec<u8>) {
        let vars = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let conf = json!({"cniVersion": "0.3.0", "name": "n", "type": "macvlan",
            "ipam": {"type": "plexus-cluster-ipam", "range": "10.0.0.0/24", "runDir": run_dir}});
        (vars, serde_json::to_vec(&conf).unwrap())
    }

    #[test]
    fn an_absent_agent_is_code_11_for_add_and_del() {
        // A run directory no agent listens in.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().display().to_string();
        for cmd in ["ADD", "DEL"] {
            let (vars, stdin) = env(cmd, &dir);
            let o = dispatch(&ClusterIpam, vars, &stdin);
            assert_eq!(o.exit_code, 1, "{cmd}: {}", o.stdout);
            let e: Value = serde_json::from_str(&o.stdout).unwrap();
            assert_eq!(e["code"], 11, "{cmd}: {e}");
            assert_eq!(e["cniVersion"], "0.3.0");
        }
        let (vars, stdin) = env("VERSION", &dir);
        let o = dispatch(&ClusterIpam, vars, &stdin);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
