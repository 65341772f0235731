//! A stand-in for the Kubernetes API server, the one mock the project
//! allows (no API server can run on these machines). It speaks the API's
//! JSON for the few calls Plexus makes, so the real `kube` client runs
//! against it unchanged:
//!
//! - `GET  /api/v1/namespaces/{ns}/pods/{name}`                → Pod
//! - `PATCH /api/v1/namespaces/{ns}/pods/{name}/status`        → merge patch, returns the Pod
//! - `GET  /apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}`
//! - `GET  /api/v1/nodes` → NodeList; with `?watch=true` a watch stream
//!   (`resourceVersion`, `timeoutSeconds`; history older than the retained
//!   events gets a 410 `Expired` ERROR event, as from a compacted server)
//! - `GET  /api/v1/nodes/{name}` → Node
//! - `PATCH /api/v1/nodes/{name}` → merge or strategic merge patch (the same
//!   for `metadata.annotations`), returns the Node
//! - cluster-scoped custom resources registered with
//!   [`FakeApiServer::serve_resource`] (a CRD installed):
//!   `GET /apis/{group}/{version}/{plural}` (list, or `?watch=true`;
//!   both take an equality `labelSelector`),
//!   `POST` (409 AlreadyExists), `GET|PUT|DELETE .../{name}`. A PUT must
//!   carry `metadata.resourceVersion` (422 without, as for any custom
//!   resource); it and a DELETE with a `preconditions.resourceVersion` get
//!   409 Conflict when it is not the object's current one (optimistic
//!   concurrency); `metadata.generation`
//!   counts spec changes. An unregistered resource is a 404 without details,
//!   as for a CRD that is not installed.
//!
//! resourceVersions come from one counter for every resource, as the real
//! server's (etcd's revision).
//!
//! Missing objects get a 404 `Status` object, a missing or wrong bearer
//! token a 401 `Status`, as the real server answers. The listener is bound
//! inside a test namespace (on its loopback), so the plugin under test,
//! running in that namespace, reaches it and nothing else can.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Netns;

#[derive(Debug, Default)]
pub struct ApiState {
    /// (namespace, name) → Pod object.
    pub pods: BTreeMap<(String, String), Value>,
    /// (namespace, name) → NetworkAttachmentDefinition object.
    pub nads: BTreeMap<(String, String), Value>,
    /// Every request seen: "METHOD path".
    pub requests: Vec<String>,
    /// Bodies of accepted status patches.
    pub status_patches: Vec<Value>,
    /// name → Node object.
    pub nodes: BTreeMap<String, Value>,
    /// Bodies of accepted node patches.
    pub node_patches: Vec<Value>,
    /// Custom resources served (`group/version/plural` → kind).
    pub resources: BTreeMap<String, String>,
    /// (`group/version/plural`, name) → object.
    pub objects: BTreeMap<(String, String), Value>,
    /// Changes as a watch replays them: (resourceVersion, resource, type,
    /// object); the resource is `nodes` or `group/version/plural`.
    pub events: Vec<(u64, String, String, Value)>,
    /// The last resourceVersion handed out (any resource).
    pub rv: u64,
    /// Per resource: watches from before this resourceVersion get 410.
    pub compacted: BTreeMap<String, u64>,
}

const NODES: &str = "nodes";

impl ApiState {
    /// Record a node change under a new resourceVersion.
    fn node_changed(&mut self, kind: &str, name: &str, deleted: Option<Value>) {
        let obj = match deleted {
            Some(n) => n,
            None => self.nodes.get(name).expect("node exists").clone(),
        };
        let obj = self.changed(NODES, kind, obj);
        if kind != "DELETED" {
            self.nodes.insert(name.into(), obj);
        }
    }

    /// Give `obj` a new resourceVersion and record the change.
    fn changed(&mut self, resource: &str, kind: &str, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.events
            .push((self.rv, resource.into(), kind.into(), obj.clone()));
        obj
    }
}

#[derive(Debug)]
pub struct FakeApiServer {
    pub state: Arc<Mutex<ApiState>>,
    /// Notified on every node change (wakes the watches).
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
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{ip}:{port}\nusers:\n- name: plexus\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: plexus\ncurrent-context: test\n"
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

