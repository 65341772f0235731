//! [`KubeSource`]: one Kubernetes resource as an informer source, over
//! [`crate::kubewatch`] (field selectors, bookmarks, 410 Gone).

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde::de::DeserializeOwned;

use super::{Listing, RawChange, RawItem, RawStream, Source, LIST_TIMEOUT};
use crate::kubewatch::{Change as KubeChange, Selectors, Tick, Watch};
use crate::StoreError;

/// What a [`KubeSource`] hands its decoder.
pub use kube::api::DynamicObject as KubeObject;

/// One Kubernetes resource (core or custom; every namespace or one), with
/// label and field selectors, as [`DynamicObject`]s: decode them with
/// [`typed`] or by hand.
pub struct KubeSource {
    api: Api<DynamicObject>,
    what: String,
    selectors: Selectors,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn resource_name(r: &ApiResource) -> String {
    if r.group.is_empty() {
        r.plural.clone()
    } else {
        format!("{}.{}", r.plural, r.group)
    }
}

impl KubeSource {
    /// Every object of `resource` (in every namespace).
    pub fn new(client: kube::Client, resource: &ApiResource) -> KubeSource {
        KubeSource {
            api: Api::all_with(client, resource),
            what: resource_name(resource),
            selectors: Selectors::default(),
        }
    }

    /// The objects of `resource` in `namespace`.
    pub fn namespaced(client: kube::Client, resource: &ApiResource, namespace: &str) -> KubeSource {
        KubeSource {
            api: Api::namespaced_with(client, namespace, resource),
            what: format!("{} in {namespace}", resource_name(resource)),
            selectors: Selectors::default(),
        }
    }

    /// Only the objects with these labels (`app=web,tier!=db`).
    pub fn labels(mut self, selector: &str) -> KubeSource {
        self.selectors.labels = Some(selector.to_string());
        self
    }

    /// Only the objects with these fields (`spec.nodeName=n1`).
    pub fn fields(mut self, selector: &str) -> KubeSource {
        self.selectors.fields = Some(selector.to_string());
        self
    }
}

/// An object's key in a [`KubeSource`]: `namespace/name`, or `name` for a
/// cluster-scoped object.
pub fn object_key(obj: &DynamicObject) -> String {
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    match obj.metadata.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// A [`DynamicObject`] as its typed form (`Pod`, `NetworkPolicy`, ...),
/// for a decoder: `|_, o| typed::<Pod>(o)`.
pub fn typed<K: DeserializeOwned>(obj: &DynamicObject) -> Result<K, serde_json::Error> {
    serde_json::to_value(obj).and_then(serde_json::from_value)
}

fn kube_item(obj: DynamicObject) -> RawItem<DynamicObject> {
    RawItem {
        key: object_key(&obj),
        version: obj.metadata.resource_version.clone().unwrap_or_default(),
        raw: obj,
    }
}

fn list_error(what: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 410 => StoreError::Compacted(0),
        kube::Error::Api(s) => StoreError::Other(format!(
            "Kubernetes API: list {what}: {} ({})",
            s.message, s.code
        )),
        e => StoreError::Unavailable(format!("Kubernetes API: list {what}: {e}")),
    }
}

#[async_trait::async_trait]
impl Source for KubeSource {
    type Raw = DynamicObject;

    fn describe(&self) -> String {
        let mut s = self.what.clone();
        for sel in [&self.selectors.labels, &self.selectors.fields]
            .into_iter()
            .flatten()
        {
            s += &format!(" ({sel})");
        }
        s
    }

    async fn list(&self) -> Result<Listing<DynamicObject>, StoreError> {
        let mut lp = ListParams::default();
        if let Some(l) = &self.selectors.labels {
            lp = lp.labels(l);
        }
        if let Some(f) = &self.selectors.fields {
            lp = lp.fields(f);
        }
        // The resource is the caller's; these are the ones listed so far.
        // rbac(plexus-kube-store): list nodes
        // rbac(plexus-kube-store): list pods
        // rbac(plexus-kube-store): list plexuskeys.plexus.io
        // rbac(plexus-policy): list pods
        // rbac(plexus-policy): list namespaces
        // rbac(plexus-policy): list networkpolicies.networking.k8s.io
        // rbac(plexus-policy): list multi-networkpolicies.k8s.cni.cncf.io
        // rbac(plexus-kube-store): list services
        // rbac(plexus-kube-store): list endpointslices.discovery.k8s.io
        let list = tokio::time::timeout(LIST_TIMEOUT, self.api.list(&lp))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "Kubernetes API: list {}: no answer within {LIST_TIMEOUT:?}",
                    self.what
                ))
            })?
            .map_err(|e| list_error(&self.what, e))?;
        Ok(Listing {
            version: list.metadata.resource_version.clone().unwrap_or_default(),
            items: list.items.into_iter().map(kube_item).collect(),
        })
    }

    async fn watch(&self, version: &str) -> Result<RawStream<DynamicObject>, StoreError> {
        let w = Watch::start_with(
            self.api.clone(),
            &self.what,
            self.selectors.clone(),
            version,
        )
        .await?;
        Ok(w.into_ticks(|t| {
            Some(match t {
                Tick::Change(KubeChange::Applied(o)) => RawChange::Put(kube_item(o)),
                Tick::Change(KubeChange::Deleted(o)) => RawChange::Delete {
                    key: object_key(&o),
                },
                Tick::Progress => RawChange::Progress,
            })
        }))
    }
}

/// The Kubernetes resources Plexus watches.
pub mod resources {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::api::ApiResource;
    use kube::core::GroupVersionKind;

    pub fn nodes() -> ApiResource {
        ApiResource::erase::<Node>(&())
    }
    pub fn pods() -> ApiResource {
        ApiResource::erase::<Pod>(&())
    }
    pub fn namespaces() -> ApiResource {
        ApiResource::erase::<Namespace>(&())
    }
    pub fn services() -> ApiResource {
        ApiResource::erase::<Service>(&())
    }
    pub fn endpoint_slices() -> ApiResource {
        ApiResource::erase::<EndpointSlice>(&())
    }
    pub fn network_policies() -> ApiResource {
        ApiResource::erase::<NetworkPolicy>(&())
    }
    /// `multi-networkpolicies.k8s.cni.cncf.io` at `version` (`v1beta1`
    /// or `v1beta2`: the same objects, the same spec).
    pub fn multi_network_policies(version: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("k8s.cni.cncf.io", version, "MultiNetworkPolicy"),
            "multi-networkpolicies",
        )
    }
    /// The PlexusKey objects of the `kubernetes` store.
    pub fn plexus_keys() -> ApiResource {
        crate::kubekv::api_resource()
    }
}
