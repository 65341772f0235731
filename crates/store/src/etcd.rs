//! etcd v3 through its JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`,
//! `/v3/watch`, ...), which every etcd v3 server (3.4 on) serves on its
//! client port. Over hyper, which the agent links for the Kubernetes client
//! anyway: no gRPC stack, no protoc, a few hundred KiB of RSS.
//!
//! TLS (flannel's `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`) is
//! rustls with the ring provider, as the Kubernetes client already uses.
//!
//! Keys and values travel base64-encoded; 64-bit numbers come back as JSON
//! strings (protobuf's JSON mapping) and are accepted either way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::kv::{prefix_end, KeyValue, Kv, KvEvent, KvWatchStream, LeaseId, RangeResult};
use crate::{Revision, StoreError};

/// How long to wait for a TCP connection to one endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a unary request may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials for etcd's auth (`--etcd-username`, `--etcd-password`).
#[derive(Debug, Clone)]
pub struct EtcdAuth {
    pub username: String,
    pub password: String,
}

/// TLS to etcd: the CA that signed the servers' certificates, and our
/// client certificate and key when the servers ask for one
/// (`--client-cert-auth`). PEM files, as flannel takes them.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl EtcdTls {
    fn client_config(&self) -> Result<rustls::ClientConfig, StoreError> {
        let bad = |path: &Path, what: &str, e: String| {
            StoreError::Other(format!("etcd TLS: {} ({what}): {e}", path.display()))
        };
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let ca = self.ca_file.as_deref().ok_or_else(|| {
            StoreError::Other("etcd TLS needs --etcd-cafile (the CA of the etcd servers)".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(ca, "CA file", e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(ca, "CA file", e.to_string()))?;
        if cas.is_empty() {
            return Err(bad(ca, "CA file", "no certificate in it".into()));
        }
        for c in cas {
            roots
                .add(c)
                .map_err(|e| bad(ca, "CA file", e.to_string()))?;
        }
        let builder = tls_builder()?.with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| bad(cert, "certificate file", e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(cert, "certificate file", e.to_string()))?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad(key, "key file", e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| bad(cert, "certificate and key", e.to_string()))
            }
            _ => Err(StoreError::Other(
                "etcd TLS: --etcd-certfile and --etcd-keyfile go together".into(),
            )),
        }
    }
}

/// rustls with the ring provider (the one the Kubernetes client uses).
fn tls_builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, StoreError> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Other(format!("etcd TLS: {e}")))
}

/// An etcd v3 cluster reached through its JSON gateway.
pub struct EtcdKv {
    endpoints: Vec<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The endpoint that answered last: tried first.
    active: AtomicUsize,
    auth: Option<EtcdAuth>,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// `etcd://HOST:PORT[,HOST:PORT...]` → `http://HOST:PORT` endpoints
/// (port 2379 when absent; IPv6 hosts in brackets).
pub fn parse_endpoints(url: &str) -> Result<Vec<String>, StoreError> {
    let bad = |why: String| StoreError::Other(format!("invalid store URL {url:?}: {why}"));
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| bad("expected etcd://HOST:PORT[,HOST:PORT...]".into()))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("no endpoint".into()));
    }
    rest.split(',')
        .map(|hp| {
            let hp = hp.trim();
            let (host, port) = match hp.rsplit_once(':') {
                // A bare IPv6 address has colons but no brackets.
                Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, Some(p)),
                _ => (hp, None),
            };
            let port: u16 = match port {
                None => 2379,
                Some(p) => p
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(format!("{p:?} in {hp:?} is not a port")))?,
            };
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let valid_host = !bare.is_empty()
                && (bare.parse::<std::net::IpAddr>().is_ok()
                    || bare
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
            if !valid_host || (bare.contains(':') && !host.starts_with('[')) {
                return Err(bad(format!(
                    "{hp:?} is not HOST:PORT (IPv6 as [ADDR]:PORT)"
                )));
            }
            let host = if bare.contains(':') {
                format!("[{bare}]")
            } else {
                bare.to_string()
            };
            Ok(format!("http://{host}:{port}"))
        })
        .collect()
}

