//! The delegate's config: flannel's rendering, with Plexus's plugins as the
//! defaults. Keys the user gave in `delegate` win, except `name` and `ipam`,
//! which the plugin always sets.

use plexus_cni::CniError;
use plexus_subnet::SubnetEnv;
use serde_json::{json, Map, Value};

use crate::config::VxlanConf;

/// `delegate.type` when the user names none (flannel: `bridge`).
pub const DEFAULT_DELEGATE: &str = "plexus-bridge";
/// `ipam.type` when the user names none (flannel: `host-local`).
pub const DEFAULT_IPAM: &str = "plexus-host-local";

/// Render the delegate config for network `name` in `cni_version`.
pub fn delegate_config(
    conf: &VxlanConf,
    name: &str,
    cni_version: &str,
    env: &SubnetEnv,
) -> Result<Map<String, Value>, CniError> {
    let mut d = conf.delegate.clone();
    d.insert("name".into(), json!(name));
    d.insert("cniVersion".into(), json!(cni_version));
    d.entry("type").or_insert_with(|| json!(DEFAULT_DELEGATE));
    // If the agent does not masquerade pod traffic, the bridge must.
    d.entry("ipMasq").or_insert_with(|| json!(!env.ipmasq));
    d.entry("mtu").or_insert_with(|| json!(env.mtu));
    let is_bridge = matches!(
        d.get("type").and_then(Value::as_str),
        Some(DEFAULT_DELEGATE | "bridge")
    );
    if is_bridge {
        d.entry("isGateway").or_insert_with(|| json!(true));
    }
    if !conf.runtime_config.is_empty() {
        d.insert(
            "runtimeConfig".into(),
            Value::Object(conf.runtime_config.clone()),
        );
    }
    d.insert("ipam".into(), Value::Object(ipam(conf, env)?));
    Ok(d)
}

