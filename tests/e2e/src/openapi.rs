//! Checks real responses against the OpenAPI files (`shared/openapi/public-api.json`,
//! and `internal-api.json` for `/api/v1/internal/...`).
//!
//! The response schema for (path, method, status) is validated with a JSON Schema
//! 2020-12 validator (OpenAPI 3.1 schemas are JSON Schema). A status the file does not
//! document for that operation fails the check too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::workspace_root;

fn load(name: &str) -> Value {
    let path = workspace_root().join("shared/openapi").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The public OpenAPI document.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| load("public-api.json"))
}

/// The internal OpenAPI document.
pub fn internal_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| load("internal-api.json"))
}

/// The document that describes `path`.
pub fn spec_for(path: &str) -> &'static Value {
    if path.starts_with("/api/v1/internal/") {
        internal_spec()
    } else {
        spec()
    }
}

/// A path as one JSON-pointer token inside a URI fragment (`{` and `}` percent-encoded).
fn escape(segment: &str) -> String {
    segment
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// Validates one response.
///
/// # Errors
/// The operation or status is not documented, or the body does not match its schema.
pub fn check_response(path: &str, method: &str, status: u16, body: &Value) -> Result<(), String> {
    let doc = spec_for(path);
    let mut method = method.to_ascii_lowercase();
    // OpenAPI cannot describe "any other method": a 405 for an undocumented method is
    // checked against the 405 the path documents.
    if status == 405
        && doc["paths"][path][&method].is_null()
        && let Some((documented, _)) = doc["paths"][path]
            .as_object()
            .into_iter()
            .flatten()
            .find(|(_, op)| !op["responses"]["405"].is_null())
    {
        method = documented.clone();
    }
    let responses = &doc["paths"][path][&method]["responses"];
    if responses.is_null() {
        return Err(format!("{method} {path} is not documented"));
    }
    let status_key = status.to_string();
    if responses[&status_key].is_null() {
        return Err(format!(
            "{method} {path}: status {status} is not documented"
        ));
    }
    let pointer = format!(
        "#/paths/{}/{method}/responses/{status_key}/content/application~1json/schema",
        escape(path)
    );
    validate(doc, &pointer, body).map_err(|e| format!("{method} {path} {status}: {e}"))
}

/// Validates `body` against the schema at `pointer` (compiled once per pointer).
fn validate(doc: &'static Value, pointer: &str, body: &Value) -> Result<(), String> {
    type Cache = Mutex<HashMap<String, Arc<jsonschema::Validator>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let cached = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&cache_key(doc, pointer))
        .cloned();
    let validator = match cached {
        Some(v) => v,
        None => {
            // The whole document is the schema resource, so internal `$ref`s resolve;
            // its OpenAPI keywords are unknown to JSON Schema and ignored.
            let mut root = doc.clone();
            root["$ref"] = Value::String(pointer.to_string());
            let built = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&root)
                .map_err(|e| format!("bad schema at {pointer}: {e}"))?;
            let built = Arc::new(built);
            cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(cache_key(doc, pointer), built.clone());
            built
        }
    };
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{body} does not match: {errors:?}"))
    }
}

fn cache_key(doc: &'static Value, pointer: &str) -> String {
    format!("{:p}{pointer}", doc)
}

/// Validates a request body against the operation's request schema (for the tests' own
/// requests and the mail webhook's body).
///
/// # Errors
/// The body does not match.
pub fn check_schema(schema_name: &str, body: &Value) -> Result<(), String> {
    validate(spec(), &format!("#/components/schemas/{schema_name}"), body)
        .map_err(|e| format!("not a {schema_name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIRM: &str = "/api/v1/public/auth/confirm-email-code";

    #[test]
    fn a_matching_response_passes_and_a_wrong_one_fails() {
        let good = json!({ "device_session_id": "s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA" });
        assert_eq!(check_response(CONFIRM, "POST", 200, &good), Ok(()));
        for bad in [
            json!({ "device_session_id": 5 }),
            json!({ "device_session_id": "x" }),
            json!({ "device_session_id": "s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA", "more": 1 }),
        ] {
            assert!(check_response(CONFIRM, "POST", 200, &bad).is_err(), "{bad}");
        }
        let wrong_code = json!({ "error": { "code": "invalid_email", "message": "m" } });
        assert!(
            check_response(CONFIRM, "POST", 400, &wrong_code).is_err(),
            "each status lists its own codes"
        );
        assert!(check_response(CONFIRM, "POST", 418, &json!({})).is_err());
        assert!(check_response("/nope", "POST", 200, &json!({})).is_err());
    }

    #[test]
    fn every_public_route_of_the_manifest_is_documented() {
        let manifest =
            std::fs::read_to_string(workspace_root().join("spin.toml")).expect("spin.toml");
        let doc: toml::Value = toml::from_str(&manifest).expect("TOML");
        let routes = doc["trigger"]["http"].as_array().expect("triggers");
        let public: Vec<&str> = routes
            .iter()
            .filter_map(|t| t["route"].as_str())
            .filter(|r| r.starts_with("/api/v1/public/") || *r == "/api/v1/health")
            .collect();
        assert!(!public.is_empty());
        for route in public {
            assert!(
                spec()["paths"][route].is_object(),
                "{route} is not in the OpenAPI file"
            );
        }
    }

    #[test]
    fn every_internal_route_of_the_manifest_is_documented() {
        let manifest =
            std::fs::read_to_string(workspace_root().join("spin.toml")).expect("spin.toml");
        let doc: toml::Value = toml::from_str(&manifest).expect("TOML");
        let routes = doc["trigger"]["http"].as_array().expect("triggers");
        let internal: Vec<String> = routes
            .iter()
            .filter_map(|t| t["route"].as_str())
            .filter(|r| r.starts_with("/api/v1/internal/"))
            .map(|r| {
                // Spin's `:name` segments are OpenAPI's `{name}`.
                r.split('/')
                    .map(|seg| match seg.strip_prefix(':') {
                        Some(name) => format!("{{{name}}}"),
                        None => seg.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        assert_eq!(internal.len(), 10, "{internal:?}");
        for route in internal {
            assert!(
                internal_spec()["paths"][&route].is_object(),
                "{route} is not in the internal OpenAPI file"
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(value: &Value, refs: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        refs.push(r.clone());
                    }
                    map.values().for_each(|v| walk(v, refs));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        for doc in [spec(), internal_spec()] {
            let mut refs = Vec::new();
            walk(doc, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let pointer = r.strip_prefix('#').expect("local reference");
                assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
            }
        }
    }
}