fn unavailable(msg: String) -> StoreError {
    StoreError::Unavailable(msg)
}

/// An int64 from protobuf JSON (a string or a number; absent = 0).
fn num(v: &Value, key: &str) -> i64 {
    match v.get(key) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

fn unb64(v: &Value, key: &str) -> Result<Vec<u8>, StoreError> {
    match v.get(key).and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .map_err(|e| StoreError::Other(format!("etcd sent invalid base64 in {key}: {e}"))),
    }
}

fn key_value(v: &Value) -> Result<KeyValue, StoreError> {
    let key = String::from_utf8(unb64(v, "key")?)
        .map_err(|_| StoreError::Other("etcd sent a key that is not UTF-8".into()))?;
    Ok(KeyValue {
        key,
        value: unb64(v, "value")?,
        create_revision: num(v, "create_revision"),
        mod_revision: num(v, "mod_revision"),
        version: num(v, "version"),
        lease: num(v, "lease"),
    })
}

fn header_revision(v: &Value) -> Revision {
    v.get("header").map_or(0, |h| num(h, "revision"))
}

/// An etcd error answer → StoreError (compaction recognised by its text,
/// which is stable across etcd versions: "required revision has been
/// compacted").
fn etcd_error(what: &str, err: &Value) -> StoreError {
    let msg = err
        .get("message")
        .or_else(|| err.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("unknown error")
        .to_string();
    if msg.contains("compacted") {
        return StoreError::Compacted(num(err, "compact_revision"));
    }
    StoreError::Other(format!("etcd {what}: {msg}"))
}

impl EtcdKv {
    /// Connect to the first endpoint that answers (bounded: at most
    /// [`CONNECT_TIMEOUT`] per endpoint), authenticating when asked.
    pub async fn connect(
        endpoints: Vec<String>,
        auth: Option<EtcdAuth>,
    ) -> Result<EtcdKv, StoreError> {
        EtcdKv::connect_tls(endpoints, auth, None).await
    }

    /// [`connect`](Self::connect), over TLS when `tls` is given (the
    /// endpoints' `http://` becomes `https://`).
    pub async fn connect_tls(
        endpoints: Vec<String>,
        auth: Option<EtcdAuth>,
        tls: Option<EtcdTls>,
    ) -> Result<EtcdKv, StoreError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        http.enforce_http(false);
        // A watch is one long-lived response: TCP keepalive notices a peer
        // that vanished without a FIN (about a minute), so the stream ends
        // and the agent relists instead of waiting forever.
        http.set_keepalive(Some(Duration::from_secs(30)));
        http.set_keepalive_interval(Some(Duration::from_secs(10)));
        http.set_keepalive_retries(Some(3));
        let (config, endpoints) = match &tls {
            Some(t) => (
                t.client_config()?,
                endpoints
                    .iter()
                    .map(|e| e.replacen("http://", "https://", 1))
                    .collect(),
            ),
            // Plain HTTP: the TLS layer is never used.
            None => (
                tls_builder()?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                endpoints,
            ),
        };
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let kv = EtcdKv {
            endpoints,
            client,
            active: AtomicUsize::new(0),
            auth,
            token: Mutex::new(None),
        };
        if kv.auth.is_some() {
            kv.authenticate().await?;
        }
        // One cheap round trip, so a dead or wrong address fails here.
        kv.call("/v3/maintenance/status", json!({})).await?;
        Ok(kv)
    }

    async fn authenticate(&self) -> Result<(), StoreError> {
        let Some(a) = &self.auth else { return Ok(()) };
        let resp = self
            .call_once(
                "/v3/auth/authenticate",
                &json!({"name": a.username, "password": a.password}),
            )
            .await?;
        let token = resp
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Other("etcd authenticate: no token in the answer".into()))?;
        *self.token.lock().unwrap() = Some(token.to_string());
        Ok(())
    }

    fn request(&self, endpoint: &str, path: &str, body: &Value) -> hyper::Request<Full<Bytes>> {
        let mut req = hyper::Request::post(format!("{endpoint}{path}"))
            .header("content-type", "application/json");
        if let Some(t) = self.token.lock().unwrap().as_ref() {
            req = req.header("authorization", t.as_str());
        }
        req.body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request")
    }

    /// Send to the endpoints in turn (the last good one first) until one
    /// answers; the response head, and the endpoint's index.
    async fn send(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<hyper::Response<Incoming>, StoreError> {
        let n = self.endpoints.len();
        let first = self.active.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let ep = &self.endpoints[idx];
            let fut = self.client.request(self.request(ep, path, body));
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(resp)) => {
                    self.active.store(idx, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(Err(e)) => errors.push(format!("{ep}: {}", error_chain(&e))),
                Err(_) => errors.push(format!("{ep}: no answer within {REQUEST_TIMEOUT:?}")),
            }
        }
        Err(unavailable(format!(
            "etcd unreachable ({})",
            errors.join("; ")
        )))
    }

    async fn call_once(&self, path: &str, body: &Value) -> Result<Value, StoreError> {
        let resp = self.send(path, body).await?;
        let status = resp.status();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| {
                unavailable(format!(
                    "etcd {path}: answer not complete within {REQUEST_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| unavailable(format!("etcd {path}: {e}")))?
            .to_bytes();
        unary_answer(path, status, &bytes)
    }

    /// A unary call; an expired auth token is renewed once.
    async fn call(&self, path: &str, body: Value) -> Result<Value, StoreError> {
        match self.call_once(path, &body).await {
            Err(e) if self.auth.is_some() && e.to_string().contains("invalid auth token") => {
                self.authenticate().await?;
                self.call_once(path, &body).await
            }
            r => r,
        }
    }

    async fn txn(&self, compare: Value, success: Value) -> Result<Option<Revision>, StoreError> {
        let v = self
            .call(
                "/v3/kv/txn",
                json!({"compare": [compare], "success": [success]}),
            )
            .await?;
        Ok(txn_answer(&v))
    }
}

/// A unary call's answer (`status`, body) as the client reads it: the
/// JSON object, or the error etcd (or whatever answered) said.
pub fn unary_answer(
    path: &str,
    status: hyper::StatusCode,
    body: &[u8],
) -> Result<Value, StoreError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        StoreError::Other(format!(
            "etcd {path}: HTTP {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })?;
    if !status.is_success() || v.get("error").is_some() {
        return Err(etcd_error(
            path,
            v.get("error").filter(|e| e.is_object()).unwrap_or(&v),
        ));
    }
    Ok(v)
}

/// A transaction's answer: the revision it committed at, `None` when its
/// compare failed.
pub fn txn_answer(v: &Value) -> Option<Revision> {
    let ok = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
    ok.then(|| header_revision(v))
}

/// A range answer: its keys and the revision it was read at.
pub fn range_answer(v: &Value) -> Result<RangeResult, StoreError> {
    let kvs = v
        .get("kvs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(key_value).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    Ok(RangeResult {
        kvs,
        revision: header_revision(v),
    })
}

/// A single-key range answer: the key, if it exists.
pub fn get_answer(v: &Value) -> Result<Option<KeyValue>, StoreError> {
    match v
        .get("kvs")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        Some(kv) => Ok(Some(key_value(kv)?)),
        None => Ok(None),
    }
}

/// A lease grant's answer: the new lease's ID.
pub fn grant_answer(v: &Value) -> Result<LeaseId, StoreError> {
    match num(v, "ID") {
        0 => Err(StoreError::Other(format!(
            "etcd lease grant: no lease ID in {v}"
        ))),
        id => Ok(id),
    }
}

/// A keepalive's first answer line: the lease's remaining TTL, `None` when
/// the lease is gone.
pub fn keepalive_answer(line: &Value) -> Result<Option<Duration>, StoreError> {
    if let Some(e) = line.get("error") {
        return Err(etcd_error("lease keepalive", e));
    }
    let ttl = line.get("result").map_or(0, |r| num(r, "TTL"));
    Ok((ttl > 0).then(|| Duration::from_secs(ttl as u64)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s += &format!(": {c}");
        src = c.source();
    }
    s
}

fn put_op(key: &str, value: &[u8], lease: Option<LeaseId>) -> Value {
    json!({"key": b64(key.as_bytes()), "value": b64(value), "lease": lease.unwrap_or(0).to_string()})
}

fn mod_compare(key: &str, rev: Revision) -> Value {
    json!({"key": b64(key.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
}

#[async_trait::async_trait]
impl Kv for EtcdKv {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let v = self
            .call("/v3/kv/range", json!({"key": b64(key.as_bytes())}))
            .await?;
        get_answer(&v)
    }

    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes()))}),
            )
            .await?;
        range_answer(&v)
    }

    async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Option<Revision>, StoreError> {
        let cmp = json!({"key": b64(key.as_bytes()), "target": "VERSION", "result": "EQUAL", "version": "0"});
        self.txn(cmp, json!({"request_put": put_op(key, value, lease)}))
            .await
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
        expect_mod_revision: Option<Revision>,
    ) -> Result<Option<Revision>, StoreError> {
        match expect_mod_revision {
            Some(rev) => {
                self.txn(
                    mod_compare(key, rev),
                    json!({"request_put": put_op(key, value, lease)}),
                )
                .await
            }
            None => {
                let v = self.call("/v3/kv/put", put_op(key, value, lease)).await?;
                Ok(Some(header_revision(&v)))
            }
        }
    }

    async fn delete(
        &self,
        key: &str,
        expect_mod_revision: Option<Revision>,
    ) -> Result<bool, StoreError> {
        let del = json!({"key": b64(key.as_bytes())});
        match expect_mod_revision {
            Some(rev) => Ok(self
                .txn(mod_compare(key, rev), json!({"request_delete_range": del}))
                .await?
                .is_some()),
            None => {
                let v = self.call("/v3/kv/deleterange", del).await?;
                Ok(num(&v, "deleted") > 0)
            }
        }
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs().max(1);
        let v = self
            .call(
                "/v3/lease/grant",
                json!({"TTL": secs.to_string(), "ID": "0"}),
            )
            .await?;
        grant_answer(&v)
    }

    async fn keepalive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        // A bidirectional stream in gRPC; through the gateway, one request in
        // the body and the first answer line is the refreshed TTL.
        let resp = self
            .send("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
            .await?;
        if !resp.status().is_success() {
            return Err(StoreError::Other(format!(
                "etcd lease keepalive: HTTP {}",
                resp.status()
            )));
        }
        let mut lines = LineReader::new(resp.into_body());
        let line = tokio::time::timeout(REQUEST_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| unavailable("etcd lease keepalive: no answer".into()))??
            .ok_or_else(|| {
                unavailable("etcd lease keepalive: stream ended without an answer".into())
            })?;
        keepalive_answer(&line)
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self
            .call("/v3/lease/revoke", json!({"ID": lease.to_string()}))
            .await
        {
            Ok(_) => Ok(()),
            // Already gone is what revoking wants.
            Err(StoreError::Other(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<KvWatchStream, StoreError> {
        let req = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": from.max(0).to_string(),
            "prev_kv": true,
            // An idle watch gets an empty answer now and then
            // (`--experimental-watch-progress-notify-interval`, 10 min by
            // default): a quiet stream is then told from a dead one.
            "progress_notify": true,
        }});
        let resp = self.send("/v3/watch", &req).await?;
        if !resp.status().is_success() {
            return Err(StoreError::Other(format!(
                "etcd watch: HTTP {}",
                resp.status()
            )));
        }
        let mut lines = LineReader::new(resp.into_body());
        // The first answer says whether the watch was created, or why not.
        let first = tokio::time::timeout(REQUEST_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| unavailable("etcd watch: not created in time".into()))??
            .ok_or_else(|| unavailable("etcd watch: stream ended before it was created".into()))?;
        let first_batch = watch_batch(&first)?;
        let state = (lines, first_batch, false);
        let stream = futures::stream::unfold(state, |(mut lines, pending, done)| async move {
            if done {
                return None;
            }
            if let Some(batch) = pending.filter(|b| !b.is_empty()) {
                return Some((Ok(batch), (lines, None, false)));
            }
            loop {
                match lines.next_line().await {
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), (lines, None, true))),
                    Ok(Some(line)) => match watch_batch(&line) {
                        // Events, or an empty batch for a progress
                        // notification (see Kv::watch).
                        Ok(Some(b)) => return Some((Ok(b), (lines, None, false))),
                        Ok(None) => continue,
                        Err(e) => return Some((Err(e), (lines, None, true))),
                    },
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        )
        .await
        .map(|_| ())
    }
}

