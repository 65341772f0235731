//! The glue between the CNI handlers and [`crate::nft`]: which attachment a
//! call's chains belong to, and what an nftables failure is in CNI terms.
//! ADD, DEL and GC share it, so neither handler module reaches into the
//! other.

use plexus_cni::error::plexus_codes;
use plexus_cni::{CniEnv, CniError};

use crate::config::BridgeConf;
use crate::nft::{Attachment, NftError};

/// An nftables failure: 101 when the kernel has no nf_tables, else 100.
pub(crate) fn nft_err(e: NftError) -> CniError {
    if e.is_not_supported() {
        CniError::plugin(plexus_codes::KERNEL_FEATURE_MISSING, e.to_string())
            .with_details("ipMasq and macspoofchk need nftables (nf_tables) in the kernel")
    } else {
        CniError::kernel(e.to_string())
    }
}

/// The attachment this call's chains are named after.
pub(crate) fn attachment<'a>(conf: &'a BridgeConf, env: &'a CniEnv) -> Attachment<'a> {
    Attachment {
        network: &conf.network,
        ifname: &env.ifname,
        container_id: &env.container_id,
    }
}
