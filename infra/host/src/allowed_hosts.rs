//! `allowed_outbound_hosts`: parsing and matching with Spin's rules.
//!
//! An entry is `scheme://host[:port]`. Hosts are compared as literals (no DNS), a missing
//! port means the scheme's default, and `a..b` port ranges exclude `b`. The special host
//! `*.spin.internal` allows service chaining to the app's own components.

use std::net::IpAddr;

use anyhow::bail;
use ipnet::IpNet;

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.suffix`: subdomains of `suffix` only.
    Subdomain(String),
    Literal(String),
    Cidr(IpNet),
    /// `self` / `self.alt`: requests back to this app.
    SelfApp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    One(u16),
    /// Start inclusive, end exclusive.
    Range(u16, u16),
}

/// The default port of the schemes Spin knows.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses one entry.
    ///
    /// # Errors
    /// Spin's reasons: no scheme, a path, no port for a scheme without a default, a
    /// wildcard anywhere but as a subdomain, `insecure:allow-all`.
    pub fn parse(entry: &str) -> anyhow::Result<Self> {
        // Spin trims an entry (a templated one may get its spaces from a variable).
        let entry = entry.trim();
        if entry == "insecure:allow-all" {
            bail!(
                "'insecure:allow-all' is not allowed - use '*://*:*' instead if you really want to allow all outbound traffic'"
            );
        }
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!(
                "{:?} does not contain a scheme (e.g., 'http://' or '*://')",
                shown(entry)
            );
        };
        if scheme.is_empty() || !(scheme == "*" || scheme.chars().all(|c| c.is_ascii_alphabetic()))
        {
            bail!("{:?} has an invalid scheme", shown(entry));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') && rest.parse::<IpNet>().is_err() && !looks_like_cidr_with_port(rest)
        {
            bail!("{:?} must not include a path", shown(entry));
        }
        let (host, port) = split_host_port(rest);
        let scheme = (scheme != "*").then(|| scheme.to_string());
        let port = match port {
            None => match scheme.as_deref().and_then(default_port) {
                Some(p) => PortPattern::One(p),
                None => bail!(
                    "{:?}: no port was provided and the scheme {:?} does not have a known default port number",
                    shown(entry),
                    scheme.as_deref().unwrap_or("*")
                ),
            },
            Some("*") => PortPattern::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => PortPattern::Range(parse_port(entry, a)?, parse_port(entry, b)?),
                None => PortPattern::One(parse_port(entry, p)?),
            },
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if host == "self" || host == "self.alt" {
            HostPattern::SelfApp
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.contains('*') {
                bail!(
                    "{:?}: wildcards are allowed only as subdomains",
                    shown(entry)
                );
            }
            // Kept as written, as Spin keeps it: request hosts are lower case, so a
            // pattern with upper case matches nothing (and is no chaining wildcard).
            HostPattern::Subdomain(suffix.to_string())
        } else if host.contains('*') {
            bail!(
                "{:?}: wildcards are allowed only as subdomains",
                shown(entry)
            );
        } else if let Ok(net) = host.parse::<IpNet>() {
            HostPattern::Cidr(net)
        } else if host.is_empty() {
            bail!("{:?} has no host", shown(entry));
        } else {
            HostPattern::Literal(host.trim_matches(['[', ']']).to_ascii_lowercase())
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether this entry allows `scheme://host:port` (port already defaulted).
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.allows_scheme_and_port(scheme, port) {
            return false;
        }
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        match &self.host {
            HostPattern::Any => true,
            // Spin replaces this entry by one literal entry per component: it matches
            // only chaining targets (see `allows_chaining`).
            HostPattern::Subdomain(suffix) if suffix == "spin.internal" => false,
            // Domain names only, as in Spin: `*.0.0.1` is no pattern for an address.
            HostPattern::Subdomain(suffix) => {
                !is_address(&host)
                    && host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|head| head.ends_with('.') && head.len() > 1)
            }
            HostPattern::Literal(name) => *name == host,
            HostPattern::Cidr(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
            HostPattern::SelfApp => false,
        }
    }

    fn allows_scheme_and_port(&self, scheme: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        match self.port {
            PortPattern::Any => true,
            PortPattern::One(p) => p == port,
            PortPattern::Range(a, b) => (a..b).contains(&port),
        }
    }

    /// Whether this entry allows requests back to the app itself: as in Spin
    /// (`check_relative_url(&["http", "https"])`), an entry of either scheme does,
    /// whatever scheme the request names.
    pub fn allows_self(&self) -> bool {
        let scheme_ok = self
            .scheme
            .as_deref()
            .is_none_or(|s| s == "http" || s == "https");
        scheme_ok && matches!(self.host, HostPattern::SelfApp | HostPattern::Any)
    }

    /// Whether this entry allows service chaining to `component` over `scheme://…:port`.
    /// As in Spin, `<scheme>://*.spin.internal[:port]` stands for one literal entry per
    /// component of the app (`known`: `component` is one), with the entry's scheme and
    /// port; any other entry is checked as for any host.
    pub fn allows_chaining(&self, component: &str, scheme: &str, port: u16, known: bool) -> bool {
        match &self.host {
            HostPattern::Subdomain(suffix) if suffix == "spin.internal" => {
                known && self.allows_scheme_and_port(scheme, port)
            }
            _ => self.allows(scheme, &format!("{component}.spin.internal"), port),
        }
    }
}

