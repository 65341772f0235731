//! A stand-in for the Kubernetes API server, the one mock the project
//! allows (no API server can run on these machines). It speaks the API's
//! JSON over HTTP/1.1, so the real `kube` client runs against it unchanged.
//!
//! One generic object store serves every kind (a [`Kind`]: group, served
//! versions, plural, namespaced or not, status subresource, custom or
//! built in):
//!
//! - built in: `nodes`, `pods`, `namespaces`, `services`, `secrets` (core v1),
//!   `networkpolicies.networking.k8s.io` (v1), `endpointslices.
//!   discovery.k8s.io` (v1); custom: `network-attachment-definitions.
//!   k8s.cni.cncf.io` (v1), `multi-networkpolicies.k8s.cni.cncf.io` (v1beta1
//!   and v1beta2: one resource, the same objects in either version), and
//!   any cluster-scoped custom resource registered with
//!   [`FakeApiServer::serve_resource`] (a CRD applied). A resource that is
//!   not served is a 404 without details, as for a CRD not installed.
//! - paths: `/api/v1/...` and `/apis/GROUP/VERSION/...`, cluster-scoped
//!   `PLURAL[/NAME[/status]]`, namespaced `namespaces/NS/PLURAL[/NAME
//!   [/status]]` and `PLURAL` across every namespace.
//! - verbs: list (with `labelSelector`: `=`, `==`, `!=`, `in`, `notin`,
//!   exists, `!`; and `fieldSelector`: `metadata.name`,
//!   `metadata.namespace`, and for pods `spec.nodeName`, `status.phase`
//!   and the rest of the server's pod field labels; any other field is a
//!   400), watch (`?watch=true`), get, create (POST; 409 AlreadyExists;
//!   `generateName`), update (PUT; a custom resource must carry
//!   `metadata.resourceVersion`, 422 without; a stale one is 409), patch
//!   (merge, strategic merge as a merge patch, JSON patch; apply patches
//!   are 415), delete (`preconditions.resourceVersion`/`uid`: 409 when
//!   stale; deleting a namespace deletes what is in it), and the status
//!   subresource (an update of the object keeps its status, an update of
//!   `/status` keeps everything but status and metadata).
//!   `metadata.generation` counts spec changes.
//! - watches: `resourceVersion` (`""`/`"0"`: every object first as
//!   ADDED), `timeoutSeconds`, the selectors (an object that stops or starts
//!   matching is DELETED or ADDED for that watch, as the real server's),
//!   `allowWatchBookmarks` (a BOOKMARK every [`FakeApiServer::
//!   set_bookmark_interval`], 60 s unless set), and 410 Gone: a watch from
//!   before a compaction ([`FakeApiServer::compact`]) gets a 410 `Expired`
//!   ERROR event; [`FakeApiServer::expire_watches`] sends one to the open
//!   watches too. Test controls: [`FakeApiServer::stall_watches`] (open
//!   watches go silent), [`FakeApiServer::cut_watches`] (their
//!   connections are closed mid-stream).
//! - resourceVersions come from one counter for every resource, as the
//!   real server's (etcd's revision); lists carry the current one.
//!
//! A missing or wrong bearer token gets a 401 `Status`. The listener is
//! bound inside a test namespace, so only that namespace reaches it.
//! Not served: server-side apply, `limit`/`continue` (a list is whole),
//! `sendInitialEvents`, deletion grace periods (a delete is immediate).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Netns;

mod patch;
mod select;

pub use patch::merge;
use select::{query_param, Fields, Labels};

/// A resource the stand-in serves.
#[derive(Debug, Clone)]
pub struct Kind {
    /// `""` for the core group.
    pub group: String,
    /// The versions served, the first one preferred.
    pub versions: Vec<String>,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Has a status subresource.
    pub status: bool,
    /// A custom resource (a CRD): an update needs a resourceVersion.
    pub custom: bool,
}

