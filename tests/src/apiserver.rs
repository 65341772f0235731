//! A stand-in for the Kubernetes API server, the one mock the project
//! allows (no API server can run on these machines). It speaks the API's
//! JSON for the few calls Plexus makes, so the real `kube` client runs
//! against it unchanged:
//!
//! - `GET  /api/v1/namespaces/{ns}/pods/{name}`                → Pod
//! - `PATCH /api/v1/namespaces/{ns}/pods/{name}/status`        → merge patch, returns the Pod
//! - `GET  /apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}`
//!
//! Missing objects get a 404 `Status` object, a missing or wrong bearer
//! token a 401 `Status`, as the real server answers. The listener is bound
//! inside a test namespace (on its loopback), so the plugin under test,
//! running in that namespace, reaches it and nothing else can.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
}

#[derive(Debug)]
pub struct FakeApiServer {
    pub state: Arc<Mutex<ApiState>>,
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
        let (st, tok) = (state.clone(), token.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (st, tok) = (st.clone(), tok.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &tok);
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

fn serve(conn: TcpStream, st: &Mutex<ApiState>, token: &str) -> std::io::Result<()> {
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
        let (code, resp) = route(st, token, &method, &path, &auth, &body);
        let bytes = resp.to_string();
        write!(
            conn,
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{bytes}",
            bytes.len()
        )?;
        conn.flush()?;
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
