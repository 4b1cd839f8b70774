//! HTTP routing with Spin's rules, and the `spin-*` headers a component receives.
//!
//! Matching is done by `routefinder` (the crate Spin's router uses) so precedence is the
//! same: literal beats `:param` beats wildcard at the first differing segment, then more
//! dots, then fewer segments, then declaration order. Identical route strings: the last
//! declaration wins and start-up reports the duplicate.

use std::net::SocketAddr;

use anyhow::anyhow;
use indexmap::IndexMap;

/// What a route leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Component(String),
    /// A `static_response` trigger, by trigger id.
    Static(String),
}

#[derive(Debug, Clone)]
struct Handler {
    target: Target,
    /// The route as written in the manifest.
    raw: String,
    /// Leading `/` added, one trailing `/` removed.
    normalised: String,
    wildcard: bool,
}

/// The router built from the manifest's routable triggers.
#[derive(Debug)]
pub struct Router {
    inner: routefinder::Router<Handler>,
}

/// A route declaration that a later one with the same text replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub route: String,
    pub replaced: String,
    pub effective: String,
}

/// The outcome of routing one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub target: Target,
    pub raw_route: String,
    pub normalised_route: String,
    /// `(name, value)` of each `:name` capture, values still percent-encoded.
    pub params: Vec<(String, String)>,
    /// The wildcard tail (`spin-path-info`).
    pub path_info: String,
}

impl Router {
    /// Builds the router from `(route, target)` in declaration order.
    ///
    /// # Errors
    /// A route `routefinder` cannot parse.
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (&'a str, Target)>,
    ) -> anyhow::Result<(Self, Vec<Duplicate>)> {
        // Same text: the last declaration wins (kept at the first one's position).
        let mut by_text: IndexMap<&str, Target> = IndexMap::new();
        let mut duplicates = Vec::new();
        for (route, target) in routes {
            if let Some(replaced) = by_text.insert(route, target.clone()) {
                duplicates.push(Duplicate {
                    route: normalise(route),
                    replaced: target_name(&replaced),
                    effective: target_name(&target),
                });
            }
        }
        let mut inner = routefinder::Router::new();
        for (raw, target) in by_text {
            let normalised = normalise(raw);
            let (spec, wildcard) = match normalised.strip_suffix("/...") {
                Some(prefix) => (format!("{prefix}/*"), true),
                None => (normalised.clone(), normalised.ends_with("/*")),
            };
            let handler = Handler {
                target,
                raw: raw.to_string(),
                normalised: normalised.clone(),
                wildcard,
            };
            inner
                .add(spec.as_str(), handler)
                .map_err(|e| anyhow!("Error parsing route {normalised}: {e}"))?;
        }
        Ok((Self { inner }, duplicates))
    }

    /// Routes a raw (percent-encoded, query-less) path.
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let found = self.inner.best_match(path)?;
        let handler = found.handler();
        let captures = found.captures();
        let params = captures
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let path_info = if handler.wildcard {
            let tail = captures.wildcard().unwrap_or_default();
            match (tail.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{tail}"),
                (false, true) => format!("/{tail}/"),
            }
        } else {
            String::new()
        };
        Some(RouteMatch {
            target: handler.target.clone(),
            raw_route: handler.raw.clone(),
            normalised_route: handler.normalised.clone(),
            params,
            path_info,
        })
    }

    /// Routes in precedence order, for the start-up listing.
    pub fn listing(&self) -> Vec<(String, Target)> {
        self.inner
            .iter()
            .map(|(_, h)| (h.normalised.clone(), h.target.clone()))
            .collect()
    }
}

fn target_name(target: &Target) -> String {
    match target {
        Target::Component(id) | Target::Static(id) => id.clone(),
    }
}

/// Adds a missing leading `/` and removes one trailing `/`.
fn normalise(route: &str) -> String {
    let absolute = if route.starts_with('/') {
        route.to_string()
    } else {
        format!("/{route}")
    };
    match absolute.strip_suffix('/') {
        Some(stripped) => stripped.to_string(),
        None => absolute,
    }
}

/// The values of the `spin-*` headers for one request.
#[derive(Debug, Clone)]
pub struct SpinHeaders {
    pub full_url: String,
    pub path_info: String,
    pub matched_route: String,
    pub component_route: String,
    pub raw_component_route: String,
    pub base_path: String,
    pub client_addr: String,
    pub params: Vec<(String, String)>,
}

impl SpinHeaders {
    /// Headers for a request that came in through the router.
    pub fn routed(
        m: &RouteMatch,
        host: Option<&str>,
        path_and_query: &str,
        client: SocketAddr,
    ) -> Self {
        let component_route = m
            .raw_route
            .strip_suffix("/...")
            .unwrap_or(&m.raw_route)
            .to_string();
        Self {
            full_url: format!("http://{}{}", host.unwrap_or("localhost"), path_and_query),
            path_info: m.path_info.clone(),
            matched_route: m.normalised_route.clone(),
            component_route,
            raw_component_route: m.raw_route.clone(),
            base_path: "/".to_string(),
            client_addr: client.to_string(),
            params: m.params.clone(),
        }
    }

