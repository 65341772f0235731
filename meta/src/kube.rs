//! Kubernetes API mode: with `kubeconfig` set, the pod's annotations come
//! from the runtime's `io.kubernetes.cri.pod-annotations` capability when it
//! is given, else from the pod fetched from the API by CNI_ARGS
//! `K8S_POD_NAMESPACE`/`K8S_POD_NAME`; NADs come from the API
//! (`k8s.cni.cncf.io/v1`), falling back to `attachmentsDir` when the API
//! says NotFound; after a successful ADD the merged network status is
//! written to the pod's `k8s.v1.cni.cncf.io/network-status` annotation.
//!
//! [`KubeBackends`] wraps [`LocalBackends`]; without `kubeconfig` it is
//! exactly `LocalBackends`. The API client is built lazily, on the first
//! lookup that needs it, so a DEL that has its plan (or an ADD whose NADs
//! and pod never need the API) never loads the kubeconfig or connects.
//!
//! Errors: an unreachable API server, a timeout, 429 and 5xx answers are
//! code 11 (try again later); anything else the API refuses (401, 403, a
//! pod that does not exist, an unreadable kubeconfig) is code 7.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use plexus_k8s::{BlockingK8s, K8sError};
use serde_json::{Map, Value};

use crate::backends::{Backends, LocalBackends};
use crate::config::MetaConf;
use crate::error::MetaError;
use crate::source::{CriAnnotations, NadStore, NadStores, PodSource, PodSources, StatusSink};
use crate::types::{AttachmentKey, Nad, NetworkStatus, PodInfo, PodRef};

/// Connect, read and write timeout of every API request: an ADD must not
/// hang on a dead API server.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod annotation kubelet sets on static pods (their UID in the API is
/// the mirror pod's, not the one in CNI_ARGS).
const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// The three API calls the meta plugin makes; [`BlockingK8s`] in the
/// plugin, a fake in unit tests.
pub trait KubeApi: Send + Sync {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<plexus_k8s::PodInfo>, K8sError>;
    fn nad_config(&self, namespace: &str, name: &str) -> Result<Option<String>, K8sError>;
    fn set_network_status(&self, namespace: &str, name: &str, json: &str) -> Result<(), K8sError>;
}

impl KubeApi for BlockingK8s {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<plexus_k8s::PodInfo>, K8sError> {
        BlockingK8s::pod(self, namespace, name)
    }
    fn nad_config(&self, namespace: &str, name: &str) -> Result<Option<String>, K8sError> {
        BlockingK8s::nad_config(self, namespace, name)
    }
    fn set_network_status(&self, namespace: &str, name: &str, json: &str) -> Result<(), K8sError> {
        BlockingK8s::set_network_status(self, namespace, name, json)
    }
}

/// Builds a client from a kubeconfig path.
pub type Connector = dyn Fn(&Path) -> Result<Box<dyn KubeApi>, K8sError> + Send + Sync;

/// Whether an API failure may clear up by itself (code 11).
pub fn is_transient(e: &K8sError) -> bool {
    match e {
        K8sError::Api { source, .. } => match source.as_ref() {
            ::kube::Error::Api(status) => status.code == 429 || status.code >= 500,
            // Connection refused or reset, timeouts, TLS handshakes that
            // did not finish: the server may be back soon.
            ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => true,
            _ => false,
        },
        K8sError::Runtime(_) => true,
        K8sError::Kubeconfig { .. }
        | K8sError::NadWithoutConfig { .. }
        | K8sError::InvalidName { .. } => false,
    }
}

/// An API failure as a meta plugin error: the operation, the API's
/// status (code, reason, message) or the transport error with its causes.
pub fn api_error(e: &K8sError) -> MetaError {
    let msg = match e {
        K8sError::Api { op, source } => match source.as_ref() {
            ::kube::Error::Api(st) => {
                let hint = match st.code {
                    401 => " (check the credentials in the kubeconfig)",
                    403 => " (check the RBAC rules of the kubeconfig's user)",
                    _ => "",
                };
                format!(
                    "Kubernetes API: {op}: {} {}: {}{hint}",
                    st.code, st.reason, st.message
                )
            }
            other => with_causes(format!("Kubernetes API: {op}: {other}"), other),
        },
        other => with_causes(other.to_string(), other),
    };
    MetaError::Kube {
        msg,
        transient: is_transient(e),
    }
}

