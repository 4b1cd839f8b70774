//! The client address of a request, as the per-client budgets key it.
//!
//! The TCP peer is the client unless it is one of the `trusted_proxies`: then the client
//! is the right-most hop of the one header the proxies maintain (`trusted_proxy_header`:
//! `X-Forwarded-For` by default, or RFC 7239 `Forwarded`) that is not itself a trusted
//! proxy. Hops to the left of it were written by the client and are never believed. The
//! other header is never read: a proxy passes on, untouched, a header it does not
//! maintain, so a client could name its own address in it. A hop that cannot be read (obfuscated,
//! `unknown`, garbage) ends the walk: the nearest trusted proxy to its right stands in
//! for the client, so a proxy chain that hides its clients shares one budget instead of
//! letting a client pick its own.
//!
//! IPv4 addresses are keyed as they are; an IPv6 client owns a whole prefix (a /64 by
//! default), so it is keyed by that prefix (`client_ipv6_prefix`).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// What a request says about where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHops {
    /// The TCP peer as the runtime saw it (`spin-client-addr`, `ip:port`).
    pub peer: String,
    /// Every `Forwarded` header value, in order.
    pub forwarded: Vec<String>,
    /// Every `X-Forwarded-For` header value, in order.
    pub x_forwarded_for: Vec<String>,
}

/// The client a request is attributed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAddr {
    Ip(IpAddr),
    /// A peer address that does not parse (kept as text, so it still has a budget).
    Unreadable(String),
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Unreadable(raw) => f.write_str(raw),
        }
    }
}

/// A `trusted_proxies` or `client_ipv6_prefix` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientPolicyError {
    #[error(
        "trusted_proxies must be a comma-separated list of IP addresses or CIDRs: \
         {entry:?} is neither"
    )]
    TrustedProxies {
        entry: String,
        #[source]
        cause: std::net::AddrParseError,
    },
    #[error("client_ipv6_prefix must be a whole number from 32 to 128, got {0:?}")]
    Ipv6Prefix(String),
    #[error("trusted_proxy_header must be x-forwarded-for or forwarded, got {0:?}")]
    ProxyHeader(String),
}

/// The header trusted proxies write the client into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

/// How client addresses are found and keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicy {
    trusted_proxies: Vec<IpNet>,
    header: ProxyHeader,
    ipv6_prefix: u8,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ProxyHeader::default(),
            ipv6_prefix: 64,
        }
    }
}

impl ClientPolicy {
    /// Reads `trusted_proxies` (default none), `trusted_proxy_header` (default
    /// `x-forwarded-for`) and `client_ipv6_prefix` (default 64).
    ///
    /// # Errors
    /// A value that does not parse, naming the variable.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, ClientPolicyError> {
        let mut policy = Self::default();
        if let Some(raw) = get("trusted_proxies") {
            for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                // A CIDR, else a single address (whose parse error is the one reported).
                let net = match entry.parse::<IpNet>() {
                    Ok(net) => net,
                    Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|cause| {
                        ClientPolicyError::TrustedProxies {
                            entry: entry.to_string(),
                            cause,
                        }
                    })?,
                };
                policy.trusted_proxies.push(net);
            }
        }
        if let Some(raw) = get("trusted_proxy_header") {
            policy.header = match raw.trim().to_ascii_lowercase().as_str() {
                "x-forwarded-for" => ProxyHeader::XForwardedFor,
                "forwarded" => ProxyHeader::Forwarded,
                _ => return Err(ClientPolicyError::ProxyHeader(raw)),
            };
        }
        if let Some(raw) = get("client_ipv6_prefix") {
            policy.ipv6_prefix = raw
                .trim()
                .parse()
                .ok()
                .filter(|p| (32..=128).contains(p))
                .ok_or_else(|| ClientPolicyError::Ipv6Prefix(raw.clone()))?;
        }
        Ok(policy)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request (see the module docs).
    pub fn resolve(&self, hops: &ClientHops) -> ClientAddr {
        let Some(peer) = parse_hop(&hops.peer) else {
            return ClientAddr::Unreadable(hops.peer.clone());
        };
        if !self.trusted(peer) {
            return ClientAddr::Ip(peer);
        }
        let reported: Vec<&str> = match self.header {
            ProxyHeader::XForwardedFor => hops
                .x_forwarded_for
                .iter()
                .flat_map(|v| v.split(','))
                .collect(),
            ProxyHeader::Forwarded => hops
                .forwarded
                .iter()
                .flat_map(|v| v.split(','))
                .map(forwarded_for)
                .collect(),
        };
        let mut nearest_trusted = peer;
        for hop in reported.iter().rev() {
            match parse_hop(hop) {
                Some(ip) if self.trusted(ip) => nearest_trusted = ip,
                Some(ip) => return ClientAddr::Ip(ip),
                None => break,
            }
        }
        ClientAddr::Ip(nearest_trusted)
    }

    /// The text a client's budget is keyed by: the IPv4 address, or the IPv6 prefix.
    pub fn budget_key(&self, client: &ClientAddr) -> String {
        match client {
            ClientAddr::Ip(IpAddr::V4(ip)) => ip.to_string(),
            ClientAddr::Ip(IpAddr::V6(ip)) => {
                let bits = u128::from(*ip);
                let keep = u32::from(self.ipv6_prefix);
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                format!("{}/{}", Ipv6Addr::from(bits & mask), self.ipv6_prefix)
            }
            ClientAddr::Unreadable(raw) => raw.clone(),
        }
    }
}