/// The events of one watch answer line: `Ok(None)` for the answer that
/// says the watch was created, an empty batch for a progress
/// notification; an error for compaction or cancellation.
pub fn watch_batch(line: &Value) -> Result<Option<Vec<KvEvent>>, StoreError> {
    if let Some(e) = line.get("error") {
        return Err(etcd_error("watch", e));
    }
    let Some(r) = line.get("result") else {
        return Ok(None);
    };
    let compact = num(r, "compact_revision");
    if compact > 0 {
        return Err(StoreError::Compacted(compact));
    }
    if r.get("canceled").and_then(Value::as_bool) == Some(true) {
        let why = r
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        if why.contains("compacted") {
            return Err(StoreError::Compacted(0));
        }
        return Err(unavailable(format!("etcd cancelled the watch: {why}")));
    }
    let Some(events) = r.get("events").and_then(Value::as_array) else {
        let created = r.get("created").and_then(Value::as_bool) == Some(true);
        return Ok((!created).then(Vec::new));
    };
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        let kv = key_value(ev.get("kv").unwrap_or(&Value::Null))?;
        // PUT is the enum's zero value, left out of protobuf JSON.
        let delete = ev.get("type").and_then(Value::as_str) == Some("DELETE");
        out.push(if delete {
            KvEvent::Delete {
                revision: kv.mod_revision,
                key: kv.key,
                prev: ev.get("prev_kv").map(key_value).transpose()?,
            }
        } else {
            KvEvent::Put(kv)
        });
    }
    Ok(Some(out))
}