fn with_causes(mut msg: String, e: &dyn std::error::Error) -> String {
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cause = c.source();
    }
    msg
}

/// The client for one kubeconfig, built on first use and shared by the
/// call's pod source, NAD store and status sink.
pub struct LazyClient {
    kubeconfig: String,
    connect: Arc<Connector>,
    client: OnceLock<Result<Box<dyn KubeApi>, (String, bool)>>,
}

impl LazyClient {
    fn get(&self) -> Result<&dyn KubeApi, MetaError> {
        let r = self.client.get_or_init(|| {
            tracing::debug!("connecting to the Kubernetes API ({})", self.kubeconfig);
            (self.connect)(Path::new(&self.kubeconfig)).map_err(|e| {
                let MetaError::Kube { msg, transient } = api_error(&e) else {
                    unreachable!()
                };
                (msg, transient)
            })
        });
        match r {
            Ok(c) => Ok(c.as_ref()),
            Err((msg, transient)) => Err(MetaError::Kube {
                msg: msg.clone(),
                transient: *transient,
            }),
        }
    }

    /// Whether the client was built (for tests).
    pub fn connected(&self) -> bool {
        self.client.get().is_some()
    }
}

/// [`LocalBackends`] plus the Kubernetes API when `kubeconfig` is set.
pub struct KubeBackends {
    local: LocalBackends,
    connect: Arc<Connector>,
    clients: Mutex<Vec<Arc<LazyClient>>>,
}

impl Default for KubeBackends {
    fn default() -> Self {
        KubeBackends::with_connector(Arc::new(|path: &Path| {
            BlockingK8s::from_kubeconfig(path, API_TIMEOUT).map(|c| Box::new(c) as Box<dyn KubeApi>)
        }))
    }
}

impl KubeBackends {
    pub fn with_connector(connect: Arc<Connector>) -> Self {
        KubeBackends {
            local: LocalBackends,
            connect,
            clients: Mutex::new(Vec::new()),
        }
    }

    /// The (lazy) client for this configuration's kubeconfig, if any.
    pub fn client(&self, conf: &MetaConf) -> Option<Arc<LazyClient>> {
        let kubeconfig = conf.kubeconfig.as_ref()?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.iter().find(|c| &c.kubeconfig == kubeconfig) {
            return Some(c.clone());
        }
        let c = Arc::new(LazyClient {
            kubeconfig: kubeconfig.clone(),
            connect: self.connect.clone(),
            client: OnceLock::new(),
        });
        clients.push(c.clone());
        Some(c)
    }
}

impl Backends for KubeBackends {
    fn pod_sources(
        &self,
        conf: &MetaConf,
        runtime_config: &Map<String, Value>,
    ) -> Result<PodSources, MetaError> {
        let Some(client) = self.client(conf) else {
            return self.local.pod_sources(conf, runtime_config);
        };
        // The runtime's annotations first: no API call when it gives them.
        Ok(PodSources(vec![
            Box::new(CriAnnotations::from_runtime_config(runtime_config)?),
            Box::new(ApiPods { client }),
        ]))
    }

    fn nad_stores(&self, conf: &MetaConf) -> NadStores {
        let mut local = self.local.nad_stores(conf);
        if let Some(client) = self.client(conf) {
            local.0.insert(0, Box::new(ApiNads { client }));
        }
        local
    }

    fn status_sinks(&self, conf: &MetaConf) -> Vec<Box<dyn StatusSink>> {
        let mut v = self.local.status_sinks(conf);
        if let Some(client) = self.client(conf) {
            v.push(Box::new(ApiStatus { client }));
        }
        v
    }
}

/// The pod from the API. A pod the API does not have is an error: ADD
/// must not silently give it fewer networks than it asked for (DEL without
/// a plan only warns and deletes what the delegates' cache remembers).
pub struct ApiPods {
    client: Arc<LazyClient>,
}