impl Kind {
    /// `plural` for the core group, `plural.group` otherwise (kubectl's
    /// spelling), the name the helpers take.
    pub fn id(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

fn builtin(group: &str, versions: &[&str], plural: &str, kind: &str, ns: bool) -> Kind {
    Kind {
        group: group.into(),
        versions: versions.iter().map(|v| v.to_string()).collect(),
        plural: plural.into(),
        kind: kind.into(),
        namespaced: ns,
        status: false,
        custom: false,
    }
}

fn default_kinds() -> BTreeMap<String, Kind> {
    let with_status = |mut k: Kind| {
        k.status = true;
        k
    };
    let custom = |mut k: Kind| {
        k.custom = true;
        k
    };
    [
        with_status(builtin("", &["v1"], "nodes", "Node", false)),
        with_status(builtin("", &["v1"], "pods", "Pod", true)),
        with_status(builtin("", &["v1"], "namespaces", "Namespace", false)),
        with_status(builtin("", &["v1"], "services", "Service", true)),
        builtin("", &["v1"], "secrets", "Secret", true),
        builtin(
            "networking.k8s.io",
            &["v1"],
            "networkpolicies",
            "NetworkPolicy",
            true,
        ),
        builtin(
            "discovery.k8s.io",
            &["v1"],
            "endpointslices",
            "EndpointSlice",
            true,
        ),
        custom(builtin(
            "k8s.cni.cncf.io",
            &["v1"],
            "network-attachment-definitions",
            "NetworkAttachmentDefinition",
            true,
        )),
        custom(builtin(
            "k8s.cni.cncf.io",
            &["v1beta1", "v1beta2"],
            "multi-networkpolicies",
            "MultiNetworkPolicy",
            true,
        )),
    ]
    .into_iter()
    .map(|k| (k.id(), k))
    .collect()
}

/// One recorded change, as watches replay it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    /// The kind's id.
    pub resource: String,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object before (MODIFIED), for watches whose selector it may
    /// have entered or left.
    pub old: Option<Value>,
    pub object: Value,
}

/// An object's place: (kind id, namespace or "", name).
type Key = (String, String, String);

#[derive(Debug)]
pub struct ApiState {
    pub kinds: BTreeMap<String, Kind>,
    pub objects: BTreeMap<Key, Value>,
    /// Every request seen: "METHOD path" ("WATCH path" for a watch).
    pub requests: Vec<String>,
    /// Bodies of accepted pod status patches.
    pub status_patches: Vec<Value>,
    /// Bodies of accepted node patches.
    pub node_patches: Vec<Value>,
    /// Changes after each resource's compaction point.
    pub events: Vec<Change>,
    /// The last resourceVersion handed out (any resource).
    pub rv: u64,
    /// Per resource: watches from before this resourceVersion get 410.
    pub compacted: BTreeMap<String, u64>,
    pub bookmark_interval: Duration,
    /// Bumped by the watch controls; each watch compares with its start.
    stalled: u64,
    cut: u64,
    expired: BTreeMap<String, u64>,
    /// Watches being served now.
    pub open_watches: usize,
    uids: u64,
}

impl Default for ApiState {
    fn default() -> Self {
        ApiState {
            kinds: default_kinds(),
            objects: BTreeMap::new(),
            requests: Vec::new(),
            status_patches: Vec::new(),
            node_patches: Vec::new(),
            events: Vec::new(),
            rv: 0,
            compacted: BTreeMap::new(),
            bookmark_interval: Duration::from_secs(60),
            stalled: 0,
            cut: 0,
            expired: BTreeMap::new(),
            open_watches: 0,
            uids: 0,
        }
    }
}

/// An API error: the HTTP code and its `Status` object.
type ApiError = (u16, Value);

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn err(code: u16, reason: &str, message: &str) -> ApiError {
    (code, status(code, reason, message))
}

fn with_details(mut s: ApiError, k: &Kind, name: &str) -> ApiError {
    s.1["details"] = json!({"name": name, "group": k.group, "kind": k.plural});
    s
}

fn not_found(k: &Kind, name: &str) -> ApiError {
    with_details(
        err(404, "NotFound", &format!("{} \"{name}\" not found", k.id())),
        k,
        name,
    )
}

fn conflict(k: &Kind, name: &str, why: &str) -> ApiError {
    with_details(
        err(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                k.id()
            ),
        ),
        k,
        name,
    )
}

