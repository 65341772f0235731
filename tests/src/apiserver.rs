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
    /// Node changes as a watch replays them: (resourceVersion, type, object).
    pub node_events: Vec<(u64, String, Value)>,
    /// The last resourceVersion handed out (for nodes).
    pub node_rv: u64,
    /// Watches from before this resourceVersion get 410 Expired.
    pub node_compacted: u64,
    /// Bodies of accepted node patches.
    pub node_patches: Vec<Value>,
}

impl ApiState {
    /// Record a node change under a new resourceVersion.
    fn node_changed(&mut self, kind: &str, name: &str, deleted: Option<Value>) {
        self.node_rv += 1;
        let rv = self.node_rv;
        let obj = match deleted {
            Some(mut n) => {
                n["metadata"]["resourceVersion"] = json!(rv.to_string());
                n
            }
            None => {
                let n = self.nodes.get_mut(name).expect("node exists");
                n["metadata"]["resourceVersion"] = json!(rv.to_string());
                n.clone()
            }
        };
        self.node_events.push((rv, kind.to_string(), obj));
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
        // Bound on a thread inside the namespace, the socket stays there
        // whichever thread serves it.
        let listener = node.run(|| TcpListener::bind("127.0.0.1:0").expect("bind in netns"));
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
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: plexus\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: plexus\ncurrent-context: test\n"
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
        let mut st = self.state.lock().unwrap();
        st.node_compacted = st.node_rv;
        st.node_events.clear();
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
        if method == "GET"
            && path == "/api/v1/nodes"
            && query_param(query, "watch").is_some_and(|w| w == "true" || w == "1")
        {
            if auth != format!("Bearer {token}") {
                respond(&mut conn, 401, &status(401, "Unauthorized", "Unauthorized"))?;
                continue;
            }
            st.lock().unwrap().requests.push(format!("WATCH {path}"));
            // A watch holds the connection until it ends; then close it.
            return watch_nodes(conn, st, changed, query);
        }
        let (code, resp) = route(st, token, &method, &path, &auth, &body);
        if method == "PATCH" && code == 200 && path.starts_with("/api/v1/nodes/") {
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

/// A query parameter's value (no percent-decoding: the values the client
/// sends here are plain numbers and words).
fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Stream node changes after `resourceVersion` as the API does: chunked
/// JSON lines `{"type":"ADDED|MODIFIED|DELETED","object":Node}`; `0` or no
/// version first lists every node as ADDED; a version older than the kept
/// history gets an ERROR event with a 410 `Expired` Status; the stream ends
/// after `timeoutSeconds`.
fn watch_nodes(
    mut conn: TcpStream,
    st: &Mutex<ApiState>,
    changed: &Condvar,
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
    let mut guard = st.lock().unwrap();
    let mut last: u64 = match query_param(query, "resourceVersion").unwrap_or("") {
        "" | "0" => {
            let initial: Vec<Value> = guard.nodes.values().cloned().collect();
            let rv = guard.node_rv;
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
    if last < guard.node_compacted {
        drop(guard);
        let s = status(410, "Expired", &format!("too old resource version: {last}"));
        chunk(&mut conn, &json!({"type": "ERROR", "object": s}))?;
        return write!(conn, "0\r\n\r\n");
    }
    loop {
        let events: Vec<Value> = guard
            .node_events
            .iter()
            .filter(|(rv, _, _)| *rv > last)
            .map(|(_, t, o)| json!({"type": t, "object": o}))
            .collect();
        last = guard.node_rv.max(last);
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
        if guard.node_rv == last {
            let wait = (deadline - now).min(Duration::from_secs(1));
            guard = changed.wait_timeout(guard, wait).unwrap().0;
        }
        if guard.node_rv == last {
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
                    "metadata": {"resourceVersion": st.node_rv.to_string()},
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