    /// Headers for a service-chaining request (`http://<id>.spin.internal/...`), which
    /// bypasses the router.
    pub fn chained(path: &str, path_and_query: &str) -> Self {
        Self {
            full_url: format!("http://localhost{path_and_query}"),
            path_info: path.to_string(),
            matched_route: "/...".to_string(),
            component_route: String::new(),
            raw_component_route: "/...".to_string(),
            base_path: "/".to_string(),
            client_addr: "0.0.0.0:0".to_string(),
            params: Vec::new(),
        }
    }

    /// `(name, value)` pairs in the order Spin adds them (`compute_default_headers`).
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("spin-path-info".to_string(), self.path_info.clone()),
            ("spin-full-url".to_string(), self.full_url.clone()),
            ("spin-matched-route".to_string(), self.matched_route.clone()),
            ("spin-base-path".to_string(), self.base_path.clone()),
            (
                "spin-raw-component-route".to_string(),
                self.raw_component_route.clone(),
            ),
            (
                "spin-component-route".to_string(),
                self.component_route.clone(),
            ),
            ("spin-client-addr".to_string(), self.client_addr.clone()),
        ];
        for (name, value) in &self.params {
            out.push((path_match_header(name), value.clone()));
        }
        out
    }
}

/// The header Spin adds for a `:name` route segment: `SPIN_PATH_MATCH_<NAME>` made into a
/// header key the way Spin makes all of its own (lower case, every `_` a `-`), so
/// `:device_session_id` arrives as `spin-path-match-device-session-id`.
fn path_match_header(name: &str) -> String {
    format!("spin-path-match-{name}")
        .to_ascii_lowercase()
        .replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::build(
            routes
                .iter()
                .map(|(r, c)| (*r, Target::Component(c.to_string()))),
        )
        .expect("routes parse")
        .0
    }

    fn to(r: &Router, path: &str) -> Option<String> {
        r.route(path).map(|m| match m.target {
            Target::Component(c) | Target::Static(c) => c,
        })
    }

    #[test]
    fn exact_beats_param_beats_wildcard() {
        let r = router(&[("/...", "all"), ("/u/:id", "param"), ("/u/me", "exact")]);
        assert_eq!(to(&r, "/u/me").as_deref(), Some("exact"));
        assert_eq!(to(&r, "/u/42").as_deref(), Some("param"));
        assert_eq!(to(&r, "/u/42/x").as_deref(), Some("all"));
    }

    #[test]
    fn a_longer_wildcard_prefix_wins_and_exact_beats_its_own_wildcard() {
        let r = router(&[
            ("/a/...", "short"),
            ("/a/b/...", "long"),
            ("/one/two", "exact"),
            ("/one/two/...", "wild"),
        ]);
        assert_eq!(to(&r, "/a/b/c").as_deref(), Some("long"));
        assert_eq!(to(&r, "/a/x").as_deref(), Some("short"));
        assert_eq!(to(&r, "/one/two").as_deref(), Some("exact"));
        assert_eq!(to(&r, "/one/two/three").as_deref(), Some("wild"));
    }

    #[test]
    fn a_wildcard_matches_its_prefix_but_not_a_longer_word() {
        let r = router(&[("/a/...", "a")]);
        assert_eq!(to(&r, "/a").as_deref(), Some("a"));
        assert_eq!(to(&r, "/ab"), None);
    }

    #[test]
    fn the_path_info_is_the_wildcard_tail_with_its_trailing_slash() {
        let r = router(&[("/files/:name/...", "f")]);
        let m = r.route("/files/abc/d/e/").expect("matches");
        assert_eq!(m.path_info, "/d/e/");
        assert_eq!(m.params, vec![("name".to_string(), "abc".to_string())]);
        assert_eq!(r.route("/files/abc").expect("matches").path_info, "");
        assert_eq!(r.route("/files/abc/").expect("matches").path_info, "/");
    }

    #[test]
    fn identical_routes_keep_the_last_and_report_the_duplicate() {
        let (r, dups) = Router::build([
            ("/dup", Target::Component("first".into())),
            ("/dup", Target::Component("second".into())),
        ])
        .expect("builds");
        assert_eq!(to(&r, "/dup").as_deref(), Some("second"));
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].replaced, "first");
    }

    #[test]
    fn a_route_without_leading_slash_is_normalised_but_keeps_its_raw_form() {
        let r = router(&[("nolead", "n")]);
        let m = r.route("/nolead").expect("matches");
        assert_eq!(m.raw_route, "nolead");
        assert_eq!(m.normalised_route, "/nolead");
    }

    #[test]
    fn dotted_params_split_at_the_first_dot() {
        let r = router(&[("/ext/:name.:ext", "e")]);
        let m = r.route("/ext/a.b.c").expect("matches");
        assert_eq!(
            m.params,
            vec![
                ("name".to_string(), "a".to_string()),
                ("ext".to_string(), "b.c".to_string())
            ]
        );
    }
}