/// The user's `ipam` with the node's subnets as the ranges and a route to
/// each cluster network added to the user's routes.
fn ipam(conf: &VxlanConf, env: &SubnetEnv) -> Result<Map<String, Value>, CniError> {
    let mut ipam = conf.ipam.clone();
    ipam.entry("type").or_insert_with(|| json!(DEFAULT_IPAM));
    let mut ranges = Vec::new();
    if let Some(sn) = env.subnet {
        ranges.push(json!([{ "subnet": sn.trunc().to_string() }]));
    }
    if let Some(sn6) = env.ipv6_subnet {
        ranges.push(json!([{ "subnet": sn6.trunc().to_string() }]));
    }
    if ranges.is_empty() {
        return Err(CniError::invalid_config(
            "subnet.env has neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET",
        ));
    }
    ipam.insert("ranges".into(), Value::Array(ranges));
    let mut routes = match ipam.get("routes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(r)) => r.clone(),
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "failed to read IPAM routes: ipam.routes must be an array, got {other}"
            )))
        }
    };
    if let Some(nw) = env.network {
        routes.push(json!({ "dst": nw.trunc().to_string() }));
    }
    if let Some(nw6) = env.ipv6_network {
        routes.push(json!({ "dst": nw6.trunc().to_string() }));
    }
    ipam.insert("routes".into(), Value::Array(routes));
    Ok(ipam)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::NetConf;

    fn conf(extra: Value) -> VxlanConf {
        let mut v = json!({"cniVersion":"1.0.0","name":"cbr0","type":"plexus-vxlan"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        VxlanConf::load(&NetConf::from_value(v).unwrap()).unwrap()
    }

    fn env4() -> SubnetEnv {
        SubnetEnv {
            network: Some("10.5.0.0/16".parse().unwrap()),
            subnet: Some("10.5.52.1/24".parse().unwrap()),
            ipv6_network: None,
            ipv6_subnet: None,
            mtu: 1450,
            ipmasq: true,
        }
    }

    #[test]
    fn flannel_readme_example() {
        // flannel's README: subnet.env 10.1.0.0/16, 10.1.17.1/24, 1472, ipmasq.
        let env = SubnetEnv {
            network: Some("10.1.0.0/16".parse().unwrap()),
            subnet: Some("10.1.17.1/24".parse().unwrap()),
            mtu: 1472,
            ..env4()
        };
        let d = delegate_config(&conf(json!({})), "mynet", "1.0.0", &env).unwrap();
        assert_eq!(
            Value::Object(d),
            json!({
                "name": "mynet",
                "cniVersion": "1.0.0",
                "type": "plexus-bridge",
                "mtu": 1472,
                "ipMasq": false,
                "isGateway": true,
                "ipam": {
                    "type": "plexus-host-local",
                    "ranges": [[{"subnet": "10.1.17.0/24"}]],
                    "routes": [{"dst": "10.1.0.0/16"}]
                }
            })
        );
    }

    #[test]
    fn ipmasq_is_the_opposite_of_the_agents() {
        let env = SubnetEnv {
            ipmasq: false,
            ..env4()
        };
        let d = delegate_config(&conf(json!({})), "n", "1.0.0", &env).unwrap();
        assert_eq!(d["ipMasq"], json!(true));
    }

    #[test]
    fn delegate_keys_win_except_name_and_ipam() {
        let c = conf(json!({
            "delegate": {"bridge": "mynet0", "mtu": 1400, "ipMasq": true,
                         "isGateway": false, "hairpinMode": true, "isDefaultGateway": true},
            "runtimeConfig": {"portMappings": []}
        }));
        let d = delegate_config(&c, "n", "0.4.0", &env4()).unwrap();
        assert_eq!(d["bridge"], "mynet0");
        assert_eq!(d["mtu"], 1400);
        assert_eq!(d["ipMasq"], true);
        assert_eq!(d["isGateway"], false);
        assert_eq!(d["hairpinMode"], true);
        assert_eq!(d["isDefaultGateway"], true);
        assert_eq!(d["cniVersion"], "0.4.0");
        assert_eq!(d["name"], "n");
        assert_eq!(d["runtimeConfig"], json!({"portMappings": []}));
    }

    #[test]
    fn other_delegates_get_no_is_gateway() {
        let c = conf(json!({"delegate": {"type": "plexus-ipvlan", "master": "eth0"}}));
        let d = delegate_config(&c, "n", "1.0.0", &env4()).unwrap();
        assert_eq!(d["type"], "plexus-ipvlan");
        assert!(!d.contains_key("isGateway"));
    }

    #[test]
    fn user_ipam_is_the_base() {
        let c = conf(json!({"ipam": {
            "type": "host-local",
            "dataDir": "/tmp/x",
            "ranges": [[{"subnet": "192.168.0.0/24"}]],
            "routes": [{"dst": "10.96.0.0/12"}]
        }}));
        let d = delegate_config(&c, "n", "1.0.0", &env4()).unwrap();
        assert_eq!(
            d["ipam"],
            json!({
                "type": "host-local",
                "dataDir": "/tmp/x",
                "ranges": [[{"subnet": "10.5.52.0/24"}]],
                "routes": [{"dst": "10.96.0.0/12"}, {"dst": "10.5.0.0/16"}]
            })
        );
        let bad = conf(json!({"ipam": {"routes": "x"}}));
        assert_eq!(
            delegate_config(&bad, "n", "1.0.0", &env4())
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn dual_stack_and_ipv6_only() {
        let env = SubnetEnv {
            ipv6_network: Some("fd00:5::/56".parse().unwrap()),
            ipv6_subnet: Some("fd00:5:0:3::1/64".parse().unwrap()),
            ..env4()
        };
        let d = delegate_config(&conf(json!({})), "n", "1.0.0", &env).unwrap();
        assert_eq!(
            d["ipam"]["ranges"],
            json!([[{"subnet": "10.5.52.0/24"}], [{"subnet": "fd00:5:0:3::/64"}]])
        );
        assert_eq!(
            d["ipam"]["routes"],
            json!([{"dst": "10.5.0.0/16"}, {"dst": "fd00:5::/56"}])
        );
        let v6only = SubnetEnv {
            network: None,
            subnet: None,
            ..env
        };
        let d = delegate_config(&conf(json!({})), "n", "1.0.0", &v6only).unwrap();
        assert_eq!(
            d["ipam"]["ranges"],
            json!([[{"subnet": "fd00:5:0:3::/64"}]])
        );
        assert_eq!(d["ipam"]["routes"], json!([{"dst": "fd00:5::/56"}]));
    }
}