    pub fn add_pod(&self, namespace: &str, name: &str, annotations: Value) {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("uid-{namespace}-{name}"),
                "resourceVersion": "1",
                "annotations": annotations,
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending"}
        });
        self.state
            .lock()
            .unwrap()
            .pods
            .insert((namespace.into(), name.into()), pod);
    }

    pub fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        let nad = json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("nad-{name}"), "resourceVersion": "1"},
            "spec": {"config": config.to_string()}
        });
        self.state
            .lock()
            .unwrap()
            .nads
            .insert((namespace.into(), name.into()), nad);
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .pods
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// The pod's current annotation value, if set.
    pub fn pod_annotation(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let st = self.state.lock().unwrap();
        st.pods
            .get(&(namespace.to_string(), name.to_string()))?
            .pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))?
            .as_str()
            .map(String::from)
    }
}

impl FakeApiServer {
    /// Add a Node with `spec.podCIDR(s)` (none when empty) and annotations.
    pub fn add_node(&self, name: &str, pod_cidrs: &[&str], annotations: Value) {
        let mut spec = json!({});
        if let Some(first) = pod_cidrs.first() {
            spec = json!({"podCIDR": first, "podCIDRs": pod_cidrs});
        }
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": format!("node-uid-{name}"),
                "resourceVersion": "0",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"kubernetes.io/hostname": name},
                "annotations": annotations,
            },
            "spec": spec,
            "status": {}
        });
        let mut st = self.state.lock().unwrap();
        let kind = if st.nodes.insert(name.into(), node).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.node_changed(kind, name, None);
        self.changed.notify_all();
    }

    /// Merge `annotations` into a node's (a `null` value removes one), as a
    /// kubectl annotate would.
    pub fn annotate_node(&self, name: &str, annotations: Value) {
        let mut st = self.state.lock().unwrap();
        let node = st.nodes.get_mut(name).expect("node exists");
        merge(node, &json!({"metadata": {"annotations": annotations}}));
        st.node_changed("MODIFIED", name, None);
        self.changed.notify_all();
    }

    pub fn delete_node(&self, name: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(n) = st.nodes.remove(name) {
            st.node_changed("DELETED", name, Some(n));
            self.changed.notify_all();
        }
    }

    /// The node object, if present.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.state.lock().unwrap().nodes.get(name).cloned()
    }

    /// A node annotation's value, if set.
    pub fn node_annotation(&self, name: &str, key: &str) -> Option<String> {
        self.node(name)?
            .pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))?
            .as_str()
            .map(String::from)
    }

    /// Forget the node history so far: a watch from an older
    /// resourceVersion gets 410 Expired, as after an etcd compaction.
    pub fn compact_nodes(&self) {
        self.compact(NODES);
    }

    fn compact(&self, resource: &str) {
        let mut st = self.state.lock().unwrap();
        let rv = st.rv;
        st.compacted.insert(resource.into(), rv);
        st.events.retain(|e| e.1 != resource);
    }

    /// Serve a cluster-scoped custom resource, as once its CRD is applied.
    pub fn serve_resource(&self, group: &str, version: &str, plural: &str, kind: &str) {
        self.state
            .lock()
            .unwrap()
            .resources
            .insert(format!("{group}/{version}/{plural}"), kind.into());
    }

    /// Every object of a custom resource, by name.
    pub fn objects(&self, group: &str, version: &str, plural: &str) -> BTreeMap<String, Value> {
        let res = format!("{group}/{version}/{plural}");
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|((r, _), _)| *r == res)
            .map(|((_, n), o)| (n.clone(), o.clone()))
            .collect()
    }

    /// Forget a custom resource's history so far (watches from before get
    /// 410 Expired).
    pub fn compact_resource(&self, group: &str, version: &str, plural: &str) {
        self.compact(&format!("{group}/{version}/{plural}"));
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn serve(
    conn: TcpStream,
    st: &Mutex<ApiState>,
    changed: &Condvar,
    token: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut len = 0usize;
        let mut auth = String::new();
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
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let path = target.split('?').next().unwrap_or("").to_string();
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let watched = if path == "/api/v1/nodes" {
            Some(NODES.to_string())
        } else {
            custom_resource(&st.lock().unwrap(), &path)
                .filter(|(_, name)| name.is_none())
                .map(|(r, _)| r)
        };
        if let Some(resource) = watched.filter(|_| {
            method == "GET" && query_param(query, "watch").is_some_and(|w| w == "true" || w == "1")
        }) {
            if auth != format!("Bearer {token}") {
                respond(&mut conn, 401, &status(401, "Unauthorized", "Unauthorized"))?;
                continue;
            }
            st.lock().unwrap().requests.push(format!("WATCH {path}"));
            // A watch holds the connection until it ends; then close it.
            return watch(conn, st, changed, &resource, query);
        }
        let rv_before = st.lock().unwrap().rv;
        let (code, resp) = route(st, token, &method, &path, query, &auth, &body);
        if st.lock().unwrap().rv != rv_before {
            changed.notify_all();
        }
        respond(&mut conn, code, &resp)?;
    }
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

/// A query parameter's raw value (numbers and words; see [`selector`]).
fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `labelSelector`'s `key=value` terms (equality only, what Plexus
/// sends), percent-decoded.
fn selector(query: &str) -> Vec<(String, String)> {
    let Some(raw) = query_param(query, "labelSelector") else {
        return Vec::new();
    };
    let mut bytes = Vec::new();
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let hex: String = it.by_ref().take(2).map(char::from).collect();
                bytes.push(u8::from_str_radix(&hex, 16).expect("percent escape"));
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes)
        .expect("UTF-8 selector")
        .split(',')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The object carries every label of the selector.
fn selected(obj: &Value, sel: &[(String, String)]) -> bool {
    sel.iter()
        .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v.as_str()))
}