/// Whether `host` (without brackets) is an IP address in any spelling a resolver would
/// take as one: Spin parses hosts as URLs do, so `0x7f.0.0.1` and `127.1` are
/// 127.0.0.1, not names.
fn is_address(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok() || matches!(url::Host::parse(host), Ok(url::Host::Ipv4(_)))
}

fn looks_like_cidr_with_port(rest: &str) -> bool {
    let (host, _) = split_host_port(rest);
    host.parse::<IpNet>().is_ok()
}

/// Splits `host[:port]`, minding `[v6]:port`.
fn split_host_port(rest: &str) -> (&str, Option<&str>) {
    if let Some(stripped) = rest.strip_prefix('[')
        && let Some((v6, after)) = stripped.split_once(']')
    {
        return (v6, after.strip_prefix(':'));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (rest, None),
    }
}

fn parse_port(entry: &str, text: &str) -> anyhow::Result<u16> {
    // The port's text is not shown: in a pasted URL with credentials it is their end.
    text.parse()
        .map_err(|e| anyhow::anyhow!("{:?}: invalid port: {e}", shown(entry)))
}

/// An entry as error messages show it. An allowed host holds neither credentials, a
/// path, a query nor a fragment, so an entry with any of them is most likely a URL pasted
/// into the wrong variable, and what they hold may be secret (a password, a token): all
/// are left out. Credentials first (everything up to the last `@`, which may itself hold
/// `/`), then everything from the first `/`, `?` or `#` (a CIDR's `/` excepted).
/// Spin's messages show the whole entry.
fn shown(entry: &str) -> String {
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), entry),
    };
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((_, rest)) => ("…@", rest),
        None => ("", rest),
    };
    let cidr = rest.parse::<IpNet>().is_ok() || looks_like_cidr_with_port(rest);
    let host = match rest.find(['/', '?', '#']) {
        Some(cut) if !cidr => format!("{}…", &rest[..cut]),
        _ => rest.to_string(),
    };
    format!("{scheme}{credentials}{host}")
}