impl PodSource for ApiPods {
    fn pod(&self, pod: &PodRef) -> Result<Option<PodInfo>, MetaError> {
        let got = self
            .client
            .get()?
            .pod(&pod.namespace, &pod.name)
            .map_err(|e| api_error(&e))?;
        let Some(p) = got else {
            return Err(MetaError::Kube {
                msg: format!(
                    "pod {}/{} (K8S_POD_NAMESPACE/K8S_POD_NAME) not found in the Kubernetes API",
                    pod.namespace, pod.name
                ),
                transient: false,
            });
        };
        // Multus: a UID mismatch means the pod was replaced (a StatefulSet
        // pod of the same name); static pods' mirror pods differ by design.
        let is_static = p
            .annotations
            .get(CONFIG_SOURCE_ANNOTATION)
            .is_some_and(|s| s != "api");
        if !pod.uid.is_empty() && !p.uid.is_empty() && p.uid != pod.uid && !is_static {
            return Err(MetaError::Kube {
                msg: format!(
                    "pod {}/{}: expected UID {:?} (K8S_POD_UID) but the Kubernetes API has {:?}",
                    pod.namespace, pod.name, pod.uid, p.uid
                ),
                transient: false,
            });
        }
        Ok(Some(PodInfo {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: p.uid,
            annotations: p.annotations,
        }))
    }
}

/// NADs from the API; NotFound lets the next store (attachmentsDir) answer.
pub struct ApiNads {
    client: Arc<LazyClient>,
}

impl NadStore for ApiNads {
    fn get(&self, namespace: &str, name: &str) -> Result<Option<Nad>, MetaError> {
        let config = match self.client.get()?.nad_config(namespace, name) {
            Ok(None) => return Ok(None),
            Ok(Some(c)) => c,
            // Multus (GetCNIConfig): a NAD without spec.config means the
            // network of that name in confDir; the core does that for an
            // empty config.
            Err(K8sError::NadWithoutConfig { .. }) => String::new(),
            Err(e) => return Err(api_error(&e)),
        };
        Ok(Some(Nad {
            namespace: namespace.to_string(),
            name: name.to_string(),
            config,
            annotations: Default::default(),
        }))
    }
}

/// Writes the network-status annotation. A failure fails the ADD (which is
/// then rolled back), as in Multus: a running pod always has its status.
/// DEL does not touch the pod: it is going away, and DEL must not need the
/// API (Multus's DEL does not clear the annotation either).
pub struct ApiStatus {
    client: Arc<LazyClient>,
}

impl StatusSink for ApiStatus {
    fn publish(
        &self,
        _key: &AttachmentKey,
        pod: &PodRef,
        statuses: &[NetworkStatus],
    ) -> Result<(), MetaError> {
        if pod.name.is_empty() {
            // Not a Kubernetes pod (podman, cnitool): nothing to annotate.
            return Ok(());
        }
        let json = serde_json::to_string(statuses).expect("serializes");
        self.client
            .get()?
            .set_network_status(&pod.namespace, &pod.name, &json)
            .map_err(|e| {
                let MetaError::Kube { msg, transient } = api_error(&e) else {
                    unreachable!()
                };
                MetaError::Kube {
                    msg: format!("cannot write the network-status annotation: {msg}"),
                    transient,
                }
            })
    }

    fn remove(&self, _key: &AttachmentKey) -> Result<(), MetaError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use plexus_cni::NetConf;

    #[derive(Default)]
    struct Fake {
        pods: BTreeMap<(String, String), plexus_k8s::PodInfo>,
        nads: BTreeMap<(String, String), Option<String>>,
        fail: Option<u16>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    fn status_err(code: u16) -> K8sError {
        K8sError::Api {
            op: "x".into(),
            source: Box::new(::kube::Error::Api(Box::new(::kube::core::Status {
                code,
                reason: "Because".into(),
                message: format!("code {code}"),
                ..Default::default()
            }))),
        }
    }

