//! The CNI handlers: load the config, lock the network's directory for the
//! whole call, and hand over to the allocator.

use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, IpConfig};

use crate::allocator;
use crate::config::IpamConfig;
use crate::disk::DiskStore;
use crate::error::Error;
use crate::resolv;
use crate::store::Store;

#[derive(Debug, Default, Clone, Copy)]
pub struct HostLocal;

fn load(req: &Request) -> Result<IpamConfig, Error> {
    IpamConfig::load(req.conf, &req.env.args)
}

impl HostLocal {
    fn add_inner(&self, req: &Request) -> Result<CniResult, Error> {
        let conf = load(req)?;
        let dns = match &conf.resolv_conf {
            None => Default::default(),
            Some(p) => resolv::parse(
                &plexus_base::files::read_limited_string(p, resolv::MAX_SIZE)
                    .map_err(|e| Error::io(format!("cannot read resolvConf {}", p.display()), e))?,
            ),
        };
        // Everything that can be rejected without the disk is rejected
        // before the directory is created or locked.
        let plan = allocator::plan_requested(&conf.ranges, &conf.requested)?;
        let mut store = DiskStore::open(&conf.data_dir, &conf.name)?;
        let allocs = allocator::allocate(
            &mut store,
            &conf.ranges,
            &plan,
            &req.env.container_id,
            &req.env.ifname,
        )?;
        Ok(CniResult {
            ips: allocs
                .into_iter()
                .map(|a| IpConfig {
                    address: a.address,
                    gateway: Some(a.gateway),
                    interface: None,
                })
                .collect(),
            routes: conf.routes,
            dns,
            ..Default::default()
        })
    }

    fn del_inner(&self, req: &Request) -> Result<(), Error> {
        let conf = load(req)?;
        let mut store = DiskStore::open(&conf.data_dir, &conf.name)?;
        allocator::release(
            &mut store,
            conf.ranges.len(),
            &req.env.container_id,
            &req.env.ifname,
        )?;
        Ok(())
    }

    fn check_inner(&self, req: &Request) -> Result<(), Error> {
        let conf = load(req)?;
        let not_found = || {
            Error::NotAllocated(format!(
                "host-local: Failed to find address added by container {}",
                req.env.container_id
            ))
        };
        let store = DiskStore::open_existing(&conf.data_dir, &conf.name)?.ok_or_else(not_found)?;
        allocator::check(&store, &conf.ranges, &req.env.container_id, &req.env.ifname)?;
        Ok(())
    }

    fn status_inner(&self, req: &Request) -> Result<(), Error> {
        let conf = load(req)?;
        let reservations = match DiskStore::open_existing(&conf.data_dir, &conf.name)? {
            Some(store) => store.list()?,
            None => Vec::new(),
        };
        allocator::status(&reservations, &conf.ranges)
    }

    fn gc_inner(&self, req: &Request) -> Result<(), Error> {
        let conf = load(req)?;
        let valid = req
            .conf
            .valid_attachments()
            .map_err(|e| Error::Config(e.to_string()))?;
        if let Some(mut store) = DiskStore::open_existing(&conf.data_dir, &conf.name)? {
            allocator::gc(&mut store, &valid)?;
        }
        Ok(())
    }
}

impl Plugin for HostLocal {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        Ok(self.add_inner(req)?)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        Ok(self.del_inner(req)?)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        Ok(self.check_inner(req)?)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        Ok(self.status_inner(req)?)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        Ok(self.gc_inner(req)?)
    }
}
