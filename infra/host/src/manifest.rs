//! `spin.toml` (manifest version 2): parsing and the checks Spin makes at load time.
//!
//! Every table rejects unknown keys, as Spin's does, so a manifest that loads here also
//! loads under Spin and a typo fails here first. The error texts follow Spin's where a
//! test or an operator may match on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indexmap::IndexMap;
use serde::Deserialize;

/// A parsed and checked manifest, with the directory it was read from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Directory of the manifest: component sources are relative to it.
    pub dir: PathBuf,
    pub application: Application,
    /// App-level variables in declaration order.
    pub variables: IndexMap<String, VariableDecl>,
    pub http_triggers: Vec<HttpTrigger>,
    /// Components by id, in declaration order (inline trigger components included).
    pub components: IndexMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    pub tool: Option<toml::Value>,
    pub trigger: Option<ApplicationTriggers>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationTriggers {
    pub http: Option<ApplicationHttp>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationHttp {
    pub base: Option<String>,
}

/// One entry of `[variables]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    pub description: Option<String>,
    /// Documentation only: Spin gives secrets no special runtime treatment.
    #[serde(default)]
    pub secret: bool,
}

/// One `[[trigger.http]]`, with its id settled and an inline component named.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub id: String,
    /// `None` for `{ private = true }`: reachable only by service chaining.
    pub route: Option<String>,
    pub target: TriggerTarget,
}

#[derive(Debug, Clone)]
pub enum TriggerTarget {
    Component(String),
    Static(StaticResponse),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    pub status_code: Option<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

/// One `[component.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDecl {
    pub source: ComponentSource,
    pub description: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<toml::Value>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub allowed_http_hosts: Vec<String>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub ai_models: Vec<String>,
    pub build: Option<BuildConfig>,
    pub tool: Option<toml::Value>,
    pub dependencies_inherit_configuration: Option<bool>,
    pub dependencies: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ComponentSource {
    Local(String),
    Remote {
        url: String,
        digest: String,
    },
    Registry {
        registry: Option<String>,
        package: String,
        version: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    pub command: toml::Value,
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

// ---- raw (as written) forms -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: Application,
    #[serde(default)]
    variables: IndexMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: IndexMap<String, ComponentDecl>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
    /// Other trigger types are not served by this host; they are rejected below.
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    id: Option<String>,
    route: Option<RawRoute>,
    component: Option<RawComponentRef>,
    static_response: Option<StaticResponse>,
    /// Accepted for compatibility; this host runs every component as WASIp2.
    #[serde(rename = "executor")]
    _executor: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Pattern(String),
    Private { private: bool },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawComponentRef {
    Id(String),
    Inline(Box<ComponentDecl>),
}

impl Manifest {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// A missing or unreadable file, TOML that does not parse into the v2 schema (with line
    /// and column), or a rule Spin enforces at load time (ids, variables, triggers).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read manifest {}", path.display()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, dir).with_context(|| format!("invalid manifest {}", path.display()))
    }

    /// Parses manifest text; `dir` is where relative paths point.
    ///
    /// # Errors
    /// As [`Manifest::load`], without the file access.
    pub fn parse(text: &str, dir: PathBuf) -> anyhow::Result<Self> {
        let raw: RawManifest = toml::from_str(text).context("failed to parse manifest TOML")?;
        match raw.spin_manifest_version.as_integer() {
            Some(2) => {}
            _ => bail!(
                "spin_manifest_version must be the integer 2, got {}",
                raw.spin_manifest_version
            ),
        }
        if let Some(base) = raw
            .application
            .trigger
            .as_ref()
            .and_then(|t| t.http.as_ref())
            .and_then(|h| h.base.as_deref())
            && base != "/"
        {
            bail!(
                "This application is using the deprecated trigger 'base' field. The base must be prepended to each [[trigger.http]]'s 'route'."
            );
        }
        if let Some(kind) = raw.trigger.other.keys().next() {
            bail!("trigger type `{kind}` is not served by this host (only `http`)");
        }

        for (name, decl) in &raw.variables {
            check_variable_name(name).with_context(|| format!("invalid variable name {name:?}"))?;
            if decl.required == decl.default.is_some() {
                bail!("invalid variable {name:?}: must be `required` OR have a `default`");
            }
        }

        let mut components = IndexMap::new();
        for (id, decl) in raw.component {
            check_component_id(&id).with_context(|| format!("invalid component id {id:?}"))?;
            for key in decl.variables.keys() {
                check_variable_name(key)
                    .with_context(|| format!("component {id:?}: invalid variable name {key:?}"))?;
            }
            components.insert(id, decl);
        }

        let mut http_triggers = Vec::with_capacity(raw.trigger.http.len());
        for (index, trigger) in raw.trigger.http.into_iter().enumerate() {
            // Spin numbers triggers without an id from the count of all triggers so far.
            let id = trigger
                .id
                .clone()
                .unwrap_or_else(|| format!("http-trigger{}", index + 1));
            let route = match trigger.route {
                None => bail!("trigger {id:?}: missing field `route`"),
                Some(RawRoute::Pattern(route)) => Some(route),
                Some(RawRoute::Private { private: true }) => None,
                Some(RawRoute::Private { private: false }) => {
                    let who = match &trigger.component {
                        Some(RawComponentRef::Id(c)) => c.clone(),
                        _ => id.clone(),
                    };
                    bail!(
                        "route must be a string pattern or '{{ private = true }}': '{who}' has {{ private = false }}"
                    )
                }
            };
            let target = match (trigger.component, trigger.static_response) {
                (Some(RawComponentRef::Id(component)), None) => {
                    if !components.contains_key(&component) {
                        bail!("no such component {component:?}");
                    }
                    TriggerTarget::Component(component)
                }
                (Some(RawComponentRef::Inline(decl)), None) => {
                    let component = format!("{id}-component");
                    components.insert(component.clone(), *decl);
                    TriggerTarget::Component(component)
                }
                (None, Some(response)) => TriggerTarget::Static(response),
                (Some(_), Some(_)) => bail!(
                    "Triggers must specify either component or static_response - {id} has both"
                ),
                (None, None) => bail!(
                    "Triggers must specify either component or static_response - {id} has neither"
                ),
            };
            http_triggers.push(HttpTrigger { id, route, target });
        }

        Ok(Self {
            dir,
            application: raw.application,
            variables: raw.variables,
            http_triggers,
            components,
        })
    }

    /// Absolute path of a component's local Wasm file.
    ///
    /// # Errors
    /// Remote and registry sources: this host runs only local files.
    pub fn component_path(&self, id: &str, decl: &ComponentDecl) -> anyhow::Result<PathBuf> {
        match &decl.source {
            ComponentSource::Local(path) => Ok(self.dir.join(path)),
            ComponentSource::Remote { url, .. } => {
                bail!("component {id:?}: remote source {url} is not supported by this host")
            }
            ComponentSource::Registry { package, .. } => {
                bail!("component {id:?}: registry source {package} is not supported by this host")
            }
        }
    }
}

/// Spin's rule for variable keys: lower snake case, each `_` word starting with a letter.
pub fn check_variable_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("must not be empty");
    }
    for word in name.split('_') {
        let Some(first) = word.chars().next() else {
            bail!("must not contain multiple consecutive underscores or start/end with '_'");
        };
        if !first.is_ascii_lowercase() {
            bail!("'_'-separated words must start with an ASCII letter; got '{first}'");
        }
        if let Some(bad) = word
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        {
            bail!("invalid character '{bad}': use lower-case letters, digits and '_'");
        }
    }
    Ok(())
}

