//! `resolvConf`: a resolv.conf-format file turned into the result's `dns`,
//! line by line as the reference's `parseResolvConf`.

use plexus_cni::Dns;

/// The largest resolvConf read: a resolv.conf is a few hundred bytes; this
/// bounds what a wrong path (`/dev/zero`, a huge file) can make us read.
pub const MAX_SIZE: u64 = 1 << 20;

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| s.to_string());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_string()),
            "domain" => dns.domain = fields[1].to_string(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_reference() {
        let d = parse(
            "# comment\n; other comment\nnameserver 10.0.0.53\nnameserver fd00::53 extra\n\
             domain example.com\nsearch a.example b.example\noptions ndots:5 rotate\n\
             sortlist 10.0.0.0\nnameserver\n",
        );
        assert_eq!(d.nameservers, ["10.0.0.53", "fd00::53"]);
        assert_eq!(d.domain, "example.com");
        assert_eq!(d.search, ["a.example", "b.example"]);
        assert_eq!(d.options, ["ndots:5", "rotate"]);
        assert!(parse("").is_empty());
    }
}
