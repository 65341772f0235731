//! A kubeconfig for the meta plugin from the pod's service account, as
//! Multus' auto-configuration writes `multus.kubeconfig`: the API server
//! from `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` (scheme from
//! `KUBERNETES_SERVICE_PROTOCOL`, default https), the service account's CA
//! inline as `certificate-authority-data`, its token inline as `token`.
//! The token rotates: `--watch` rewrites the file when the token or the CA
//! changes.

use std::net::Ipv6Addr;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use plexus_base::files;

pub const DEFAULT_SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where the API server is, from the environment kubelet gives every pod.
#[derive(Debug, Clone)]
pub struct ApiServerEnv {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
}

impl ApiServerEnv {
    pub fn from_env() -> ApiServerEnv {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        ApiServerEnv {
            protocol: get("KUBERNETES_SERVICE_PROTOCOL"),
            host: get("KUBERNETES_SERVICE_HOST"),
            port: get("KUBERNETES_SERVICE_PORT"),
        }
    }

    fn server(&self) -> Result<String> {
        let (Some(host), Some(port)) = (&self.host, &self.port) else {
            bail!(
                "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set \
                 (kubelet sets them in every pod) to write a kubeconfig from the service account"
            );
        };
        if port.parse::<u16>().is_err() {
            bail!("KUBERNETES_SERVICE_PORT {port:?} is not a port number");
        }
        let proto = self.protocol.as_deref().unwrap_or("https");
        if proto != "https" && proto != "http" {
            bail!("KUBERNETES_SERVICE_PROTOCOL {proto:?} is neither https nor http");
        }
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || "/\"'#".contains(c))
        {
            bail!("KUBERNETES_SERVICE_HOST {host:?} is not a host name or address");
        }
        let host = if host.parse::<Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(format!("{proto}://{host}:{port}"))
    }
}

/// The kubeconfig text for the service account in `sa_dir` (`token`,
/// `ca.crt`).
pub fn render(sa_dir: &Path, env: &ApiServerEnv) -> Result<Vec<u8>> {
    let server = env.server()?;
    let read = |name: &str| {
        let p = sa_dir.join(name);
        files::read_limited(&p, 1 << 20)
            .with_context(|| format!("cannot read the service account's {}", p.display()))
    };
    let token = String::from_utf8(read("token")?)
        .map_err(|_| anyhow!("the service account token is not text"))?;
    let token = token.trim();
    if token.is_empty() || token.chars().any(|c| c.is_control()) {
        bail!(
            "the service account token in {} is empty or not one line",
            sa_dir.display()
        );
    }
    let ca = read("ca.crt")?;
    if !ca.starts_with(b"-----BEGIN") {
        bail!(
            "{} is not a PEM certificate",
            sa_dir.join("ca.crt").display()
        );
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    // JSON strings are YAML strings: quoting through serde_json is exact.
    let q = |s: &str| serde_json::to_string(s).expect("serializes");
    let text = format!(
        "# Kubeconfig for the plexus meta plugin, written by plexusctl install\n\
         # from the service account of the plexus DaemonSet.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: plexus\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: plexus-context\n  context:\n    cluster: local\n    user: plexus\n\
         current-context: plexus-context\n",
        server = q(&server),
        ca = q(&ca),
        token = q(token),
    );
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(host: &str, port: &str) -> ApiServerEnv {
        ApiServerEnv {
            protocol: None,
            host: Some(host.into()),
            port: Some(port.into()),
        }
    }

    #[test]
    fn servers() {
        assert_eq!(
            env("10.96.0.1", "443").server().unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            env("fd00::1", "443").server().unwrap(),
            "https://[fd00::1]:443"
        );
        assert!(env("10.96.0.1", "x").server().is_err());
        assert!(env("a/b", "443").server().is_err());
        let none = ApiServerEnv {
            protocol: None,
            host: None,
            port: None,
        };
        let e = none.server().unwrap_err().to_string();
        assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");
    }

    #[test]
    fn kube_reads_what_we_write() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("token"), "abc.def\n").unwrap();
        std::fs::write(
            d.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = render(d.path(), &env("fd00::1", "6443")).unwrap();
        let kc: kube::config::Kubeconfig =
            serde_yaml_ng::from_slice(&text).expect("a kubeconfig kube can read");
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://[fd00::1]:6443"));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_ref().unwrap())
            .unwrap();
        assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(kc.auth_infos[0].auth_info.as_ref().unwrap().token.is_some());
        let v: serde_json::Value = serde_yaml_ng::from_slice(&text).unwrap();
        assert_eq!(v["users"][0]["user"]["token"], "abc.def");
        assert_eq!(kc.current_context.as_deref(), Some("plexus-context"));

        std::fs::remove_file(d.path().join("token")).unwrap();
        let e = format!("{:#}", render(d.path(), &env("h", "1")).unwrap_err());
        assert!(e.contains("token"), "{e}");
    }
}
