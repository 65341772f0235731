//! The pod's addresses: from the node agent's blocks over its socket (the
//! default), or from an IPAM plugin (`ipam`). Either way the pod gets each
//! address alone (`/32`, `/128`): it reaches everything through the node.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use plexus_agent_api::{
    call, Allocation, AttachmentKey, ClientError, GcDone, Released, Request, Status,
    DEFAULT_TIMEOUT,
};
use plexus_cni::error::plexus_codes;
use plexus_cni::plugin::Request as CniRequest;
use plexus_cni::{CniError, Dns, ErrorCode};
use plexus_runtime::delegate;

use crate::config::{AddrSource, RoutedConf};

/// What ADD got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Each address with the prefix length the pod gets.
    pub ips: Vec<IpNet>,
    /// Routed pools the agent named (empty from an IPAM plugin: the
    /// config's subnets stand in, see `RoutedConf::pool_cidrs`).
    pub pools: Vec<IpNet>,
    pub dns: Dns,
    /// The agent's MTU for the pod (IP-in-IP pools), unless the config has one.
    pub mtu: Option<u32>,
}

/// An IPAM plugin's address as the pod gets it: alone.
pub fn host_net(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

/// Allocates, before anything is created: a refusal leaves nothing behind.
pub fn allocate(conf: &RoutedConf, req: &CniRequest) -> Result<Addresses, CniError> {
    let out = match &conf.source {
        AddrSource::Ipam(t) => {
            let r = delegate::add(t, req.stdin, req.env)?;
            Addresses {
                ips: r.ips.iter().map(|i| host_net(i.address.addr())).collect(),
                pools: Vec::new(),
                dns: r.dns,
                mtu: None,
            }
        }
        AddrSource::Agent { socket } => {
            let a: Allocation = call(
                socket,
                &Request::Allocate {
                    network: conf.network.clone(),
                    container_id: req.env.container_id.clone(),
                    ifname: req.env.ifname.clone(),
                    pool: conf.pool.clone(),
                    addresses: conf.requested_ips.clone(),
                },
                DEFAULT_TIMEOUT,
            )
            .map_err(|e| agent_err(socket, e, "allocate addresses"))?;
            let net = |c: &plexus_agent_api::Cidr| {
                IpNet::new(c.addr, c.prefix_len).map_err(|_| {
                    CniError::plugin(
                        plexus_codes::DELEGATE_FAILED,
                        format!(
                            "the node agent at {} answered with {c}, not an address",
                            socket.display()
                        ),
                    )
                })
            };
            let ips = a.addresses.iter().map(net).collect::<Result<Vec<_>, _>>();
            let pools = a.pools.iter().map(net).collect::<Result<Vec<_>, _>>();
            match (ips, pools) {
                (Ok(ips), Ok(pools)) => Addresses {
                    ips,
                    pools: pools.into_iter().map(|p| p.trunc()).collect(),
                    dns: Dns::default(),
                    mtu: a.mtu,
                },
                (Err(e), _) | (_, Err(e)) => {
                    release_best_effort(conf, req);
                    return Err(e);
                }
            }
        }
    };
    if out.ips.is_empty() {
        // Release what the call may hold before failing.
        release_best_effort(conf, req);
        return Err(CniError::plugin(
            plexus_codes::DELEGATE_FAILED,
            format!("{} returned no address", source_name(conf)),
        ));
    }
    Ok(out)
}

/// Frees what the attachment holds (DEL); nothing held is success.
pub fn release(conf: &RoutedConf, req: &CniRequest) -> Result<(), CniError> {
    match &conf.source {
        AddrSource::Ipam(t) => delegate::del(t, req.stdin, req.env),
        AddrSource::Agent { socket } => call::<Released>(
            socket,
            &Request::Release {
                network: conf.network.clone(),
                container_id: req.env.container_id.clone(),
                ifname: req.env.ifname.clone(),
            },
            DEFAULT_TIMEOUT,
        )
        .map(|r| tracing::debug!(released = r.released, "agent released addresses"))
        .map_err(|e| agent_err(socket, e, "release addresses")),
    }
}

/// After a failed ADD: release, and only log a failure (the ADD's own
/// error is the one to report).
pub fn release_best_effort(conf: &RoutedConf, req: &CniRequest) {
    if let Err(e) = release(conf, req) {
        tracing::warn!("releasing the addresses after a failed ADD: {e}");
    }
}

/// CNI GC: the IPAM plugin's, or the agent's for this network.
pub fn gc(conf: &RoutedConf, req: &CniRequest) -> Result<(), CniError> {
    match &conf.source {
        AddrSource::Ipam(t) => delegate::gc(t, req.stdin, req.env),
        AddrSource::Agent { socket } => {
            let valid = req
                .conf
                .valid_attachments()?
                .into_iter()
                .map(|a| AttachmentKey {
                    container_id: a.container_id,
                    ifname: a.ifname,
                })
                .collect();
            let r: GcDone = call(
                socket,
                &Request::Gc {
                    network: conf.network.clone(),
                    valid,
                },
                DEFAULT_TIMEOUT,
            )
            .map_err(|e| agent_err(socket, e, "collect stale addresses"))?;
            tracing::debug!(released = r.released, "agent GC");
            Ok(())
        }
    }
}

/// CNI STATUS: can an ADD get addresses now? The agent must answer and be
/// ready; otherwise code 50 (the spec's "cannot service ADD").
pub fn status(conf: &RoutedConf, req: &CniRequest) -> Result<(), CniError> {
    match &conf.source {
        AddrSource::Ipam(t) => delegate::status(t, req.stdin, req.env),
        AddrSource::Agent { socket } => {
            let unavailable = |msg: String| CniError::new(ErrorCode::PluginNotAvailable, msg);
            let s: Status = call(socket, &Request::Status, DEFAULT_TIMEOUT)
                .map_err(|e| unavailable(e.to_string()))?;
            if s.ready {
                Ok(())
            } else {
                Err(unavailable(format!(
                    "the node agent at {} is not ready yet",
                    socket.display()
                )))
            }
        }
    }
}

/// CNI CHECK of the allocation: the IPAM plugin's own CHECK (the agent
/// keeps its allocations across restarts; nothing to ask it).
pub fn check(conf: &RoutedConf, req: &CniRequest) -> Result<(), CniError> {
    match &conf.source {
        AddrSource::Ipam(t) => delegate::check(t, req.stdin, req.env),
        AddrSource::Agent { .. } => Ok(()),
    }
}

fn source_name(conf: &RoutedConf) -> String {
    match &conf.source {
        AddrSource::Ipam(t) => format!("IPAM plugin {t}"),
        AddrSource::Agent { socket } => format!("the node agent at {}", socket.display()),
    }
}

/// An agent failure as a CNI error: not there or not answering is code 11
/// (try again later), the agent's own refusal carries its code.
fn agent_err(socket: &Path, e: ClientError, what: &str) -> CniError {
    match e {
        e if e.is_unavailable() => CniError::new(
            ErrorCode::TryAgainLater,
            format!("cannot {what}: {e}"),
        )
        .with_details(format!(
            "plexusd serves the node's address blocks on {}; start it, or set \"ipam\" to use an IPAM plugin",
            socket.display()
        )),
        ClientError::Agent(a) => CniError::plugin(
            a.code.unwrap_or(plexus_codes::DELEGATE_FAILED),
            format!("cannot {what}: the node agent refused: {}", a.error),
        ),
        e => CniError::plugin(plexus_codes::DELEGATE_FAILED, format!("cannot {what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_agent_api::AgentError;
    use std::time::Duration;

    #[test]
    fn agent_failures_get_their_codes() {
        let s = Path::new("/run/plexus/plexusd.sock");
        let gone = ClientError::Unavailable {
            socket: s.into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let e = agent_err(s, gone, "allocate addresses");
        assert_eq!(e.code, 11);
        assert!(e.msg.contains("/run/plexus/plexusd.sock"), "{e}");
        let slow = ClientError::Timeout {
            socket: s.into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(agent_err(s, slow, "x").code, 11);
        let full = ClientError::Agent(AgentError {
            error: "pool exhausted".into(),
            code: Some(102),
        });
        assert_eq!(agent_err(s, full, "x").code, 102);
        let broken = ClientError::Agent(AgentError {
            error: "store error".into(),
            code: None,
        });
        assert_eq!(
            agent_err(s, broken, "x").code,
            plexus_codes::DELEGATE_FAILED
        );
    }

    #[test]
    fn addresses_are_alone() {
        assert_eq!(
            host_net("10.1.2.3".parse().unwrap()).to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            host_net("fd00::3".parse().unwrap()).to_string(),
            "fd00::3/128"
        );
    }
}
