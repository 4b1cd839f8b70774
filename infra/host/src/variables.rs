//! Spin variables: app `[variables]`, component templates, and where values come from.
//!
//! Resolution order matches Spin's (first hit wins): explicit overrides (`--variable`),
//! `SPIN_VARIABLE_<NAME>` in the environment, the same key in a dotenv file, the
//! manifest default. Values are resolved on every `get`, as Spin does, so a component
//! never sees a value cached from start-up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, bail};
use indexmap::IndexMap;

use crate::manifest::VariableDecl;

/// One piece of a template: literal text or a `{{ variable }}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// A parsed `"{{ a }} text {{ b }}"` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template. There is no escaping; `{{` without `}}` is an error.
    ///
    /// # Errors
    /// Unmatched `{{`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("unmatched '{{{{' in template");
            };
            parts.push(Part::Variable(after[..end].trim().to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Names of the variables the template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Fills the template from `resolver`.
    ///
    /// # Errors
    /// A referenced variable that has no value.
    pub fn resolve(&self, resolver: &Resolver) -> anyhow::Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => out.push_str(&resolver.get(name)?),
            }
        }
        Ok(out)
    }
}

/// App-level variable values: declarations plus the providers that can set them.
#[derive(Debug, Clone)]
pub struct Resolver {
    declared: IndexMap<String, VariableDecl>,
    overrides: HashMap<String, String>,
    env: HashMap<String, String>,
    dotenv: HashMap<String, String>,
}

impl Resolver {
    /// Builds the resolver and checks every required variable has a value, as Spin does
    /// at start-up (even for variables no component uses).
    ///
    /// `env` is the process environment (or a test's stand-in); `dotenv` is the path of a
    /// `.env` file whose `SPIN_VARIABLE_*` keys count like environment variables.
    ///
    /// # Errors
    /// An override for an undeclared variable, an unreadable dotenv file, or required
    /// variables without a value (all of them are named).
    pub fn new(
        declared: IndexMap<String, VariableDecl>,
        overrides: HashMap<String, String>,
        env: HashMap<String, String>,
        dotenv: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let dotenv = match dotenv {
            Some(path) if path.exists() => dotenvy::from_path_iter(path)
                .with_context(|| format!("failed to read {}", path.display()))?
                .collect::<Result<HashMap<_, _>, _>>()
                .map_err(|e| dotenv_error(path, e))?,
            _ => HashMap::new(),
        };
        let resolver = Self {
            declared,
            overrides,
            env,
            dotenv,
        };
        let missing: Vec<&str> = resolver
            .declared
            .keys()
            .filter(|name| resolver.get(name).is_err())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|n| format!("Key(\"{n}\")"))
                .collect::<Vec<_>>()
                .join(", ");
            bail!("provider error: no provider resolved required variable(s): [{list}]");
        }
        Ok(resolver)
    }

    /// Whether `name` is declared in `[variables]`.
    pub fn is_declared(&self, name: &str) -> bool {
        self.declared.contains_key(name)
    }

    /// The current value of an app variable.
    ///
    /// # Errors
    /// Undeclared, or required with no provider giving a value.
    pub fn get(&self, name: &str) -> anyhow::Result<String> {
        let Some(decl) = self.declared.get(name) else {
            bail!("no variable for {name:?}");
        };
        let env_key = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        self.overrides
            .get(name)
            .or_else(|| self.env.get(&env_key))
            .or_else(|| self.dotenv.get(&env_key))
            .or(decl.default.as_ref())
            .cloned()
            .with_context(|| format!("no provider resolved required variable {name:?}"))
    }

    /// `template` filled from the declared defaults alone, `None` when a variable it
    /// names has none: Spin checks templated `allowed_outbound_hosts` entries at load time
    /// with these values, whatever the providers (environment, `--variable`) will give.
    pub fn resolve_defaults(&self, template: &Template) -> Option<String> {
        let mut out = String::new();
        for part in &template.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => out.push_str(self.declared.get(name)?.default.as_ref()?),
            }
        }
        Some(out)
    }
}

/// A dotenv file that does not parse, named by its line number only. Spin prints the
/// line, but a `.env` file holds secrets (tokens, keys), and a line that does not parse
/// is as likely to hold one as any other: it is never shown. The parser reports the text
/// it failed on (a line, or only a value): when that text occurs once in the file, its
/// line is named.
fn dotenv_error(path: &Path, error: dotenvy::Error) -> anyhow::Error {
    let dotenvy::Error::LineParse(failed, _) = &error else {
        return anyhow::Error::new(error).context(format!("failed to parse {}", path.display()));
    };
    let number = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            let mut found = text.match_indices(failed.as_str());
            let (offset, _) = found.next()?;
            if found.next().is_some() {
                return None;
            }
            Some(text[..offset].matches('\n').count() + 1)
        })
        .map_or_else(String::new, |n| format!(" at line {n}"));
    anyhow::anyhow!(
        "failed to parse {}: a malformed line{number} (the line is not shown: it may hold a \
         secret)",
        path.display()
    )
}