/// The `for=` value of one `Forwarded` element (`""` when it has none).
fn forwarded_for(element: &str) -> &str {
    element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
        .map_or("", |(_, value)| value.trim())
}

/// An address from a hop: `ip`, `ip:port`, `[v6]`, `[v6]:port`, maybe quoted. IPv4-mapped
/// IPv6 addresses count as IPv4.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    let ip = if let Some(rest) = hop.strip_prefix('[') {
        IpAddr::V6(ipv6_with_zone(rest.split_once(']')?.0)?)
    } else if let Ok(ip) = hop.parse::<IpAddr>() {
        ip
    } else if let Some(ip) = ipv6_with_zone(hop) {
        IpAddr::V6(ip)
    } else {
        let (host, port) = hop.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        IpAddr::V4(host.parse().ok()?)
    };
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

/// An IPv6 address, with or without a zone (`fe80::1%2`, as a runtime writes a link-local
/// peer): the zone is dropped. Unread, a zoned peer would be keyed by its text, port and
/// all, and each of its connections would get budgets of its own.
fn ipv6_with_zone(text: &str) -> Option<Ipv6Addr> {
    let address = text.split_once('%').map_or(text, |(address, _)| address);
    address.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trusted: &str, prefix: Option<&str>) -> ClientPolicy {
        policy_reading(trusted, None, prefix)
    }

    fn policy_reading(trusted: &str, header: Option<&str>, prefix: Option<&str>) -> ClientPolicy {
        let trusted = trusted.to_string();
        let header = header.map(str::to_string);
        let prefix = prefix.map(str::to_string);
        ClientPolicy::from_settings(move |name| match name {
            "trusted_proxies" => Some(trusted.clone()),
            "trusted_proxy_header" => header.clone(),
            "client_ipv6_prefix" => prefix.clone(),
            _ => None,
        })
        .expect("valid policy")
    }

    fn hops(peer: &str, forwarded: &[&str], xff: &[&str]) -> ClientHops {
        ClientHops {
            peer: peer.to_string(),
            forwarded: forwarded.iter().map(|s| s.to_string()).collect(),
            x_forwarded_for: xff.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ip(text: &str) -> ClientAddr {
        ClientAddr::Ip(text.parse().expect("ip"))
    }

    #[test]
    fn a_link_local_peer_with_a_zone_is_its_address_not_its_text_and_port() {
        // Found by the `client` fuzz target: `[fe80::1%2]:port` (how a runtime writes a
        // zoned peer) was unreadable, so its budget was keyed by its text, port included:
        // a budget per connection.
        let policy = policy("", Some("64"));
        for peer in ["[fe80::1%2]:4000", "[fe80::1%eth0]:4001", "fe80::1%2"] {
            let client = policy.resolve(&hops(peer, &[], &[]));
            assert_eq!(
                client,
                ClientAddr::Ip("fe80::1".parse().expect("ip")),
                "{peer}"
            );
            assert_eq!(policy.budget_key(&client), "fe80::/64");
        }
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let p = ClientPolicy::default();
        assert_eq!(
            p.resolve(&hops("203.0.113.7:5555", &["for=1.2.3.4"], &["1.2.3.4"])),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
        let p = policy("10.0.0.0/8, 192.168.1.1", None);
        // The client spoofs a left-most entry; the proxies append what they saw.
        let request = hops(
            "10.0.0.2:443",
            &[],
            &["6.6.6.6, 198.51.100.9", "192.168.1.1"],
        );
        assert_eq!(p.resolve(&request), ip("198.51.100.9"));
    }

    #[test]
    fn only_the_header_the_proxies_maintain_is_read() {
        // The proxy appends to X-Forwarded-For and passes the client's own Forwarded on.
        let request = hops(
            "10.0.0.2:443",
            &[r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#],
            &["198.51.100.9"],
        );
        let by_default = policy("10.0.0.0/8", None);
        assert_eq!(by_default.resolve(&request), ip("198.51.100.9"));
        let forwarded = policy_reading("10.0.0.0/8", Some("Forwarded"), None);
        assert_eq!(forwarded.resolve(&request), ip("2001:db8:cafe::17"));
        // A proxy that writes Forwarded and no X-Forwarded-For: the client's own
        // X-Forwarded-For is not read.
        let request = hops("10.0.0.2:443", &["for=198.51.100.9"], &["6.6.6.6"]);
        assert_eq!(forwarded.resolve(&request), ip("198.51.100.9"));
        let without = hops("10.0.0.2:443", &[], &["6.6.6.6"]);
        assert_eq!(forwarded.resolve(&without), ip("10.0.0.2"));
    }

    #[test]
    fn an_unreadable_hop_leaves_the_nearest_trusted_proxy_as_the_client() {
        let p = policy("10.0.0.0/8", None);
        let request = hops("10.0.0.2:443", &[], &["unknown, 10.0.0.9"]);
        assert_eq!(p.resolve(&request), ip("10.0.0.9"));
        let forwarded = policy_reading("10.0.0.0/8", Some("forwarded"), None);
        let request = hops("10.0.0.2:443", &["for=_hidden, for=10.0.0.9"], &[]);
        assert_eq!(forwarded.resolve(&request), ip("10.0.0.9"));
        let request = hops("10.0.0.2:443", &[], &[]);
        assert_eq!(p.resolve(&request), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix_and_mapped_ipv4_as_ipv4() {
        let p = ClientPolicy::default();
        let a = p.resolve(&hops("[2001:db8:1:2:aaaa::1]:5555", &[], &[]));
        let b = p.resolve(&hops("[2001:db8:1:2:bbbb::9]:6666", &[], &[]));
        assert_ne!(a, b, "the record keeps the whole address");
        assert_eq!(p.budget_key(&a), "2001:db8:1:2::/64");
        assert_eq!(p.budget_key(&a), p.budget_key(&b));
        let wider = policy("", Some("48"));
        assert_eq!(wider.budget_key(&a), "2001:db8:1::/48");
        let mapped = p.resolve(&hops("[::ffff:198.51.100.9]:1", &[], &[]));
        assert_eq!(p.budget_key(&mapped), "198.51.100.9");
    }

    #[test]
    fn bad_settings_are_refused_with_the_variable_named() {
        for (name, value) in [
            ("trusted_proxies", "10.0.0.0/8, proxy.example"),
            ("trusted_proxy_header", "x-real-ip"),
            ("client_ipv6_prefix", "16"),
            ("client_ipv6_prefix", "sixty-four"),
        ] {
            let err = ClientPolicy::from_settings(|n| (n == name).then(|| value.to_string()))
                .expect_err("refused");
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