fn no_resource() -> ApiError {
    err(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str()
}

/// How a request names objects.
#[derive(Debug, Clone)]
struct Target {
    kind: Kind,
    version: String,
    /// The namespace in the path (namespaced kinds), none for "every
    /// namespace" or a cluster-scoped kind.
    namespace: Option<String>,
    name: Option<String>,
    /// `status`, if the status subresource.
    sub: Option<String>,
}

impl ApiState {
    fn kind(&self, id: &str) -> Kind {
        self.kinds
            .get(id)
            .unwrap_or_else(|| panic!("the stand-in serves no {id}"))
            .clone()
    }

    /// The kind, version and object a path names.
    fn target(&self, path: &str) -> Option<Target> {
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, version, rest) = match seg.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let find = |plural: &str| {
            self.kinds
                .values()
                .find(|k| k.group == group && k.plural == plural)
                .filter(|k| k.versions.iter().any(|v| v == version))
                .cloned()
        };
        let t = |kind: Kind, namespace: Option<&str>, name: Option<&&str>, sub: Option<&&str>| {
            Some(Target {
                kind,
                version: version.to_string(),
                namespace: namespace.map(String::from),
                name: name.map(|n| n.to_string()),
                sub: sub.map(|s| s.to_string()),
            })
        };
        if let ["namespaces", ns, plural, more @ ..] = rest {
            if let Some(k) = find(plural).filter(|k| k.namespaced) {
                if more.len() > 2 {
                    return None;
                }
                return t(k, Some(ns), more.first(), more.get(1));
            }
        }
        let (plural, more) = rest.split_first()?;
        let k = find(plural)?;
        if k.namespaced && !more.is_empty() || more.len() > 2 {
            return None;
        }
        t(k, None, more.first(), more.get(1))
    }

    /// Give `obj` the next resourceVersion and record the change.
    fn record(
        &mut self,
        k: &Kind,
        kind: &'static str,
        old: Option<Value>,
        mut obj: Value,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.events.push(Change {
            rv: self.rv,
            resource: k.id(),
            namespace: meta_str(&obj, "namespace").unwrap_or("").to_string(),
            kind,
            old,
            object: obj.clone(),
        });
        obj
    }

    fn key(k: &Kind, namespace: &str, name: &str) -> Key {
        let ns = if k.namespaced { namespace } else { "" };
        (k.id(), ns.to_string(), name.to_string())
    }

    /// The objects of `k` in `namespace` (all when `None`) the selectors
    /// pick, in key order.
    fn select(
        &self,
        k: &Kind,
        namespace: Option<&str>,
        labels: &Labels,
        fields: &Fields,
    ) -> Vec<Value> {
        let id = k.id();
        self.objects
            .iter()
            .filter(|((r, ns, _), _)| *r == id && namespace.is_none_or(|want| want == ns.as_str()))
            .map(|(_, o)| o)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .cloned()
            .collect()
    }

    /// Create `obj`; `namespace` is the request path's.
    fn create(
        &mut self,
        k: &Kind,
        namespace: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(err(400, "BadRequest", "the body is not a JSON object"));
        }
        if k.namespaced {
            let Some(ns) = namespace else {
                return Err(err(
                    405,
                    "MethodNotAllowed",
                    "create needs a namespace in the path",
                ));
            };
            match meta_str(&obj, "namespace") {
                Some(given) if given != ns => {
                    return Err(err(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if meta_str(&obj, "name").is_none() {
            match meta_str(&obj, "generateName") {
                Some(prefix) => {
                    self.uids += 1;
                    let name = format!("{prefix}{:05x}", self.uids);
                    obj["metadata"]["name"] = json!(name);
                }
                None => {
                    return Err(err(
                        422,
                        "Invalid",
                        "metadata.name: Required value: name or generateName is required",
                    ))
                }
            }
        }
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let ns = meta_str(&obj, "namespace").unwrap_or_default().to_string();
        let key = Self::key(k, &ns, &name);
        if self.objects.contains_key(&key) {
            return Err(with_details(
                err(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", k.id()),
                ),
                k,
                &name,
            ));
        }
        if meta_str(&obj, "uid").is_none() {
            self.uids += 1;
            obj["metadata"]["uid"] =
                json!(format!("{:08x}-0000-4000-8000-{:012x}", self.uids, self.rv));
        }
        obj["metadata"]["generation"] = json!(1);
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        obj["apiVersion"] = json!(k.api_version(&k.versions[0]));
        obj["kind"] = json!(k.kind);
        let obj = self.record(k, "ADDED", None, obj);
        self.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Replace an object with `new` (a PUT, or a patch's result). `sub`:
    /// the status subresource.
    fn update(
        &mut self,
        k: &Kind,
        namespace: &str,
        name: &str,
        mut new: Value,
        sub: Option<&str>,
        need_rv: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key(k, namespace, name);
        let Some(cur) = self.objects.get(&key).cloned() else {
            return Err(not_found(k, name));
        };
        if !new.is_object() {
            return Err(err(400, "BadRequest", "the body is not a JSON object"));
        }
        if meta_str(&new, "name").is_some_and(|n| n != name) {
            return Err(err(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ));
        }
        match meta_str(&new, "resourceVersion") {
            Some(rv) if Some(rv) != meta_str(&cur, "resourceVersion") => {
                return Err(conflict(
                    k,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ))
            }
            None if need_rv => {
                return Err(err(
                    422,
                    "Invalid",
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ))
            }
            _ => {}
        }
        if k.status {
            match sub {
                // The helpers' own writes: everything as given.
                Some("all") => {}
                // Only status and metadata change through /status.
                Some(_) => {
                    let st = new.get("status").cloned();
                    let meta = new["metadata"].clone();
                    new = cur.clone();
                    new["metadata"] = meta;
                    match st {
                        Some(s) => new["status"] = s,
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                // An update of the object keeps its status.
                None => match cur.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                },
            }
        }
        for f in ["name", "namespace", "uid", "creationTimestamp"] {
            new["metadata"][f] = cur["metadata"][f].clone();
        }
        if !k.namespaced {
            new["metadata"]
                .as_object_mut()
                .map(|m| m.remove("namespace"));
        }
        let generation = cur["metadata"]["generation"].as_i64().unwrap_or(1)
            + i64::from(new.get("spec") != cur.get("spec"));
        new["metadata"]["generation"] = json!(generation);
        new["apiVersion"] = cur["apiVersion"].clone();
        new["kind"] = json!(k.kind);
        let obj = self.record(k, "MODIFIED", Some(cur), new);
        self.objects.insert(key, obj.clone());
        Ok(obj)
    }

    fn delete(
        &mut self,
        k: &Kind,
        namespace: &str,
        name: &str,
        options: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(k, namespace, name);
        let Some(cur) = self.objects.get(&key).cloned() else {
            return Err(not_found(k, name));
        };
        let pre = options.map(|o| &o["preconditions"]);
        for field in ["resourceVersion", "uid"] {
            if let Some(want) = pre.and_then(|p| p[field].as_str()) {
                if Some(want) != meta_str(&cur, field) {
                    return Err(conflict(
                        k,
                        name,
                        &format!("Precondition failed: {field} in precondition: {want}, {field} in object meta: {}", meta_str(&cur, field).unwrap_or("")),
                    ));
                }
            }
        }
        // A namespace takes what is in it along.
        if k.id() == "namespaces" {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|(_, ns, _)| ns == name)
                .cloned()
                .collect();
            for (id, ns, n) in inside {
                let kk = self.kind(&id);
                self.delete(&kk, &ns, &n, None)?;
            }
        }
        self.objects.remove(&key);
        Ok(self.record(k, "DELETED", None, cur))
    }

    fn compact(&mut self, id: &str) {
        let rv = self.rv;
        self.compacted.insert(id.into(), rv);
        self.events.retain(|e| e.resource != id);
    }
}

/// The object as served at `version` (the stored one may be another
/// version of the same kind: the spec is the same).
fn as_version(k: &Kind, version: &str, mut obj: Value) -> Value {
    obj["apiVersion"] = json!(k.api_version(version));
    obj["kind"] = json!(k.kind);
    obj
}

#[derive(Debug)]
pub struct FakeApiServer {
    pub state: Arc<Mutex<ApiState>>,
    /// Notified on every change (wakes the watches).
    changed: Arc<Condvar>,
    pub port: u16,
    pub token: String,
    _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl FakeApiServer {
    /// Start listening on 127.0.0.1 inside the namespace at `netns_path`.
    pub fn start_in(node: &Netns) -> FakeApiServer {
        FakeApiServer::start_at(node, "127.0.0.1")
    }

    /// Start listening on `ip` (an address of `ns`), for clients in other
    /// namespaces of a simulated cluster (every node's agent).
    pub fn start_at(ns: &Netns, ip: &str) -> FakeApiServer {
        // Bound on a thread inside the namespace, the socket stays there
        // whichever thread serves it.
        let listener = ns.run(|| TcpListener::bind((ip, 0)).expect("bind in netns"));
        let port = listener.local_addr().unwrap().port();
        let token = format!("plexus-test-{}", std::process::id());
        let state = Arc::new(Mutex::new(ApiState::default()));
        let changed = Arc::new(Condvar::new());
        let (st, cv, tok) = (state.clone(), changed.clone(), token.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (st, cv, tok) = (st.clone(), cv.clone(), tok.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &cv, &tok);
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{host}:{port}\nusers:\n- name: plexus\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: plexus\ncurrent-context: test\n"
            ),
        )
        .unwrap();
        FakeApiServer {
            state,
            changed,
            port,
            token,
            _dir: dir,
            kubeconfig,
        }
    }

    /// Run `f` on the state and wake the watches.
    fn with<T>(&self, f: impl FnOnce(&mut ApiState) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
        out
    }

    // ---- generic helpers (resource: `pods`, `networkpolicies.networking.k8s.io`, ...) ----

    /// Create an object (its namespace from `metadata.namespace`); panics
    /// when the API refuses it.
    pub fn create(&self, resource: &str, obj: Value) -> Value {
        self.with(|st| {
            let k = st.kind(resource);
            let ns = meta_str(&obj, "namespace").map(String::from);
            st.create(&k, ns.as_deref(), obj)
        })
        .unwrap_or_else(|e| panic!("create {resource}: {}", e.1))
    }

    /// Create the object, or replace it if it exists (whatever its
    /// resourceVersion), as `kubectl apply` ends up doing.
    pub fn apply(&self, resource: &str, mut obj: Value) -> Value {
        self.with(|st| {
            let k = st.kind(resource);
            let ns = meta_str(&obj, "namespace").unwrap_or("").to_string();
            let name = meta_str(&obj, "name").unwrap_or("").to_string();
            if st.objects.contains_key(&ApiState::key(&k, &ns, &name)) {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                st.update(&k, &ns, &name, obj, None, false)
            } else {
                st.create(&k, Some(&ns), obj)
            }
        })
        .unwrap_or_else(|e| panic!("apply {resource}: {}", e.1))
    }

    /// A JSON merge patch of an object (status included); panics when it
    /// does not exist.
    pub fn patch(&self, resource: &str, namespace: &str, name: &str, patch: Value) -> Value {
        self.with(|st| {
            let k = st.kind(resource);
            let Some(mut obj) = st.objects.get(&ApiState::key(&k, namespace, name)).cloned() else {
                return Err(not_found(&k, name));
            };
            merge(&mut obj, &patch);
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            st.update(&k, namespace, name, obj, Some("all"), false)
        })
        .unwrap_or_else(|e| panic!("patch {resource} {namespace}/{name}: {}", e.1))
    }

    /// Delete an object; its last state, or `None` if it did not exist.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.with(|st| {
            let k = st.kind(resource);
            st.delete(&k, namespace, name, None).ok()
        })
    }

    /// Delete every object of a resource.
    pub fn delete_all(&self, resource: &str) {
        self.with(|st| {
            let k = st.kind(resource);
            let id = k.id();
            let keys: Vec<Key> = st
                .objects
                .keys()
                .filter(|(r, _, _)| *r == id)
                .cloned()
                .collect();
            for (_, ns, n) in keys {
                let _ = st.delete(&k, &ns, &n, None);
            }
        })
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        let k = st.kind(resource);
        st.objects.get(&ApiState::key(&k, namespace, name)).cloned()
    }

    /// Every object of a resource, in (namespace, name) order.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        let k = st.kind(resource);
        st.select(&k, None, &Labels::default(), &Fields::default())
    }

    /// Forget a resource's history so far: a watch from an older
    /// resourceVersion gets 410 Expired, as after an etcd compaction.
    pub fn compact(&self, resource: &str) {
        self.with(|st| st.compact(resource));
    }

    /// Compact, and end the open watches of `resource` with a 410 ERROR
    /// event (the server's watch cache fell behind them).
    pub fn expire_watches(&self, resource: &str) {
        self.with(|st| {
            st.compact(resource);
            *st.expired.entry(resource.into()).or_default() += 1;
        });
    }

    /// The open watches stop sending anything (events, bookmarks), for
    /// good, while keeping their connections; later watches are served.
    pub fn stall_watches(&self) {
        self.with(|st| st.stalled += 1);
    }

    /// The open watches' connections are closed mid-stream (no final
    /// chunk), as when a server or a proxy goes away.
    pub fn cut_watches(&self) {
        self.with(|st| st.cut += 1);
    }

    /// How often a watch that asked for bookmarks gets one.
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.with(|st| st.bookmark_interval = every);
    }

    /// Watches being served now.
    pub fn open_watches(&self) -> usize {
        self.state.lock().unwrap().open_watches
    }

    /// Serve a cluster-scoped custom resource, as once its CRD is applied.
    pub fn serve_resource(&self, group: &str, version: &str, plural: &str, kind: &str) {
        self.with(|st| {
            let k = Kind {
                group: group.into(),
                versions: vec![version.into()],
                plural: plural.into(),
                kind: kind.into(),
                namespaced: false,
                status: false,
                custom: true,
            };
            st.kinds
                .entry(k.id())
                .and_modify(|e| {
                    if !e.versions.iter().any(|v| v == version) {
                        e.versions.push(version.into());
                    }
                })
                .or_insert(k);
        });
    }

    /// Stop serving a resource, as when its CRD is deleted.
    pub fn unserve(&self, resource: &str) {
        self.with(|st| {
            st.kinds.remove(resource);
        });
    }

    // ---- helpers for the kinds the tests use most ----

    pub fn add_pod(&self, namespace: &str, name: &str, annotations: Value) {
        self.create(
            "pods",
            json!({
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": format!("uid-{namespace}-{name}"),
                    "annotations": annotations,
                },
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                "status": {"phase": "Pending"}
            }),
        );
    }

    pub fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        self.create(
            "network-attachment-definitions.k8s.cni.cncf.io",
            json!({
                "metadata": {"name": name, "namespace": namespace, "uid": format!("nad-{name}")},
                "spec": {"config": config.to_string()}
            }),
        );
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.delete("pods", namespace, name);
    }

    /// The pod's current annotation value, if set.
    pub fn pod_annotation(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        annotation(&self.get("pods", namespace, name)?, key)
    }

    /// Add (or replace) a Node with `spec.podCIDR(s)` (none when empty)
    /// and annotations.
    pub fn add_node(&self, name: &str, pod_cidrs: &[&str], annotations: Value) {
        let mut spec = json!({});
        if let Some(first) = pod_cidrs.first() {
            spec = json!({"podCIDR": first, "podCIDRs": pod_cidrs});
        }
        self.apply(
            "nodes",
            json!({
                "metadata": {
                    "name": name,
                    "uid": format!("node-uid-{name}"),
                    "labels": {"kubernetes.io/hostname": name},
                    "annotations": annotations,
                },
                "spec": spec,
            }),
        );
    }

    /// Merge `annotations` into a node's (a `null` value removes one), as a
    /// kubectl annotate would.
    pub fn annotate_node(&self, name: &str, annotations: Value) {
        self.patch(
            "nodes",
            "",
            name,
            json!({"metadata": {"annotations": annotations}}),
        );
    }

    pub fn delete_node(&self, name: &str) {
        self.delete("nodes", "", name);
    }

    /// The node object, if present.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.get("nodes", "", name)
    }

    /// A node annotation's value, if set.
    pub fn node_annotation(&self, name: &str, key: &str) -> Option<String> {
        annotation(&self.node(name)?, key)
    }

    pub fn compact_nodes(&self) {
        self.compact("nodes");
    }

    /// Every object of a cluster-scoped custom resource, by name.
    pub fn objects(&self, group: &str, _version: &str, plural: &str) -> BTreeMap<String, Value> {
        self.list(&format!("{plural}.{group}"))
            .into_iter()
            .map(|o| (meta_str(&o, "name").unwrap_or("").to_string(), o))
            .collect()
    }

    /// Forget a custom resource's history so far (watches from before get
    /// 410 Expired).
    pub fn compact_resource(&self, group: &str, _version: &str, plural: &str) {
        self.compact(&format!("{plural}.{group}"));
    }
}

