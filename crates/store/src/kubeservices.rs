//! [`KubeServices`]: Services and EndpointSlices as the routed network's
//! service advertisement needs them (a Service with externalTrafficPolicy
//! Local is announced as /32 only from nodes running an endpoint).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ApiResource;
use serde_json::Value;

use crate::informer::{Informer, KubeSource};
use crate::{kubeclient, StoreError, StoreOptions};

/// What a Service says about where its external addresses are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `namespace/name`.
    pub key: String,
    /// externalTrafficPolicy: Local.
    pub local: bool,
    /// spec.externalIPs and status.loadBalancer.ingress[].ip.
    pub addresses: Vec<IpAddr>,
}

/// The nodes an EndpointSlice has ready endpoints on, for its Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// The Service's `namespace/name` (label kubernetes.io/service-name).
    pub service: Option<String>,
    pub nodes: Vec<String>,
}

#[derive(Clone)]
pub struct KubeServices {
    client: kube::Client,
}

impl std::fmt::Debug for KubeServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeServices")
    }
}

fn ips(v: Option<&Value>) -> impl Iterator<Item = IpAddr> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str()?.parse().ok())
}

/// A Service object's JSON (spec and status) as [`ServiceInfo`].
pub fn service_info(namespace: &str, name: &str, data: &Value) -> ServiceInfo {
    let spec = data.get("spec");
    let local = spec
        .and_then(|s| s.get("externalTrafficPolicy"))
        .and_then(Value::as_str)
        == Some("Local");
    let mut addresses: Vec<IpAddr> = ips(spec.and_then(|s| s.get("externalIPs"))).collect();
    let ingress = data
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array);
    addresses.extend(
        ingress
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("ip")?.as_str()?.parse::<IpAddr>().ok()),
    );
    ServiceInfo {
        key: format!("{namespace}/{name}"),
        local,
        addresses,
    }
}

/// An EndpointSlice's JSON as [`SliceInfo`]: endpoints not reported
/// unready count (as kube-proxy does).
pub fn slice_info(namespace: &str, service: Option<&str>, data: &Value) -> SliceInfo {
    let nodes = data
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false))
        .filter_map(|e| e.get("nodeName")?.as_str().map(String::from))
        .collect();
    SliceInfo {
        service: service.map(|s| format!("{namespace}/{s}")),
        nodes,
    }
}

impl KubeServices {
    /// Connect with `--kubeconfig` (or the in-cluster config).
    pub async fn connect(opts: &StoreOptions) -> Result<KubeServices, StoreError> {
        Ok(KubeServices {
            client: kubeclient::connect(opts).await?,
        })
    }

    /// Every Service, relisted by itself after 410 Gone or a broken watch.
    pub fn follow_services(&self) -> Informer<ServiceInfo> {
        let src = KubeSource::new(self.client.clone(), &ApiResource::erase::<Service>(&()));
        Informer::new(src, |_, o: &kube::api::DynamicObject| {
            let ns = o.metadata.namespace.as_deref().unwrap_or_default();
            let name = o.metadata.name.as_deref().unwrap_or_default();
            Ok::<_, std::convert::Infallible>(service_info(ns, name, &o.data))
        })
    }

    /// Every EndpointSlice.
    pub fn follow_slices(&self) -> Informer<SliceInfo> {
        let src = KubeSource::new(
            self.client.clone(),
            &ApiResource::erase::<EndpointSlice>(&()),
        );
        Informer::new(src, |_, o: &kube::api::DynamicObject| {
            let ns = o.metadata.namespace.as_deref().unwrap_or_default();
            let svc = o
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .map(String::as_str);
            Ok::<_, std::convert::Infallible>(slice_info(ns, svc, &o.data))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn services_and_slices_decode() {
        let s = service_info(
            "default",
            "web",
            &json!({"spec": {"externalTrafficPolicy": "Local", "externalIPs": ["192.0.2.10", "x"]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"hostname": "h"}]}}}),
        );
        assert!(s.local);
        assert_eq!(s.key, "default/web");
        assert_eq!(s.addresses.len(), 2);
        let e = slice_info(
            "default",
            Some("web"),
            &json!({"endpoints": [
                {"nodeName": "n1", "conditions": {"ready": true}},
                {"nodeName": "n2", "conditions": {"ready": false}},
                {"nodeName": "n3"}]}),
        );
        assert_eq!(e.service.as_deref(), Some("default/web"));
        assert_eq!(e.nodes, ["n1", "n3"]);
    }
}