    impl KubeApi for Fake {
        fn pod(&self, ns: &str, name: &str) -> Result<Option<plexus_k8s::PodInfo>, K8sError> {
            self.calls.lock().unwrap().push(format!("pod {ns}/{name}"));
            if let Some(c) = self.fail {
                return Err(status_err(c));
            }
            Ok(self.pods.get(&(ns.into(), name.into())).cloned())
        }
        fn nad_config(&self, ns: &str, name: &str) -> Result<Option<String>, K8sError> {
            self.calls.lock().unwrap().push(format!("nad {ns}/{name}"));
            if let Some(c) = self.fail {
                return Err(status_err(c));
            }
            match self.nads.get(&(ns.into(), name.into())) {
                None => Ok(None),
                Some(Some(c)) => Ok(Some(c.clone())),
                Some(None) => Err(K8sError::NadWithoutConfig {
                    namespace: ns.into(),
                    name: name.into(),
                }),
            }
        }
        fn set_network_status(&self, ns: &str, name: &str, json: &str) -> Result<(), K8sError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("status {ns}/{name} {json}"));
            match self.fail {
                Some(c) => Err(status_err(c)),
                None => Ok(()),
            }
        }
    }

    struct Setup {
        backends: KubeBackends,
        connects: Arc<AtomicUsize>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    fn setup(make: impl Fn() -> Fake + Send + Sync + 'static) -> Setup {
        let connects = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (n, c) = (connects.clone(), calls.clone());
        let backends = KubeBackends::with_connector(Arc::new(move |_: &Path| {
            n.fetch_add(1, Ordering::SeqCst);
            let mut f = make();
            f.calls = c.clone();
            Ok(Box::new(f) as Box<dyn KubeApi>)
        }));
        Setup {
            backends,
            connects,
            calls,
        }
    }

    fn conf(extra: &str) -> MetaConf {
        let s = format!(
            r#"{{"cniVersion":"1.0.0","name":"plexus","type":"plexus","clusterNetwork":"c"{extra}}}"#
        );
        MetaConf::from_netconf(&NetConf::parse(s.as_bytes()).unwrap()).unwrap()
    }

    fn pod_ref(uid: &str) -> PodRef {
        PodRef {
            namespace: "ns1".into(),
            name: "web".into(),
            uid: uid.into(),
        }
    }

    fn web() -> Fake {
        let mut f = Fake::default();
        f.pods.insert(
            ("ns1".into(), "web".into()),
            plexus_k8s::PodInfo {
                uid: "u1".into(),
                annotations: [("k8s.v1.cni.cncf.io/networks".into(), "blue".into())].into(),
            },
        );
        f
    }

    #[test]
    fn runtime_annotations_win_without_connecting() {
        let s = setup(web);
        let c = conf(r#","kubeconfig":"/kc""#);
        let rc: Map<String, Value> = serde_json::from_str(
            r#"{"io.kubernetes.cri.pod-annotations":{"k8s.v1.cni.cncf.io/networks":"red"}}"#,
        )
        .unwrap();
        let p = s
            .backends
            .pod_sources(&c, &rc)
            .unwrap()
            .pod(&pod_ref(""))
            .unwrap()
            .unwrap();
        assert_eq!(p.annotations["k8s.v1.cni.cncf.io/networks"], "red");
        assert_eq!(s.connects.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn pod_from_the_api() {
        let s = setup(web);
        let c = conf(r#","kubeconfig":"/kc""#);
        let sources = s.backends.pod_sources(&c, &Map::new()).unwrap();
        let p = sources.pod(&pod_ref("u1")).unwrap().unwrap();
        assert_eq!(p.annotations["k8s.v1.cni.cncf.io/networks"], "blue");
        assert_eq!(p.uid, "u1");
        // One client for the whole call.
        s.backends.nad_stores(&c).get("ns1", "x").unwrap();
        assert_eq!(s.connects.load(Ordering::SeqCst), 1);

        let e = sources.pod(&pod_ref("other")).unwrap_err();
        assert!(e.to_string().contains("expected UID \"other\""), "{e}");
        let e = sources
            .pod(&PodRef {
                name: "gone".into(),
                ..pod_ref("")
            })
            .unwrap_err();
        assert_eq!(e.to_cni().code, 7);
        assert!(
            e.to_string()
                .contains("pod ns1/gone (K8S_POD_NAMESPACE/K8S_POD_NAME) not found"),
            "{e}"
        );
    }

    #[test]
    fn static_pods_may_differ_in_uid() {
        let s = setup(|| {
            let mut f = web();
            f.pods
                .get_mut(&("ns1".into(), "web".into()))
                .unwrap()
                .annotations
                .insert(CONFIG_SOURCE_ANNOTATION.into(), "file".into());
            f
        });
        let c = conf(r#","kubeconfig":"/kc""#);
        let sources = s.backends.pod_sources(&c, &Map::new()).unwrap();
        assert!(sources.pod(&pod_ref("mirror")).unwrap().is_some());
    }

    #[test]
    fn error_codes() {
        for (code, cni) in [(503, 11), (500, 11), (429, 11), (401, 7), (403, 7)] {
            let s = setup(move || Fake {
                fail: Some(code),
                ..web()
            });
            let c = conf(r#","kubeconfig":"/kc""#);
            let e = s
                .backends
                .pod_sources(&c, &Map::new())
                .unwrap()
                .pod(&pod_ref(""))
                .unwrap_err();
            assert_eq!(e.to_cni().code, cni, "{code}: {e}");
            assert!(e.to_string().contains(&format!("code {code}")), "{e}");
        }
        let s = KubeBackends::with_connector(Arc::new(|p: &Path| {
            Err(K8sError::Kubeconfig {
                path: p.display().to_string(),
                msg: "no such file".into(),
            })
        }));
        let e = s
            .nad_stores(&conf(r#","kubeconfig":"/kc""#))
            .get("a", "b")
            .unwrap_err();
        assert_eq!(e.to_cni().code, 7);
        assert!(
            e.to_string()
                .contains("cannot load kubeconfig /kc: no such file"),
            "{e}"
        );
    }

    #[test]
    fn nads_from_the_api_then_attachments_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("n.yaml"),
            "kind: NetworkAttachmentDefinition\nmetadata:\n  name: local\n  namespace: ns1\nspec:\n  config: '{\"type\":\"ptp\"}'\n",
        )
        .unwrap();
        let s = setup(|| {
            let mut f = Fake::default();
            f.nads.insert(
                ("ns1".into(), "api".into()),
                Some(r#"{"type":"bridge"}"#.into()),
            );
            f.nads.insert(("ns1".into(), "local".into()), None);
            f.nads.insert(("ns1".into(), "bare".into()), None);
            f
        });
        let c = conf(&format!(
            r#","kubeconfig":"/kc","attachmentsDir":{:?}"#,
            d.path()
        ));
        let stores = s.backends.nad_stores(&c);
        assert!(stores
            .get("ns1", "api")
            .unwrap()
            .unwrap()
            .config
            .contains("bridge"));
        // In the API without spec.config: the confDir file of that name.
        assert_eq!(stores.get("ns1", "bare").unwrap().unwrap().config, "");
        assert!(stores.get("ns1", "gone").unwrap().is_none());
        drop(stores);

        // NotFound in the API: attachmentsDir answers.
        let s = setup(Fake::default);
        let stores = s.backends.nad_stores(&c);
        assert!(stores
            .get("ns1", "local")
            .unwrap()
            .unwrap()
            .config
            .contains("ptp"));
        assert_eq!(*s.calls.lock().unwrap(), ["nad ns1/local"]);
    }

    #[test]
    fn status_is_patched_and_failures_fail() {
        let s = setup(web);
        let c = conf(r#","kubeconfig":"/kc""#);
        let sinks = s.backends.status_sinks(&c);
        assert_eq!(sinks.len(), 1);
        let key = AttachmentKey {
            container_id: "c".into(),
            ifname: "eth0".into(),
        };
        let st = [NetworkStatus {
            name: "cluster".into(),
            interface: "eth0".into(),
            default: true,
            ..Default::default()
        }];
        sinks[0].publish(&key, &pod_ref(""), &st).unwrap();
        // Not a Kubernetes pod: nothing to annotate, no client needed.
        sinks[0].publish(&key, &PodRef::default(), &st).unwrap();
        sinks[0].remove(&key).unwrap();
        assert_eq!(
            *s.calls.lock().unwrap(),
            [r#"status ns1/web [{"name":"cluster","interface":"eth0","default":true}]"#]
        );

        let s = setup(|| Fake {
            fail: Some(503),
            ..web()
        });
        let e = s.backends.status_sinks(&c)[0]
            .publish(&key, &pod_ref(""), &st)
            .unwrap_err();
        assert_eq!(e.to_cni().code, 11);
        assert!(e.to_string().contains("network-status"), "{e}");
    }

    #[test]
    fn without_kubeconfig_it_is_local() {
        let s = setup(web);
        let c = conf("");
        assert!(s.backends.status_sinks(&c).is_empty());
        assert!(s.backends.nad_stores(&c).0.is_empty());
        assert!(s
            .backends
            .pod_sources(&c, &Map::new())
            .unwrap()
            .pod(&pod_ref(""))
            .unwrap()
            .is_none());
        assert_eq!(s.connects.load(Ordering::SeqCst), 0);
    }
}