fn annotation(obj: &Value, key: &str) -> Option<String> {
    obj.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))?
        .as_str()
        .map(String::from)
}

// ---- HTTP ----

struct Request {
    method: String,
    path: String,
    query: String,
    auth: String,
    content_type: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut len, mut auth, mut content_type) = (0usize, String::new(), String::new());
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                "content-type" => content_type = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Ok(Some(Request {
        method,
        path,
        query,
        auth,
        content_type,
        body,
    }))
}

fn serve(
    conn: TcpStream,
    st: &Mutex<ApiState>,
    changed: &Condvar,
    token: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    while let Some(req) = read_request(&mut reader)? {
        let watching = req.method == "GET"
            && query_param(&req.query, "watch").is_some_and(|w| w == "true" || w == "1");
        if watching {
            let target = st.lock().unwrap().target(&req.path);
            if let Some(t) = target.filter(|t| t.name.is_none()) {
                if req.auth != format!("Bearer {token}") {
                    respond(&mut conn, 401, &status(401, "Unauthorized", "Unauthorized"))?;
                    continue;
                }
                st.lock()
                    .unwrap()
                    .requests
                    .push(format!("WATCH {}", req.path));
                // A watch holds the connection until it ends; then close it.
                return watch(conn, st, changed, &t, &req.query);
            }
        }
        let rv_before = st.lock().unwrap().rv;
        let (code, resp) = route(st, token, &req);
        if st.lock().unwrap().rv != rv_before {
            changed.notify_all();
        }
        respond(&mut conn, code, &resp)?;
    }
    Ok(())
}