/// Spin's rule for component ids: kebab case, each word all-lower or all-UPPER.
pub fn check_component_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() {
        bail!("must not be empty");
    }
    if id.contains('_') {
        bail!("words must be separated with '-', not '_'");
    }
    for word in id.split('-') {
        let Some(first) = word.chars().next() else {
            bail!("must not contain empty words");
        };
        if !first.is_ascii_alphabetic() {
            bail!("'-'-separated words must start with an ASCII letter; got '{first}'");
        }
        let lower = word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let upper = word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !(lower || upper) {
            bail!("word '{word}' must be all lower case or all upper case");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Manifest> {
        Manifest::parse(text, PathBuf::from("/app"))
    }

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[[trigger.http]]
route = "/a"
component = "a"
[component.a]
source = "a.wasm"
"#;

    #[test]
    fn a_minimal_manifest_loads() {
        let m = parse(MINIMAL).expect("loads");
        assert_eq!(m.http_triggers.len(), 1);
        assert_eq!(m.http_triggers[0].id, "http-trigger1");
        assert_eq!(m.http_triggers[0].route.as_deref(), Some("/a"));
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_position() {
        let text = MINIMAL.replace("source = \"a.wasm\"", "source = \"a.wasm\"\nbogus = 1");
        let err = format!("{:#}", parse(&text).expect_err("must fail"));
        assert!(err.contains("bogus"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn a_variable_needs_exactly_one_of_required_and_default() {
        let both = format!("{MINIMAL}\n[variables]\nx = {{ required = true, default = \"1\" }}\n");
        let neither = format!("{MINIMAL}\n[variables]\nx = {{ secret = true }}\n");
        for text in [both, neither] {
            let err = format!("{:#}", parse(&text).expect_err("must fail"));
            assert!(
                err.contains("must be `required` OR have a `default`"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_trigger_naming_an_unknown_component_is_rejected() {
        let text = MINIMAL.replace("component = \"a\"", "component = \"nosuch\"");
        let err = format!("{:#}", parse(&text).expect_err("must fail"));
        assert!(err.contains("no such component \"nosuch\""), "{err}");
    }

    #[test]
    fn ids_and_variable_names_follow_spin_rules() {
        assert!(check_component_id("c-bad").is_ok());
        assert!(check_component_id("c_bad").is_err());
        assert!(check_component_id("Mixed").is_err());
        assert!(check_variable_name("redis_url").is_ok());
        assert!(check_variable_name("db_2").is_err());
        assert!(check_variable_name("Bad").is_err());
        assert!(check_variable_name("a__b").is_err());
    }

    #[test]
    fn a_private_false_route_is_rejected() {
        let text = MINIMAL.replace("route = \"/a\"", "route = { private = false }");
        let err = format!("{:#}", parse(&text).expect_err("must fail"));
        assert!(err.contains("has { private = false }"), "{err}");
    }

    #[test]
    fn an_inline_component_gets_the_trigger_id() {
        let text = r#"
spin_manifest_version = 2
[application]
name = "t"
[[trigger.http]]
id = "front"
route = "/..."
component = { source = "x.wasm" }
"#;
        let m = parse(text).expect("loads");
        assert!(m.components.contains_key("front-component"));
    }
}
