//! Services with externalTrafficPolicy: Local (Kubernetes mode): their
//! external and load-balancer addresses inside the configured
//! serviceExternalIPs / serviceLoadBalancerIPs ranges are announced as /32
//! (/128) only by the nodes running a ready endpoint, so routers send the
//! traffic where kube-proxy keeps the client's address. Followed from
//! Services and EndpointSlices through plexus-store's informers.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use ipnet::IpNet;
use plexus_ipam::BgpConfig;
use plexus_store::kubeservices::{ServiceInfo, SliceInfo};
use plexus_store::{Cache, KubeServices};

use super::services::Services;

/// The host routes this node announces for Local services.
pub fn local_routes(
    services: &[Arc<ServiceInfo>],
    slices: &[Arc<SliceInfo>],
    node: &str,
    cfg: &BgpConfig,
) -> BTreeSet<IpNet> {
    let ranges: Vec<&IpNet> = cfg
        .service_external_ips
        .iter()
        .chain(&cfg.service_load_balancer_ips)
        .collect();
    services
        .iter()
        .filter(|s| s.local)
        .filter(|s| {
            slices
                .iter()
                .any(|e| e.service.as_deref() == Some(&s.key) && e.nodes.iter().any(|n| n == node))
        })
        .flat_map(|s| s.addresses.iter())
        .filter(|a| ranges.iter().any(|r| r.contains(*a)))
        .map(|a| IpNet::from(*a))
        .collect()
}

/// In Kubernetes mode: a client for Services and EndpointSlices.
pub async fn for_store(store: &str, opts: &plexus_store::StoreOptions) -> Option<KubeServices> {
    if store != "kubernetes" {
        return None;
    }
    match KubeServices::connect(opts).await {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes API for Local services: none announced");
            None
        }
    }
}

/// Follows Services and EndpointSlices until dropped, announcing the Local
/// services' host routes through `services`. `cfg` is the BGP config as the
/// routed loop last read it.
pub async fn follow(
    k: KubeServices,
    node: String,
    services: Arc<Services>,
    cfg: Arc<std::sync::Mutex<BgpConfig>>,
) {
    let svc = k.follow_services();
    let sl = k.follow_slices();
    let (svc_cache, sl_cache): (Cache<ServiceInfo>, Cache<SliceInfo>) = (svc.cache(), sl.cache());
    let mut events =
        futures::stream::select(svc.into_stream().map(|_| ()), sl.into_stream().map(|_| ()));
    // Re-judged on every event and every few seconds (a config change of
    // the ranges reaches the loop's copy, not an event here).
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            ev = events.next() => if ev.is_none() { return },
            _ = tick.tick() => {}
        }
        let cfg = cfg.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let want = local_routes(&svc_cache.values(), &sl_cache.values(), &node, &cfg);
        services.set_local(want).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_services_with_an_endpoint_here_inside_the_ranges() {
        let cfg = BgpConfig {
            service_external_ips: vec!["192.0.2.0/24".parse().unwrap()],
            service_load_balancer_ips: vec!["198.51.100.0/24".parse().unwrap()],
            ..Default::default()
        };
        let svc = |key: &str, local: bool, ips: &[&str]| {
            Arc::new(ServiceInfo {
                key: key.into(),
                local,
                addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
            })
        };
        let services = [
            svc(
                "d/web",
                true,
                &["192.0.2.10", "198.51.100.5", "203.0.113.1"],
            ),
            svc("d/cluster", false, &["192.0.2.11"]),
            svc("d/elsewhere", true, &["192.0.2.12"]),
        ];
        let slice = |s: &str, nodes: &[&str]| {
            Arc::new(SliceInfo {
                service: Some(s.into()),
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
            })
        };
        let slices = [
            slice("d/web", &["n1", "n2"]),
            slice("d/cluster", &["n1"]),
            slice("d/elsewhere", &["n2"]),
        ];
        let got: Vec<String> = local_routes(&services, &slices, "n1", &cfg)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["192.0.2.10/32", "198.51.100.5/32"]);
        assert!(local_routes(&services, &slices[1..], "n1", &cfg).is_empty());
    }
}
