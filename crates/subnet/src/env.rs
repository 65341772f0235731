//! `subnet.env`: the lease file plexusd writes and plexus-vxlan reads, with
//! flannel's keys (`FLANNEL_NETWORK`, `FLANNEL_SUBNET` = first usable
//! address/len, `FLANNEL_MTU`, `FLANNEL_IPMASQ`, `FLANNEL_IPV6_NETWORK`,
//! `FLANNEL_IPV6_SUBNET`), in the order flannel's `WriteSubnetFile` writes
//! them.

use ipnet::{Ipv4Net, Ipv6Net};

use crate::{Lease, NetworkConfig, SubnetError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Option<Ipv4Net>,
    /// The node's subnet with its first usable address (10.5.52.1/24).
    pub subnet: Option<Ipv4Net>,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
    pub mtu: u32,
    pub ipmasq: bool,
}

fn first_v4(sn: Ipv4Net) -> Ipv4Net {
    let a = u32::from(sn.network()).wrapping_add(1);
    Ipv4Net::new(a.into(), sn.prefix_len()).expect("same prefix length")
}

fn first_v6(sn: Ipv6Net) -> Ipv6Net {
    let a = u128::from(sn.network()).wrapping_add(1);
    Ipv6Net::new(a.into(), sn.prefix_len()).expect("same prefix length")
}

impl SubnetEnv {
    /// What flannel writes for `lease` under `cfg`: the families the config
    /// enables, each subnet as its first usable address.
    pub fn new(cfg: &NetworkConfig, lease: &Lease, mtu: u32, ipmasq: bool) -> SubnetEnv {
        let v4 = cfg.enable_ipv4 && lease.subnet.is_some();
        let v6 = cfg.enable_ipv6 && lease.subnet6.is_some();
        SubnetEnv {
            network: cfg.network.filter(|_| v4),
            subnet: lease.subnet.filter(|_| v4).map(first_v4),
            ipv6_network: cfg.ipv6_network.filter(|_| v6),
            ipv6_subnet: lease.subnet6.filter(|_| v6).map(first_v6),
            mtu,
            ipmasq,
        }
    }

    /// The lease's subnets (network addresses), e.g. to ask for the same
    /// lease again after a restart.
    pub fn lease_subnets(&self) -> (Option<Ipv4Net>, Option<Ipv6Net>) {
        (
            self.subnet.map(|s| s.trunc()),
            self.ipv6_subnet.map(|s| s.trunc()),
        )
    }

    /// The file's text (`KEY=value` lines).
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let (Some(n), Some(sn)) = (self.network, self.subnet) {
            s += &format!("FLANNEL_NETWORK={n}\nFLANNEL_SUBNET={sn}\n");
        }
        if let (Some(n), Some(sn)) = (self.ipv6_network, self.ipv6_subnet) {
            s += &format!("FLANNEL_IPV6_NETWORK={n}\nFLANNEL_IPV6_SUBNET={sn}\n");
        }
        s += &format!("FLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n", self.mtu, self.ipmasq);
        s
    }

    /// Parse the file's text. Unknown keys, blank lines and `#` comments are
    /// ignored (an operator may add their own); a subnet, `FLANNEL_MTU` and
    /// `FLANNEL_IPMASQ` are required.
    pub fn parse(text: &str) -> Result<SubnetEnv, SubnetError> {
        let err = |m: String| SubnetError::Env(m);
        let mut env = SubnetEnv {
            network: None,
            subnet: None,
            ipv6_network: None,
            ipv6_subnet: None,
            mtu: 0,
            ipmasq: false,
        };
        let (mut mtu, mut ipmasq) = (None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| err(format!("line {}: expected KEY=value, got {line:?}", n + 1)))?;
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            let bad = |what: &str| err(format!("line {}: {k}={v:?} is not {what}", n + 1));
            match k {
                "FLANNEL_NETWORK" => {
                    env.network = Some(v.parse().map_err(|_| bad("an IPv4 CIDR"))?)
                }
                "FLANNEL_SUBNET" => env.subnet = Some(v.parse().map_err(|_| bad("an IPv4 CIDR"))?),
                "FLANNEL_IPV6_NETWORK" => {
                    env.ipv6_network = Some(v.parse().map_err(|_| bad("an IPv6 CIDR"))?)
                }
                "FLANNEL_IPV6_SUBNET" => {
                    env.ipv6_subnet = Some(v.parse().map_err(|_| bad("an IPv6 CIDR"))?)
                }
                "FLANNEL_MTU" => mtu = Some(v.parse().map_err(|_| bad("a number"))?),
                // Go's strconv.ParseBool, which flannel's CNI plugin uses.
                "FLANNEL_IPMASQ" => {
                    ipmasq = Some(match v {
                        "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                        "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                        _ => return Err(bad("true or false")),
                    })
                }
                _ => {}
            }
        }
        if env.subnet.is_none() && env.ipv6_subnet.is_none() {
            return Err(err(
                "neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is set".into()
            ));
        }
        env.mtu = mtu.ok_or_else(|| err("FLANNEL_MTU is missing".into()))?;
        env.ipmasq = ipmasq.ok_or_else(|| err("FLANNEL_IPMASQ is missing".into()))?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LeaseAttrs;

    fn lease(v4: Option<&str>, v6: Option<&str>) -> Lease {
        Lease {
            subnet: v4.map(|s| s.parse().unwrap()),
            subnet6: v6.map(|s| s.parse().unwrap()),
            attrs: LeaseAttrs::default(),
        }
    }

    #[test]
    fn renders_flannels_file() {
        let cfg = NetworkConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#)
            .unwrap();
        let env = SubnetEnv::new(&cfg, &lease(Some("10.5.52.0/24"), None), 1450, true);
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(SubnetEnv::parse(&env.render()).unwrap(), env);
        assert_eq!(env.lease_subnets().0, Some("10.5.52.0/24".parse().unwrap()));
    }

    #[test]
    fn renders_dual_stack() {
        let cfg = NetworkConfig::parse(
            br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        let env = SubnetEnv::new(
            &cfg,
            &lease(Some("10.5.52.0/24"), Some("fc00:0:0:5::/64")),
            1430,
            false,
        );
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(SubnetEnv::parse(&env.render()).unwrap(), env);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = |t: &str| SubnetEnv::parse(t).unwrap_err().to_string();
        assert!(e("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").contains("FLANNEL_SUBNET"));
        assert!(e("FLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_IPMASQ=true\n")
            .contains("FLANNEL_MTU is missing"));
        assert!(e("FLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=x\n").contains("line 2"));
        assert!(
            e("FLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1\nFLANNEL_IPMASQ=yes\n")
                .contains("true or false")
        );
        assert!(e("garbage\n").contains("KEY=value"));
        let ok = SubnetEnv::parse(
            "# mine\nFLANNEL_SUBNET=10.5.52.1/24\nOTHER=1\n\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=1\n",
        )
        .unwrap();
        assert!(ok.ipmasq && ok.network.is_none());
    }
}