/// A component's allowed hosts, ready to check targets against.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses every entry.
    ///
    /// # Errors
    /// The first malformed entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<Self> {
        let entries = entries
            .iter()
            .map(|e| AllowedHost::parse(e.as_ref()))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { entries })
    }

    /// Checks a URL such as `redis://127.0.0.1:6379` or `https://api.example.com/x`.
    /// A URL that does not parse is denied.
    pub fn allows_url(&self, url: &str) -> bool {
        let Ok(url) = url::Url::parse(url) else {
            return false;
        };
        let Some(host) = url.host_str() else {
            return false;
        };
        let Some(port) = url.port().or_else(|| default_port(url.scheme())) else {
            return false;
        };
        self.entries
            .iter()
            .any(|e| e.allows(url.scheme(), host, port))
    }

    /// Checks an HTTP target given as parts.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.entries.iter().any(|e| e.allows(scheme, host, port))
    }

    /// Checks a service-chaining target (see [`AllowedHost::allows_chaining`]).
    pub fn allows_chaining(&self, component: &str, scheme: &str, port: u16, known: bool) -> bool {
        self.entries
            .iter()
            .any(|e| e.allows_chaining(component, scheme, port, known))
    }

    /// Checks a self-request (see [`AllowedHost::allows_self`]).
    pub fn allows_self(&self) -> bool {
        self.entries.iter().any(AllowedHost::allows_self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).expect("valid entries")
    }

    #[test]
    fn a_self_entry_of_either_scheme_allows_a_self_request_of_either() {
        // Host review (stop 43): our host matched only the request's own scheme, where
        // Spin takes an entry for http or https (`check_relative_url`).
        for entry in ["http://self", "https://self", "*://*:*"] {
            assert!(hosts(&[entry]).allows_self(), "{entry}");
        }
        assert!(!hosts(&["https://example.com"]).allows_self());
    }

    #[test]
    fn hosts_are_compared_as_literals_without_dns() {
        let h = hosts(&["redis://127.0.0.1:16391"]);
        assert!(h.allows_url("redis://127.0.0.1:16391"));
        assert!(!h.allows_url("redis://localhost:16391"));
        assert!(!h.allows_url("redis://127.0.0.1:16392"));
    }

    #[test]
    fn a_missing_port_means_the_scheme_default() {
        let h = hosts(&["redis://cache.internal", "https://api.example.com"]);
        assert!(h.allows_url("redis://cache.internal:6379"));
        assert!(h.allows_url("redis://cache.internal"));
        assert!(h.allows_url("https://api.example.com/v1"));
        assert!(!h.allows_url("http://api.example.com/v1"));
    }

    #[test]
    fn port_ranges_exclude_their_end() {
        let h = hosts(&["redis://127.0.0.1:13079..13081"]);
        assert!(h.allows_url("redis://127.0.0.1:13080"));
        assert!(!h.allows_url("redis://127.0.0.1:13081"));
    }

    #[test]
    fn subdomain_wildcards_and_cidrs_match() {
        let h = hosts(&["https://*.example.com", "redis://127.0.0.0/24:*"]);
        assert!(h.allows_url("https://a.example.com"));
        assert!(!h.allows_url("https://example.com"));
        assert!(h.allows_url("redis://127.0.0.9:1"));
        assert!(!h.allows_url("redis://127.0.1.9:1"));
    }

    #[test]
    fn malformed_entries_are_refused_with_spins_reason() {
        for (entry, reason) in [
            ("127.0.0.1:6379", "does not contain a scheme"),
            ("http://a.com/path", "must not include a path"),
            ("foo://a.com", "does not have a known default port number"),
            ("http://a.*.com", "wildcards are allowed only as subdomains"),
            ("insecure:allow-all", "is not allowed"),
        ] {
            let err = AllowedHost::parse(entry).expect_err(entry).to_string();
            assert!(err.contains(reason), "{entry}: {err}");
        }
    }

    #[test]
    fn a_malformed_entry_is_shown_without_credentials_or_path() {
        for (entry, secret, reason) in [
            (
                "https://user:hunter2@api.example.com",
                "hunter2",
                "invalid port",
            ),
            (
                "https://bot@api.example.com/hooks?token=s3cr3t",
                "s3cr3t",
                "must not include a path",
            ),
            ("foo://admin:pw-42@x.example.com", "pw-42", "invalid port"),
            (
                "foo://x.example.com/k?key=abc123",
                "abc123",
                "must not include a path",
            ),
            (
                "https://bot:ab/cd@api.example.com",
                "ab",
                "must not include a path",
            ),
            (
                "https://api.example.com:8443?token=s3cr3t",
                "s3cr3t",
                "invalid port",
            ),
            (
                "https://api.example.com?key=ab/cd",
                "ab/",
                "must not include a path",
            ),
            (
                "https://api.example.com:1#frag-secret",
                "frag-secret",
                "invalid port",
            ),
        ] {
            let err = AllowedHost::parse(entry).expect_err(entry).to_string();
            assert!(err.contains(reason), "{entry}: {err}");
            assert!(!err.contains(secret), "{entry}: {err}");
            assert!(err.contains("example.com"), "still names the host: {err}");
        }
        assert_eq!(shown("redis://127.0.0.0/24:*"), "redis://127.0.0.0/24:*");
        assert_eq!(
            shown("https://a.example.com:8443"),
            "https://a.example.com:8443"
        );
    }

    #[test]
    fn the_chaining_wildcard_stands_for_each_component_with_its_own_scheme_and_port() {
        let h = hosts(&["http://*.spin.internal"]);
        assert!(h.allows_chaining("facts", "http", 80, true));
        assert!(!h.allows_chaining("facts", "http", 8080, true));
        assert!(
            !h.allows_chaining("facts", "https", 80, true),
            "the entry's scheme"
        );
        assert!(
            !h.allows_chaining("ghost", "http", 80, false),
            "no such component"
        );
        assert!(
            !h.allows("http", "a.facts.spin.internal", 80),
            "no other name"
        );
        let on_8080 = hosts(&["http://*.spin.internal:8080"]);
        assert!(on_8080.allows_chaining("facts", "http", 8080, true));
        assert!(!on_8080.allows_chaining("facts", "http", 80, true));
        let any = hosts(&["*://*.spin.internal:*"]);
        assert!(any.allows_chaining("facts", "https", 8443, true));
        assert!(!hosts(&["https://*.example.com"]).allows_chaining("facts", "http", 80, true));
        // Other entries are checked as for any host, known component or not.
        assert!(hosts(&["*://*:*"]).allows_chaining("ghost", "http", 80, false));
        assert!(hosts(&["http://ghost.spin.internal"]).allows_chaining("ghost", "http", 80, false));
        assert!(hosts(&["http://*.internal"]).allows_chaining("facts", "http", 80, true));
    }

    #[test]
    fn a_subdomain_pattern_matches_names_not_addresses() {
        let h = hosts(&["http://*.0.0.1:1"]);
        assert!(!h.allows_url("http://127.0.0.1:1/"));
        assert!(!h.allows("http", "10.0.0.1", 1));
        for spelling in ["0x7f.0.0.1", "0177.0.0.1", "127.0.1"] {
            assert!(!h.allows("http", spelling, 1), "{spelling}");
        }
        assert!(!hosts(&["redis://*.0.0.1:1"]).allows_url("redis://0x7f.0.0.1:1"));
    }

    #[test]
    fn a_wildcard_is_compared_as_written() {
        assert!(!hosts(&["https://*.Example.com"]).allows_url("https://a.example.com/"));
        let upper = hosts(&["http://*.SPIN.INTERNAL"]);
        assert!(!upper.allows_chaining("facts", "http", 80, true));
    }

    #[test]
    fn entries_are_trimmed_as_spin_trims_them() {
        assert!(hosts(&[" http://127.0.0.1:1 "]).allows_url("http://127.0.0.1:1/"));
    }

    #[test]
    fn an_unparseable_target_is_denied() {
        assert!(!hosts(&["*://*:*"]).allows_url("127.0.0.1:6379"));
    }
}
