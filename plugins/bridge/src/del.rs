//! DEL: the veth pair, the nftables chains and the IPAM allocation, each
//! attempted whatever happens to the others (every error is reported).

use plexus_cni::plugin::Request;
use plexus_cni::CniError;
use plexus_netlink::{Link, Netlink, Netns};
use plexus_plugin::del::{delete_pod_iface, PodIface};
use plexus_plugin::{netlink_ctx, netlink_err, Collected};

use crate::chains::{attachment, nft_err};
use crate::config::BridgeConf;
use crate::host::veth_alias;
use crate::{ipam, nft};

pub async fn del(req: &Request<'_>, conf: &BridgeConf) -> Result<(), CniError> {
    let env = req.env;
    let ipam_job = conf.ipam_type.as_deref().map(|t| ipam::spawn_del(t, req));
    // The nftables teardown runs beside the veth removal. It costs about
    // 13 ms, nearly all at the close of the netfilter socket: on
    // NETLINK_URELEASE nf_tables flushes its pending destroy work (an RCU
    // grace period) under the netns's commit mutex, which a netdevice
    // unregister in the same netns also takes, so the two mostly serialise.
    // A new thread starts in this thread's netns, the node's, where the
    // chains live.
    let teardown = nft::teardown(
        &attachment(conf, env),
        conf.ip_masq && conf.is_layer3(),
        conf.mac_spoof_chk,
    );
    let nft_job = (!teardown.is_empty()).then(|| std::thread::spawn(move || nft::apply(&teardown)));
    let links = remove_links(req).await;
    let nft_r = match nft_job.map(std::thread::JoinHandle::join) {
        None => Ok(()),
        Some(Err(_)) => Err(CniError::io("the nftables thread panicked")),
        Some(Ok(Err(e))) if e.is_not_supported() => {
            tracing::warn!("{e}: no nftables rules to remove");
            Ok(())
        }
        Some(Ok(r)) => r.map_err(nft_err),
    };
    let mut errors = Collected::new();
    if let Some(job) = ipam_job {
        errors.take("IPAM DEL", job.join());
    }
    errors.take("removing the veth pair", links);
    errors.take("removing the nftables chains", nft_r);
    errors.finish()
}

/// Removes the veth pair: inside the pod netns when the interface there is
/// ours (its peer on the node carries our alias), else the node end found
/// by its alias (the netns or the interface is gone, or CNI_NETNS names
/// another pod's netns, whose interface is left alone).
async fn remove_links(req: &Request<'_>) -> Result<(), CniError> {
    let env = req.env;
    let alias = veth_alias(env);
    let host_ns = Netns::current().map_err(netlink_err)?;
    let host = Netlink::open(&host_ns).await.map_err(netlink_err)?;
    let ours = async |l: &Link| -> Result<bool, CniError> {
        let Some(peer) = l.link.filter(|_| l.kind.as_deref() == Some("veth")) else {
            return Ok(false);
        };
        let peer = host.link_by_index(peer).await.map_err(netlink_err)?;
        Ok(peer.is_some_and(|p| p.alias.as_deref() == Some(&alias) && p.link == Some(l.index)))
    };
    let pod = delete_pod_iface(env.netns.as_deref(), &env.ifname, ours).await;
    if let Ok(PodIface::Deleted) = pod {
        return Ok(());
    }
    let mut errors = Collected::new();
    errors.take("the pod interface", pod);
    errors.take("the node end", remove_by_alias(&host, &alias).await);
    errors.finish()
}

async fn remove_by_alias(host: &Netlink, alias: &str) -> Result<(), CniError> {
    let links = host.links().await.map_err(netlink_err)?;
    for l in links.iter().filter(|l| l.alias.as_deref() == Some(alias)) {
        match host.delete_link_detached(l.index).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(netlink_ctx("failed to delete the host veth")(e)),
        }
    }
    Ok(())
}