fn respond(conn: &mut TcpStream, code: u16, resp: &Value) -> std::io::Result<()> {
    let bytes = resp.to_string();
    write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{bytes}",
        bytes.len()
    )?;
    conn.flush()
}

fn selectors(k: &Kind, query: &str) -> Result<(Labels, Fields), ApiError> {
    let labels =
        Labels::parse(&query_param(query, "labelSelector").unwrap_or_default()).map_err(|e| {
            err(
                400,
                "BadRequest",
                &format!("unable to parse labelSelector: {e}"),
            )
        })?;
    let fields = Fields::parse(
        &k.kind,
        &query_param(query, "fieldSelector").unwrap_or_default(),
    )
    .map_err(|e| err(400, "BadRequest", &e))?;
    Ok((labels, fields))
}

fn route(st: &Mutex<ApiState>, token: &str, req: &Request) -> (u16, Value) {
    let mut st = st.lock().unwrap();
    st.requests.push(format!("{} {}", req.method, req.path));
    if req.auth != format!("Bearer {token}") {
        return (401, status(401, "Unauthorized", "Unauthorized"));
    }
    let Some(t) = st.target(&req.path) else {
        return no_resource();
    };
    match handle(&mut st, &t, req) {
        Ok((code, v)) => (code, v),
        Err(e) => e,
    }
}

