//! The plan: everything an ADD will do and its DEL must undo, in order.
//! ADD writes it to cacheDir before the first delegate runs ([`crate::cache`]);
//! [`crate::planner`] builds it. The format is documented in meta/README.md.

use std::net::IpAddr;

use plexus_runtime::NetworkConfigList;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::annotation::NetworkSelection;
use crate::error::MetaError;
use crate::types::{AttachmentKey, PodRef};

pub const PLAN_KIND: &str = "plexusPlanV1";

/// Everything ADD will do and DEL must undo, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub kind: String,
    pub container_id: String,
    /// The interface the runtime asked the meta plugin for; the cluster
    /// network gets it.
    pub ifname: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    #[serde(default)]
    pub pod_uid: String,
    pub attachments: Vec<PlannedAttachment>,
}

/// One delegate network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedAttachment {
    /// `namespace/name` for a NAD, the network name otherwise (the name in
    /// network-status).
    pub name: String,
    pub ifname: String,
    /// The cluster network (eth0): its result is the meta plugin's result.
    pub master: bool,
    /// The network as a conflist object, cni-args already merged.
    pub config: Value,
    #[serde(default)]
    pub cni_args: Vec<[String; 2]>,
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    /// The annotation element that asked for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<NetworkSelection>,
    /// Set when this attachment's own ADD failed and the rollback could
    /// not finish: its DEL is still called, but a failure there is only
    /// logged. A delegate that cannot ADD (a broken plugin, arguments it
    /// refuses) usually cannot DEL either, and must not make the pod
    /// undeletable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub add_failed: bool,
}

impl Plan {
    /// A plan with no attachments for `key`.
    pub fn empty(key: &AttachmentKey, pod: &PodRef) -> Plan {
        Plan {
            kind: PLAN_KIND.into(),
            container_id: key.container_id.clone(),
            ifname: key.ifname.clone(),
            netns: String::new(),
            pod_namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            attachments: Vec::new(),
        }
    }

    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    pub fn pod(&self) -> PodRef {
        PodRef {
            namespace: self.pod_namespace.clone(),
            name: self.pod_name.clone(),
            uid: self.pod_uid.clone(),
        }
    }
}

impl PlannedAttachment {
    /// The delegate network's own name (its config's `name`): what the
    /// inner runtime's result cache is keyed by.
    pub fn network_name(&self) -> &str {
        self.config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(&self.name)
    }

    /// The type of the delegate's first plugin, the one that makes the
    /// interface (`plexus-vxlan`, `macvlan`...): what `plexusctl status`
    /// derives the network model from. The plan has always stored the full
    /// config, so plans written before this existed answer too. `None` when
    /// the config names no type (a plan from a damaged file).
    pub fn plugin_type(&self) -> Option<&str> {
        let first = match self.config.get("plugins") {
            Some(Value::Array(plugins)) => plugins.first()?,
            // A single plugin config rather than a list.
            _ => &self.config,
        };
        first
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    }

    pub fn network_list(&self) -> Result<NetworkConfigList, MetaError> {
        NetworkConfigList::from_bytes(&serde_json::to_vec(&self.config).expect("serializes"))
            .map_err(|e| MetaError::Selection(format!("network \"{}\": {e}", self.name)))
    }

    /// The default-route gateways the pod asked this interface to hold.
    pub fn default_route(&self) -> &[IpAddr] {
        self.request
            .as_ref()
            .map(|r| r.default_route.as_slice())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(config: Value) -> PlannedAttachment {
        PlannedAttachment {
            name: "n".into(),
            ifname: "net1".into(),
            master: false,
            config,
            cni_args: Vec::new(),
            capability_args: Map::new(),
            request: None,
            add_failed: false,
        }
    }

    #[test]
    fn plugin_type_is_the_first_plugin_of_the_list() {
        let a = attachment(
            serde_json::json!({"name":"n","plugins":[{"type":"plexus-vxlan"},{"type":"portmap"}]}),
        );
        assert_eq!(a.plugin_type(), Some("plexus-vxlan"));
        let a = attachment(serde_json::json!({"name":"n","type":"macvlan"}));
        assert_eq!(a.plugin_type(), Some("macvlan"));
        for broken in [
            serde_json::json!({"name":"n","plugins":[]}),
            serde_json::json!({"name":"n","plugins":[{"type":""}]}),
            serde_json::json!({}),
        ] {
            assert_eq!(attachment(broken).plugin_type(), None);
        }
    }
}