/// Newline-delimited JSON from a streaming body (the gateway writes one
/// message per line).
struct LineReader {
    body: Incoming,
    lines: LineSplitter,
}

impl LineReader {
    fn new(body: Incoming) -> LineReader {
        LineReader {
            body,
            lines: LineSplitter::default(),
        }
    }

    async fn next_line(&mut self) -> Result<Option<Value>, StoreError> {
        loop {
            if let Some(line) = self.lines.next_line() {
                return line.map(Some);
            }
            match self.body.frame().await {
                None => return self.lines.finish().transpose(),
                Some(Err(e)) => return Err(unavailable(format!("etcd stream broke: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
            }
        }
    }
}

/// The lines of a streamed answer, as its frames arrive: each non-blank
/// line is one JSON message.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline (a thousand-event
    /// line arrives in many frames; each is scanned once).
    scanned: usize,
}

impl LineSplitter {
    /// Bytes of the body as they arrive.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line's message, if a whole one has arrived.
    pub fn next_line(&mut self) -> Option<Result<Value, StoreError>> {
        loop {
            let found = self.buf[self.scanned..].iter().position(|b| *b == b'\n');
            let Some(pos) = found.map(|p| p + self.scanned) else {
                self.scanned = self.buf.len();
                return None;
            };
            self.scanned = 0;
            let line = self.buf.split_to(pos + 1);
            let line = &line[..pos];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                serde_json::from_slice(line)
                    .map_err(|e| StoreError::Other(format!("etcd stream: bad JSON line: {e}"))),
            );
        }
    }

    /// The body ended: a last line without a newline, if there is one.
    pub fn finish(&mut self) -> Option<Result<Value, StoreError>> {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            self.buf.clear();
            self.scanned = 0;
            return None;
        }
        self.buf.extend_from_slice(b"\n");
        self.next_line()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoints("etcd://10.0.0.1:2379,etcd-b:12379,[fd00::1]:2379,10.0.0.2").unwrap(),
            [
                "http://10.0.0.1:2379",
                "http://etcd-b:12379",
                "http://[fd00::1]:2379",
                "http://10.0.0.2:2379"
            ]
        );
        for bad in [
            "etcd://",
            "http://x:1",
            "etcd://a:b",
            "etcd://a:0",
            "etcd://fd00::1:2379",
            "etcd://a b:1",
        ] {
            let e = parse_endpoints(bad).unwrap_err().to_string();
            assert!(e.contains("invalid store URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn lines_split_across_frames() {
        let mut l = LineSplitter::default();
        l.push(b"{\"a\":");
        assert!(l.next_line().is_none());
        l.push(b"1}\n \n\n{\"b\"");
        assert_eq!(l.next_line().unwrap().unwrap(), json!({"a": 1}));
        assert!(l.next_line().is_none());
        l.push(b":2}\nnot json\n{\"c\":3}");
        assert_eq!(l.next_line().unwrap().unwrap(), json!({"b": 2}));
        assert!(l.next_line().unwrap().is_err());
        assert!(l.next_line().is_none());
        assert_eq!(l.finish().unwrap().unwrap(), json!({"c": 3}));
        assert!(l.finish().is_none());
        l.push(b" \r\t");
        assert!(l.finish().is_none());
    }

    #[test]
    fn unary_answers() {
        let ok = hyper::StatusCode::OK;
        let v = unary_answer("/v3/kv/range", ok, br#"{"header":{"revision":"12"},"kvs":[{"key":"YQ==","value":"eA==","mod_revision":"4"}],"count":"1"}"#).unwrap();
        let r = range_answer(&v).unwrap();
        assert_eq!((r.revision, r.kvs.len(), r.kvs[0].mod_revision), (12, 1, 4));
        assert_eq!(get_answer(&v).unwrap().unwrap().key, "a");
        assert!(get_answer(&json!({})).unwrap().is_none());
        assert_eq!(
            txn_answer(&json!({"header":{"revision":"9"},"succeeded":true})),
            Some(9)
        );
        assert_eq!(txn_answer(&json!({"header":{"revision":"9"}})), None);
        assert_eq!(grant_answer(&json!({"ID":"77","TTL":"10"})).unwrap(), 77);
        assert!(grant_answer(&json!({})).is_err());
        assert_eq!(
            keepalive_answer(&json!({"result":{"ID":"77","TTL":"5"}})).unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            keepalive_answer(&json!({"result":{"ID":"77"}})).unwrap(),
            None
        );
        let e = unary_answer("/v3/kv/range", ok, b"<html>").unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = unary_answer(
            "/v3/kv/range",
            hyper::StatusCode::BAD_REQUEST,
            br#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11}"#,
        )
        .unwrap_err();
        assert!(matches!(e, StoreError::Compacted(_)), "{e}");
        assert!(range_answer(&json!({"kvs":[{"key":"!!"}]})).is_err());
    }

    #[test]
    fn watch_answers() {
        let created: Value =
            serde_json::from_str(r#"{"result":{"header":{"revision":"5"},"created":true}}"#)
                .unwrap();
        assert_eq!(watch_batch(&created).unwrap(), None);
        let progress: Value =
            serde_json::from_str(r#"{"result":{"header":{"revision":"6"}}}"#).unwrap();
        assert_eq!(watch_batch(&progress).unwrap(), Some(vec![]));
        let ev: Value = serde_json::from_str(
            r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"YQ==","create_revision":"6","mod_revision":"6","version":"1","value":"eA==","lease":"99"}},{"type":"DELETE","kv":{"key":"Yg==","mod_revision":"7"},"prev_kv":{"key":"Yg==","value":"eQ==","mod_revision":"3"}}]}}"#,
        )
        .unwrap();
        let b = watch_batch(&ev).unwrap().unwrap();
        assert_eq!(
            b[0],
            KvEvent::Put(KeyValue {
                key: "a".into(),
                value: b"x".to_vec(),
                create_revision: 6,
                mod_revision: 6,
                version: 1,
                lease: 99
            })
        );
        match &b[1] {
            KvEvent::Delete {
                key,
                revision,
                prev,
            } => {
                assert_eq!((key.as_str(), *revision), ("b", 7));
                assert_eq!(prev.as_ref().unwrap().value, b"y");
            }
            e => panic!("{e:?}"),
        }
        let compacted: Value = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"8"}}"#,
        )
        .unwrap();
        assert!(matches!(
            watch_batch(&compacted),
            Err(StoreError::Compacted(8))
        ));
    }
}