fn handle(st: &mut ApiState, t: &Target, req: &Request) -> Result<(u16, Value), ApiError> {
    let k = &t.kind;
    let body = || -> Result<Value, ApiError> {
        serde_json::from_slice(&req.body)
            .map_err(|e| err(400, "BadRequest", &format!("invalid JSON body: {e}")))
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let out = |v: Value| as_version(k, &t.version, v);
    match (req.method.as_str(), t.name.as_deref(), t.sub.as_deref()) {
        (_, _, Some(sub)) if sub != "status" || !k.status => Err(no_resource()),
        ("GET", None, None) => {
            let (labels, fields) = selectors(k, &req.query)?;
            let items: Vec<Value> = st
                .select(k, t.namespace.as_deref(), &labels, &fields)
                .into_iter()
                .map(|o| {
                    let mut o = out(o);
                    // Items of a built-in list carry no type of their own.
                    if !k.custom {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("apiVersion");
                            m.remove("kind");
                        }
                    }
                    o
                })
                .collect();
            Ok((
                200,
                json!({
                    "kind": format!("{}List", k.kind),
                    "apiVersion": k.api_version(&t.version),
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": items,
                }),
            ))
        }
        ("GET", Some(n), _) => st
            .objects
            .get(&ApiState::key(k, &ns, n))
            .cloned()
            .map(|o| (200, out(o)))
            .ok_or_else(|| not_found(k, n)),
        ("POST", None, None) => {
            let mut obj = body()?;
            // The server sets these.
            if let Some(m) = obj["metadata"].as_object_mut() {
                for f in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
                    m.remove(f);
                }
            }
            st.create(k, t.namespace.as_deref(), obj)
                .map(|o| (201, out(o)))
        }
        ("PUT", Some(n), sub) => {
            let obj = body()?;
            st.update(k, &ns, n, obj, sub, k.custom)
                .map(|o| (200, out(o)))
        }
        ("PATCH", Some(n), sub) => {
            let Some(cur) = st.objects.get(&ApiState::key(k, &ns, n)).cloned() else {
                return Err(not_found(k, n));
            };
            let patch = body()?;
            let ct = req.content_type.split(';').next().unwrap_or("").trim();
            let new = match ct {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    let mut v = cur.clone();
                    merge(&mut v, &patch);
                    v
                }
                "application/json-patch+json" => patch::json_patch(&cur, &patch)
                    .map_err(|e| err(422, "Invalid", &format!("the JSON patch failed: {e}")))?,
                other => {
                    return Err(err(
                        415,
                        "UnsupportedMediaType",
                        &format!("the stand-in does not take {other:?} patches"),
                    ))
                }
            };
            // A patch is applied to the current object: a resourceVersion
            // in it is a precondition, none is none.
            let mut new = new;
            if patch.pointer("/metadata/resourceVersion").is_none() {
                new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            }
            let o = st.update(k, &ns, n, new, sub, false)?;
            if k.id() == "nodes" {
                st.node_patches.push(patch);
            } else if k.id() == "pods" && sub.is_some() {
                st.status_patches.push(patch);
            }
            Ok((200, out(o)))
        }
        ("DELETE", Some(n), None) => {
            let options: Option<Value> = serde_json::from_slice(&req.body).ok();
            st.delete(k, &ns, n, options.as_ref())
                .map(|o| (200, out(o)))
        }
        _ => Err(err(405, "MethodNotAllowed", "method not allowed")),
    }
}