/// Parses a component's `variables` table, checking each reference is declared.
///
/// # Errors
/// A malformed template or a reference to an undeclared variable.
pub fn component_templates(
    variables: &BTreeMap<String, String>,
    resolver: &Resolver,
) -> anyhow::Result<BTreeMap<String, Template>> {
    variables
        .iter()
        .map(|(key, text)| {
            let template = Template::parse(text)
                .with_context(|| format!("invalid variable template for {key:?}"))?;
            check_references(&template, resolver)?;
            Ok((key.clone(), template))
        })
        .collect()
}

/// Fails with Spin's message when a template names an undeclared variable.
///
/// # Errors
/// The first undeclared reference.
pub fn check_references(template: &Template, resolver: &Resolver) -> anyhow::Result<()> {
    if let Some(unknown) = template.references().find(|n| !resolver.is_declared(n)) {
        bail!("invalid variable template: unknown variable \"{unknown}\"");
    }
    Ok(())
}

/// Spin's rules for names a guest passes to `variables.get`, with Spin's messages.
pub fn check_guest_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{name:?}: must not be empty"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "{name:?}: invalid character {bad:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "{name:?}: must start with a lowercase ASCII letter"
        ));
    }
    if !name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!(
            "{name:?}: must end with a lowercase ASCII letter or digit"
        ));
    }
    if name.contains("__") {
        return Err(format!(
            "{name:?}: must not contain multiple consecutive underscores"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(default: Option<&str>) -> VariableDecl {
        VariableDecl {
            default: default.map(str::to_string),
            required: default.is_none(),
            description: None,
            secret: false,
        }
    }

    fn resolver(env: &[(&str, &str)]) -> anyhow::Result<Resolver> {
        let declared = IndexMap::from([
            ("greeting".to_string(), decl(Some("hello"))),
            ("need".to_string(), decl(None)),
        ]);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Resolver::new(declared, HashMap::new(), env, None)
    }

    #[test]
    fn load_time_checks_see_only_the_defaults_whatever_the_providers_say() {
        let r = resolver(&[
            ("SPIN_VARIABLE_GREETING", "from the environment"),
            ("SPIN_VARIABLE_NEED", "x"),
        ])
        .expect("resolves");
        let defaulted = Template::parse("{{ greeting }}!").expect("parses");
        assert_eq!(r.resolve_defaults(&defaulted).as_deref(), Some("hello!"));
        assert_eq!(
            defaulted.resolve(&r).expect("fills"),
            "from the environment!"
        );
        let required = Template::parse("{{ greeting }}{{ need }}").expect("parses");
        assert_eq!(r.resolve_defaults(&required), None, "`need` has no default");
    }

    #[test]
    fn templates_mix_text_and_trimmed_references() {
        let t = Template::parse("{{greeting}} world {{ need }}!").expect("parses");
        assert_eq!(t.references().collect::<Vec<_>>(), ["greeting", "need"]);
        let r = resolver(&[("SPIN_VARIABLE_NEED", "x")]).expect("resolves");
        assert_eq!(t.resolve(&r).expect("fills"), "hello world x!");
    }

    #[test]
    fn an_unmatched_brace_pair_is_an_error() {
        let err = Template::parse("a {{ b").expect_err("must fail");
        assert!(err.to_string().contains("unmatched '{{'"), "{err}");
    }

    #[test]
    fn the_environment_overrides_a_default() {
        let r = resolver(&[
            ("SPIN_VARIABLE_NEED", "x"),
            ("SPIN_VARIABLE_GREETING", "hi"),
        ])
        .expect("resolves");
        assert_eq!(r.get("greeting").expect("value"), "hi");
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let err = resolver(&[]).expect_err("must fail");
        assert!(err.to_string().contains("Key(\"need\")"), "{err}");
    }

    #[test]
    fn a_malformed_dotenv_line_is_named_by_its_number_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("edge-auth-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "# settings\nSPIN_VARIABLE_NEED=x\nSPIN_VARIABLE_TOKEN sk_live_secret_value\n",
        )
        .expect("written");
        let declared = IndexMap::from([("need".to_string(), decl(None))]);
        let Err(err) = Resolver::new(declared, HashMap::new(), HashMap::new(), Some(&path)) else {
            panic!("a malformed line must fail");
        };
        let text = format!("{err:#}");
        std::fs::remove_dir_all(&dir).ok();
        assert!(text.contains("at line 3"), "{text}");
        assert!(!text.contains("sk_live_secret_value"), "{text}");
    }

    #[test]
    fn guest_names_are_checked_like_spin() {
        assert!(check_guest_name("redis_url").is_ok());
        assert!(check_guest_name("Bad-Name").is_err());
        assert!(check_guest_name("").is_err());
        assert!(check_guest_name("a__b").is_err());
        assert!(check_guest_name("a_").is_err());
    }
}