/// The custom resource a path names, if served: (`group/version/plural`,
/// the object name if any).
fn custom_resource(st: &ApiState, path: &str) -> Option<(String, Option<String>)> {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (res, name) = match seg.as_slice() {
        ["apis", g, v, p] => (format!("{g}/{v}/{p}"), None),
        ["apis", g, v, p, n] => (format!("{g}/{v}/{p}"), Some(n.to_string())),
        _ => return None,
    };
    st.resources.contains_key(&res).then_some((res, name))
}

/// The current objects of `resource` the selector picks.
fn current(st: &ApiState, resource: &str, sel: &[(String, String)]) -> Vec<Value> {
    let all: Vec<&Value> = if resource == NODES {
        st.nodes.values().collect()
    } else {
        st.objects
            .iter()
            .filter(|((r, _), _)| r == resource)
            .map(|(_, o)| o)
            .collect()
    };
    all.into_iter()
        .filter(|o| selected(o, sel))
        .cloned()
        .collect()
}

/// Stream changes of `resource` after `resourceVersion` as the API does:
/// chunked JSON lines `{"type":"ADDED|MODIFIED|DELETED","object":…}`; `0`
/// or no version first lists every object as ADDED; a version older than
/// the kept history gets an ERROR event with a 410 `Expired` Status; the
/// stream ends after `timeoutSeconds`.
fn watch(
    mut conn: TcpStream,
    st: &Mutex<ApiState>,
    changed: &Condvar,
    resource: &str,
    query: &str,
) -> std::io::Result<()> {
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(300u64);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let chunk = |conn: &mut TcpStream, v: &Value| -> std::io::Result<()> {
        let line = format!("{v}\n");
        write!(conn, "{:x}\r\n{line}\r\n", line.len())?;
        conn.flush()
    };
    let sel = selector(query);
    let mut guard = st.lock().unwrap();
    let mut last: u64 = match query_param(query, "resourceVersion").unwrap_or("") {
        "" | "0" => {
            let initial = current(&guard, resource, &sel);
            let rv = guard.rv;
            drop(guard);
            for n in initial {
                chunk(&mut conn, &json!({"type": "ADDED", "object": n}))?;
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
                return write!(conn, "0\r\n\r\n");
            }
        },
    };
    if last < guard.compacted.get(resource).copied().unwrap_or(0) {
        drop(guard);
        let s = status(410, "Expired", &format!("too old resource version: {last}"));
        chunk(&mut conn, &json!({"type": "ERROR", "object": s}))?;
        return write!(conn, "0\r\n\r\n");
    }
    loop {
        let events: Vec<Value> = guard
            .events
            .iter()
            .filter(|(rv, r, _, o)| *rv > last && r == resource && selected(o, &sel))
            .map(|(_, _, t, o)| json!({"type": t, "object": o}))
            .collect();
        last = guard.rv.max(last);
        drop(guard);
        for ev in events {
            chunk(&mut conn, &ev)?;
        }
        let now = Instant::now();
        if now >= deadline {
            return write!(conn, "0\r\n\r\n");
        }
        guard = st.lock().unwrap();
        // Woken by a change, or every second to notice a gone client.
        if guard.rv == last {
            let wait = (deadline - now).min(Duration::from_secs(1));
            guard = changed.wait_timeout(guard, wait).unwrap().0;
        }
        if guard.rv == last {
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
}

fn route(
    st: &Mutex<ApiState>,
    token: &str,
    method: &str,
    path: &str,
    query: &str,
    auth: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut st = st.lock().unwrap();
    st.requests.push(format!("{method} {path}"));
    if auth != format!("Bearer {token}") {
        return (401, status(401, "Unauthorized", "Unauthorized"));
    }
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, seg.as_slice()) {
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            match st.pods.get(&(ns.to_string(), name.to_string())) {
                Some(p) => (200, p.clone()),
                None => (
                    404,
                    status(404, "NotFound", &format!("pods \"{name}\" not found")),
                ),
            }
        }
        ("PATCH", ["api", "v1", "namespaces", ns, "pods", name, "status"]) => {
            let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                return (400, status(400, "BadRequest", "invalid JSON patch"));
            };
            let key = (ns.to_string(), name.to_string());
            if !st.pods.contains_key(&key) {
                return (
                    404,
                    status(404, "NotFound", &format!("pods \"{name}\" not found")),
                );
            }
            st.status_patches.push(patch.clone());
            let pod = st.pods.get_mut(&key).unwrap();
            merge(pod, &patch);
            (200, pod.clone())
        }
        (
            "GET",
            ["apis", "k8s.cni.cncf.io", "v1", "namespaces", ns, "network-attachment-definitions", name],
        ) => match st.nads.get(&(ns.to_string(), name.to_string())) {
            Some(n) => (200, n.clone()),
            None => (
                404,
                status(
                    404,
                    "NotFound",
                    &format!("network-attachment-definitions.k8s.cni.cncf.io \"{name}\" not found"),
                ),
            ),
        },
        ("GET", ["api", "v1", "nodes"]) => {
            let items: Vec<Value> = st.nodes.values().cloned().collect();
            (
                200,
                json!({
                    "kind": "NodeList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": items,
                }),
            )
        }
        ("GET", ["api", "v1", "nodes", name]) => match st.nodes.get(*name) {
            Some(n) => (200, n.clone()),
            None => (
                404,
                status(404, "NotFound", &format!("nodes \"{name}\" not found")),
            ),
        },
        ("PATCH", ["api", "v1", "nodes", name]) => {
            let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                return (400, status(400, "BadRequest", "invalid JSON patch"));
            };
            let Some(node) = st.nodes.get_mut(*name) else {
                return (
                    404,
                    status(404, "NotFound", &format!("nodes \"{name}\" not found")),
                );
            };
            // For metadata.annotations (a map) a strategic merge patch
            // is a JSON merge patch.
            merge(node, &patch);
            st.node_patches.push(patch);
            st.node_changed("MODIFIED", name, None);
            (200, st.nodes[*name].clone())
        }
        _ if custom_resource(&st, path).is_some() => {
            let (res, name) = custom_resource(&st, path).expect("checked");
            custom(
                &mut st,
                &res,
                method,
                name.as_deref(),
                &selector(query),
                body,
            )
        }
        _ => (
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

fn conflict(msg: &str) -> (u16, Value) {
    (409, status(409, "Conflict", msg))
}

/// A cluster-scoped custom resource's calls.
fn custom(
    st: &mut ApiState,
    res: &str,
    method: &str,
    name: Option<&str>,
    sel: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    let plural = res.rsplit('/').next().unwrap_or(res).to_string();
    let kind = st.resources[res].clone();
    let not_found = |name: &str| {
        let mut s = status(404, "NotFound", &format!("{plural} \"{name}\" not found"));
        s["details"] = json!({"name": name, "kind": plural});
        (404, s)
    };
    let body: Option<Value> = serde_json::from_slice(body).ok();
    let key = |n: &str| (res.to_string(), n.to_string());
    match (method, name) {
        ("GET", None) => {
            let items = current(st, res, sel);
            (
                200,
                json!({
                    "kind": format!("{kind}List"),
                    "apiVersion": res.rsplit_once('/').map_or("", |(gv, _)| gv),
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": items,
                }),
            )
        }
        ("GET", Some(n)) => match st.objects.get(&key(n)) {
            Some(o) => (200, o.clone()),
            None => not_found(n),
        },
        ("POST", None) => {
            let Some(mut obj) = body else {
                return (400, status(400, "BadRequest", "invalid JSON body"));
            };
            let Some(n) = obj["metadata"]["name"].as_str().map(String::from) else {
                return (422, status(422, "Invalid", "metadata.name: Required value"));
            };
            if st.objects.contains_key(&key(&n)) {
                let mut s = status(
                    409,
                    "AlreadyExists",
                    &format!("{plural} \"{n}\" already exists"),
                );
                s["details"] = json!({"name": n, "kind": plural});
                return (409, s);
            }
            obj["metadata"]["uid"] = json!(format!("uid-{n}-{}", st.rv + 1));
            obj["metadata"]["generation"] = json!(1);
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            let obj = st.changed(res, "ADDED", obj);
            st.objects.insert(key(&n), obj.clone());
            (201, obj)
        }
        ("PUT", Some(n)) => {
            let Some(mut obj) = body else {
                return (400, status(400, "BadRequest", "invalid JSON body"));
            };
            let Some(cur) = st.objects.get(&key(n)).cloned() else {
                return not_found(n);
            };
            // Custom resources allow no unconditional update.
            let Some(want) = obj["metadata"]["resourceVersion"]
                .as_str()
                .map(String::from)
            else {
                return (
                    422,
                    status(
                        422,
                        "Invalid",
                        "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                    ),
                );
            };
            if Some(want.as_str()) != cur["metadata"]["resourceVersion"].as_str() {
                return conflict(&format!(
                    "Operation cannot be fulfilled on {plural} \"{n}\": the object has been modified; please apply your changes to the latest version and try again"
                ));
            }
            let generation = cur["metadata"]["generation"].as_i64().unwrap_or(1)
                + i64::from(obj.get("spec") != cur.get("spec"));
            for k in ["uid", "creationTimestamp"] {
                obj["metadata"][k] = cur["metadata"][k].clone();
            }
            obj["metadata"]["generation"] = json!(generation);
            let obj = st.changed(res, "MODIFIED", obj);
            st.objects.insert(key(n), obj.clone());
            (200, obj)
        }
        ("DELETE", Some(n)) => {
            let Some(cur) = st.objects.get(&key(n)).cloned() else {
                return not_found(n);
            };
            let want = body
                .as_ref()
                .and_then(|b| b.pointer("/preconditions/resourceVersion"))
                .and_then(Value::as_str)
                .map(String::from);
            if want.is_some_and(|w| Some(w.as_str()) != cur["metadata"]["resourceVersion"].as_str())
            {
                return conflict(&format!(
                    "Operation cannot be fulfilled on {plural} \"{n}\": Precondition failed"
                ));
            }
            st.objects.remove(&key(n));
            (200, st.changed(res, "DELETED", cur))
        }
        _ => (405, status(405, "MethodNotAllowed", "method not allowed")),
    }
}