/// Stream changes of `t`'s resource after `resourceVersion` as the API
/// does: chunked JSON lines `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|
/// ERROR","object":…}`. See the module docs.
fn watch(
    mut conn: TcpStream,
    st: &Mutex<ApiState>,
    changed: &Condvar,
    t: &Target,
    query: &str,
) -> std::io::Result<()> {
    let k = &t.kind;
    let id = k.id();
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let bookmarks = query_param(query, "allowWatchBookmarks").is_some_and(|b| b == "true");
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let chunk = |conn: &mut TcpStream, v: &Value| -> std::io::Result<()> {
        let line = format!("{v}\n");
        write!(conn, "{:x}\r\n{line}\r\n", line.len())?;
        conn.flush()
    };
    let (labels, fields) = match selectors(k, query) {
        Ok(s) => s,
        Err((code, s)) => return respond(&mut conn, code, &s),
    };
    let end = |conn: &mut TcpStream| write!(conn, "0\r\n\r\n");
    let expired = |conn: &mut TcpStream, last: u64| -> std::io::Result<()> {
        let s = status(410, "Expired", &format!("too old resource version: {last}"));
        chunk(conn, &json!({"type": "ERROR", "object": s}))?;
        end(conn)
    };
    let picks = |o: &Value| labels.matches(o) && fields.matches(o);
    let in_ns = |ns: &str| t.namespace.as_deref().is_none_or(|want| want == ns);
    let mut guard = st.lock().unwrap();
    guard.open_watches += 1;
    let (stalled0, cut0) = (guard.stalled, guard.cut);
    let expired0 = guard.expired.get(&id).copied().unwrap_or(0);
    let interval = guard.bookmark_interval;
    drop(guard);
    // The controls' counts are read before the client hears the watch
    // started: a control used after that applies to this watch.
    let started = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let result = (|| -> std::io::Result<()> {
        started?;
        let mut guard = st.lock().unwrap();
        let mut last: u64 = match query_param(query, "resourceVersion")
            .unwrap_or_default()
            .as_str()
        {
            "" | "0" => {
                let initial = guard.select(k, t.namespace.as_deref(), &labels, &fields);
                let rv = guard.rv;
                drop(guard);
                for o in initial {
                    chunk(
                        &mut conn,
                        &json!({"type": "ADDED", "object": as_version(k, &t.version, o)}),
                    )?;
                }
                guard = st.lock().unwrap();
                rv
            }
            v => match v.parse() {
                Ok(rv) => rv,
                Err(_) => {
                    drop(guard);
                    let s = status(400, "BadRequest", &format!("invalid resourceVersion {v:?}"));
                    chunk(&mut conn, &json!({"type": "ERROR", "object": s}))?;
                    return end(&mut conn);
                }
            },
        };
        if last < guard.compacted.get(&id).copied().unwrap_or(0) {
            drop(guard);
            return expired(&mut conn, last);
        }
        let mut next_bookmark = Instant::now() + interval;
        loop {
            if guard.cut > cut0 {
                drop(guard);
                return conn.shutdown(Shutdown::Both);
            }
            if guard.expired.get(&id).copied().unwrap_or(0) > expired0 {
                drop(guard);
                return expired(&mut conn, last);
            }
            // History this watch had not sent yet was compacted away: it
            // cannot go on without a gap, so it ends as expired (as a
            // watch cache that fell behind does), never silently.
            if last < guard.compacted.get(&id).copied().unwrap_or(0) {
                drop(guard);
                return expired(&mut conn, last);
            }
            let stalled = guard.stalled > stalled0;
            let mut out = Vec::new();
            if !stalled {
                for c in guard
                    .events
                    .iter()
                    .filter(|c| c.rv > last && c.resource == id && in_ns(&c.namespace))
                {
                    let was = c.old.as_ref().is_some_and(picks);
                    let is = picks(&c.object);
                    let kind = match (c.kind, was, is) {
                        ("ADDED", _, true) => "ADDED",
                        ("MODIFIED", true, true) => "MODIFIED",
                        ("MODIFIED", false, true) => "ADDED",
                        ("MODIFIED", true, false) => "DELETED",
                        ("DELETED", _, true) => "DELETED",
                        _ => continue,
                    };
                    out.push(json!({"type": kind, "object": as_version(k, &t.version, c.object.clone())}));
                }
                last = guard.rv.max(last);
                if bookmarks && Instant::now() >= next_bookmark {
                    out.push(json!({"type": "BOOKMARK", "object": {
                        "kind": k.kind, "apiVersion": k.api_version(&t.version),
                        "metadata": {"resourceVersion": last.to_string()},
                    }}));
                    next_bookmark = Instant::now() + interval;
                }
            }
            drop(guard);
            for ev in out {
                chunk(&mut conn, &ev)?;
            }
            let now = Instant::now();
            if now >= deadline && !stalled {
                return end(&mut conn);
            }
            guard = st.lock().unwrap();
            // Woken by a change, at the next bookmark, or every second to
            // notice a gone client.
            if guard.rv == last || stalled {
                let mut wait = Duration::from_secs(1).min(deadline.saturating_duration_since(now));
                if bookmarks && !stalled {
                    wait = wait.min(next_bookmark.saturating_duration_since(now));
                }
                guard = changed
                    .wait_timeout(guard, wait.max(Duration::from_millis(10)))
                    .unwrap()
                    .0;
            }
            if guard.rv == last || stalled {
                drop(guard);
                // An empty write does not detect a closed peer; a zero-size
                // chunk would end the stream. Peek for EOF instead.
                conn.set_nonblocking(true)?;
                let mut b = [0u8; 1];
                let gone = matches!(conn.peek(&mut b), Ok(0));
                conn.set_nonblocking(false)?;
                if gone {
                    return Ok(());
                }
                guard = st.lock().unwrap();
            }
        }
    })();
    st.lock().unwrap().open_watches -= 1;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_kinds_and_objects() {
        let st = ApiState::default();
        let t = st.target("/api/v1/namespaces/ns1/pods/web/status").unwrap();
        assert_eq!(
            (
                t.kind.id(),
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods".into(), Some("ns1"), Some("web"), Some("status"))
        );
        let t = st.target("/api/v1/pods").unwrap();
        assert_eq!((t.kind.id(), t.namespace), ("pods".into(), None));
        let t = st.target("/api/v1/namespaces/ns1").unwrap();
        assert_eq!(
            (t.kind.id(), t.name.as_deref()),
            ("namespaces".into(), Some("ns1"))
        );
        let t = st
            .target("/apis/k8s.cni.cncf.io/v1beta2/namespaces/a/multi-networkpolicies")
            .unwrap();
        assert_eq!(t.kind.id(), "multi-networkpolicies.k8s.cni.cncf.io");
        assert!(st
            .target("/apis/k8s.cni.cncf.io/v1/namespaces/a/multi-networkpolicies")
            .is_none());
        assert!(
            st.target("/api/v1/pods/web").is_none(),
            "pods are namespaced"
        );
        assert!(
            st.target("/apis/plexus.io/v1/plexuskeys").is_none(),
            "not served"
        );
    }

    #[test]
    fn the_store_keeps_versions_generations_and_status() {
        let mut st = ApiState::default();
        let pods = st.kind("pods");
        let p = st
            .create(&pods, Some("a"), json!({"metadata": {"name": "p"}, "spec": {"x": 1}, "status": {"phase": "Pending"}}))
            .unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], "1");
        assert_eq!(p["metadata"]["namespace"], "a");
        assert_eq!(
            st.create(&pods, Some("a"), json!({"metadata": {"name": "p"}}))
                .unwrap_err()
                .0,
            409
        );
        // An update of the object keeps its status; a stale version is 409.
        let mut q = p.clone();
        q["spec"]["x"] = json!(2);
        q["status"]["phase"] = json!("Running");
        let q = st.update(&pods, "a", "p", q, None, false).unwrap();
        assert_eq!(
            (
                q["status"]["phase"].as_str(),
                q["metadata"]["generation"].as_i64()
            ),
            (Some("Pending"), Some(2))
        );
        assert_eq!(
            st.update(&pods, "a", "p", p.clone(), None, false)
                .unwrap_err()
                .0,
            409
        );
        let mut s = q.clone();
        s["status"]["phase"] = json!("Running");
        s["spec"]["x"] = json!(9);
        let s = st
            .update(&pods, "a", "p", s, Some("status"), false)
            .unwrap();
        assert_eq!(
            (s["status"]["phase"].as_str(), s["spec"]["x"].as_i64()),
            (Some("Running"), Some(2))
        );
        // Deleting the namespace's objects with it.
        let nss = st.kind("namespaces");
        st.create(&nss, None, json!({"metadata": {"name": "a"}}))
            .unwrap();
        st.delete(&nss, "", "a", None).unwrap();
        assert!(st.objects.is_empty());
        let kinds: Vec<&str> = st.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            ["ADDED", "MODIFIED", "MODIFIED", "ADDED", "DELETED", "DELETED"]
        );
    }
}
