//! Gateway settings, read from Spin variables by name on every request (Spin has no
//! start-up hook). Every variable has a default, so login-only deployments start: with
//! no signing key (or, for backend types, no backend) the gateway answers 503 and says
//! which variable is missing in the log.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use edge_auth_protocol::canonical::sign_key_set;
use edge_auth_protocol::rules::sound_public_key;
use edge_auth_protocol::wire::{Jwk, Jwks};

use crate::client::{ClientPolicy, ClientPolicyError};
use crate::gateway::command::MessageType;
use crate::gateway::execute::{RESERVED, SUBSCRIBE};
use crate::login::settings::{SettingsError, number};
use crate::rate_limit::{Rate, RateError};

/// Why the gateway settings are unusable (the message names the variable).
#[derive(Debug, thiserror::Error)]
pub enum GatewaySettingsError {
    #[error("{name} must be the standard base64 of 32 bytes ({what})")]
    Key { name: &'static str, what: String },
    #[error("{name} must be 1-64 characters of A-Z a-z 0-9 . _ -, got {got:?}")]
    KeyId { name: &'static str, got: String },
    #[error(
        "the key id {0:?} names two different keys (gateway_key_id, gateway_next_key_id, \
         gateway_previous_key_id)"
    )]
    SameKeyId(String),
    #[error("backend_routes entry {entry:?}: {why}")]
    Route { entry: String, why: String },
    /// Never quotes the value: it may hold credentials.
    #[error(
        "backend_url must be http(s)://host[:port][/path], without credentials, query or \
         fragment: {0}"
    )]
    BackendUrl(&'static str),
    #[error(transparent)]
    Number(#[from] SettingsError),
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error(transparent)]
    Client(#[from] ClientPolicyError),
}

/// The gateway's signing key and its `kid`.
#[derive(Clone)]
pub struct GatewayKey {
    pub key: SigningKey,
    pub kid: String,
}

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        write!(f, "GatewayKey({})", self.kid)
    }
}

/// The key that will sign next (published ahead, so clients already trust it).
#[derive(Debug, Clone)]
pub struct NextKey {
    pub public: VerifyingKey,
    pub kid: String,
}

/// An HTTP method the backend table may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl BackendMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// Where one message type goes: a method and a path on `backend_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRoute {
    pub method: BackendMethod,
    pub path: String,
}

/// `backend_routes`: message type → method and path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendRoutes(HashMap<String, BackendRoute>);

/// The default table: the example backend's types.
pub const DEFAULT_ROUTES: &str =
    "echo=POST /echo, profile.get=GET /profile, profile.update=PUT /profile";

impl BackendRoutes {
    /// Parses `<message_type>=<METHOD> <path>` entries separated by commas (blank
    /// entries ignored). Paths start with `/` and hold no spaces, `?` or `#`.
    ///
    /// # Errors
    /// The first bad entry, named, and why.
    pub fn parse(raw: &str) -> Result<Self, GatewaySettingsError> {
        let mut table = HashMap::new();
        // `none`: no routed type at all (an empty variable reads as unset, the default).
        if raw.trim() == "none" {
            return Ok(Self(table));
        }
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| GatewaySettingsError::Route {
                entry: entry.to_string(),
                why: why.to_string(),
            };
            let (name, target) = entry
                .split_once('=')
                .ok_or_else(|| bad("expected <message_type>=<METHOD> <path>"))?;
            let name = MessageType::parse(name.trim()).map_err(|why| bad(&why))?;
            if name.is_reserved() {
                return Err(bad("gateway.* message types are the gateway's own"));
            }
            let (method, path) = target
                .trim()
                .split_once(' ')
                .ok_or_else(|| bad("expected <METHOD> <path>"))?;
            let method = match method {
                "GET" => BackendMethod::Get,
                "POST" => BackendMethod::Post,
                "PUT" => BackendMethod::Put,
                "PATCH" => BackendMethod::Patch,
                "DELETE" => BackendMethod::Delete,
                _ => return Err(bad("the method must be GET, POST, PUT, PATCH or DELETE")),
            };
            let path = path.trim();
            if !path.starts_with('/')
                || path.len() > 256
                || !path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"?#%\\".contains(&b))
            {
                return Err(bad(
                    "the path must start with / and hold no spaces, ?, #, % or \\",
                ));
            }
            if table
                .insert(
                    name.as_str().to_string(),
                    BackendRoute {
                        method,
                        path: path.to_string(),
                    },
                )
                .is_some()
            {
                return Err(bad("this message type is listed twice"));
            }
        }
        Ok(Self(table))
    }

    /// Where `message_type` goes, if anywhere.
    pub fn route(&self, message_type: &MessageType) -> Option<&BackendRoute> {
        self.0.get(message_type.as_str())
    }
}

/// `backend_url` checked, without surrounding blanks or a trailing `/`: a command's route
/// path is appended to it, so a query or fragment would swallow the path, and credentials
/// would travel in the Host header (the target's token comes from `backend_token`). Made
/// here, a bad value is a 503 before Redis is touched, not a signed refusal of every
/// command after its budgets were spent.
///
/// # Errors
/// [`GatewaySettingsError::BackendUrl`], saying what is wrong without quoting the value.
fn backend_url(raw: &str) -> Result<String, GatewaySettingsError> {
    let url = raw.trim().trim_end_matches('/');
    let bad = |why| Err(GatewaySettingsError::BackendUrl(why));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("not http:// or https://");
    };
    // The scheme in any case, as URLs have it; written out in lower case.
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return bad("not http:// or https://");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return bad("it holds credentials (`user:password@`): give backend_token instead");
    }
    if rest.contains(['?', '#']) {
        return bad("it has a query or fragment");
    }
    if rest.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return bad("it has a blank or control character");
    }
    // `host`, `host:port` or `[v6]:port`: a host, and a port of digits if any.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => (authority, None),
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() || host == "[]" {
        return bad("no host");
    }
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return bad("its port is not a number");
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The team's backend.
#[derive(Clone)]
pub struct BackendTarget {
    /// `backend_url`, without a trailing `/`.
    pub url: String,
    /// `backend_token`, sent as `Authorization: Bearer` (none when unset).
    pub token: Option<String>,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
}

impl std::fmt::Debug for BackendTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTarget")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// The four command budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandBudgets {
    /// `command_rate_limit_per_session` (default 60/60).
    pub per_session: Rate,
    /// `command_rate_limit_per_user` (default 300/60): per user and e-mail address (a
    /// directory user who logs in with several addresses has one budget per address).
    pub per_user: Rate,
    /// `command_rate_limit_per_message_type` (default 60/60): per user and address and
    /// message type.
    pub per_message_type: Rate,
    /// `command_rate_limit_per_client` (default 600/60): per client address, like the
    /// login routes' client budgets.
    pub per_client: Rate,
}

/// Everything `execute-command` is configured with.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub signing: Option<GatewayKey>,
    pub next: Option<NextKey>,
    /// `gateway_previous_signing_key`: the key that signed before the current one, kept
    /// during a rotation's swap. It is published and co-signs the key set, so a client
    /// that pinned only it still follows; it signs nothing else. `spin.toml` gives the old
    /// seed to the key-set route only.
    pub previous: Option<GatewayKey>,
    /// `command_freshness_window_seconds` (default 60, 1-600), as ms: a command's
    /// `timestamp_ms` must be within this of the server's clock, either way.
    pub window_ms: u64,
    /// `command_max_payload_bytes` (default 65536, at most 1 MiB).
    pub max_payload: usize,
    pub budgets: CommandBudgets,
    pub routes: BackendRoutes,
    pub backend: Option<BackendTarget>,
    pub clients: ClientPolicy,
}

/// A replay reservation outlives every window a command could still be fresh in: twice
/// the window (the device's clock may sit at either edge) plus this grace.
pub const REPLAY_GRACE_MS: u64 = 5_000;

/// The largest payload `command_max_payload_bytes` may allow.
pub const MAX_PAYLOAD_LIMIT: usize = 1024 * 1024;

/// `command_max_payload_bytes` alone (default 65536), for a check that needs no other
/// setting: how much of a command's body to read (see
/// [`max_body_bytes`](crate::gateway::command::max_body_bytes)).
///
/// # Errors
/// A value that is not a number from 1 to [`MAX_PAYLOAD_LIMIT`].
pub fn max_payload_setting(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<usize, GatewaySettingsError> {
    Ok(number(
        get,
        "command_max_payload_bytes",
        1,
        MAX_PAYLOAD_LIMIT as u64,
    )?
    .map_or(65_536, |n| usize::try_from(n).unwrap_or(MAX_PAYLOAD_LIMIT)))
}

fn kid(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<String>, GatewaySettingsError> {
    match get(name) {
        None => Ok(None),
        Some(raw) => {
            let ok = (1..=64).contains(&raw.len())
                && raw
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if ok {
                Ok(Some(raw))
            } else {
                Err(GatewaySettingsError::KeyId { name, got: raw })
            }
        }
    }
}

fn key_bytes(raw: &str, name: &'static str) -> Result<[u8; 32], GatewaySettingsError> {
    // The decoder's message would quote a character of a secret: say only what is wrong.
    let bytes = STANDARD
        .decode(raw.trim())
        .map_err(|e| GatewaySettingsError::Key {
            name,
            what: match e {
                base64::DecodeError::InvalidLength(_) => "not base64: wrong length".into(),
                base64::DecodeError::InvalidPadding => "not base64: bad padding".into(),
                _ => "not standard base64".into(),
            },
        })?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| GatewaySettingsError::Key {
            name,
            what: format!("{} bytes", bytes.len()),
        })
}

/// A signing key from its seed variable `name` and its `kid` variable `kid_name`
/// (derived when unset); `None` when the seed is unset.
fn signing_key(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    kid_name: &'static str,
) -> Result<Option<GatewayKey>, GatewaySettingsError> {
    let Some(raw) = get(name) else {
        return Ok(None);
    };
    let key = SigningKey::from_bytes(&key_bytes(&raw, name)?);
    let kid = kid(get, kid_name)?.unwrap_or_else(|| derived_kid(&key.verifying_key()));
    Ok(Some(GatewayKey { key, kid }))
}

/// The `kid` of a key whose operator gave none: `ed25519-` and 16 hex digits of the
/// SHA-256 of the public key, so it changes with the key.
pub fn derived_kid(public: &VerifyingKey) -> String {
    let hash = edge_auth_protocol::canonical::sha256_hex(public.as_bytes());
    format!("ed25519-{}", &hash[..16])
}

fn rate(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Rate, RateError> {
    Rate::parse(name, get(name).as_deref().unwrap_or(default))
}

impl GatewaySettings {
    /// Whether the gateway knows `message_type` on the route it came to: one it answers
    /// itself ([`RESERVED`]), one routed to the backend, or [`SUBSCRIBE`] where it opens a
    /// stream (`opens_stream`: the push route; sent to execute-command it is unknown).
    /// Only known types get a message-type budget of their own and their own metrics
    /// label, so a client cannot grow either by inventing types (`gateway.` followed by
    /// anything else is not known).
    pub fn knows(&self, message_type: &MessageType, opens_stream: bool) -> bool {
        self.routes.route(message_type).is_some()
            || RESERVED.contains(&message_type.as_str())
            || (opens_stream && message_type.as_str() == SUBSCRIBE)
    }

    /// Reads every setting through `get` (`None`: not set, the default).
    ///
    /// # Errors
    /// See [`GatewaySettingsError`].
    pub fn from_settings(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, GatewaySettingsError> {
        let signing = signing_key(&get, "gateway_signing_key", "gateway_key_id")?;
        let previous = signing_key(
            &get,
            "gateway_previous_signing_key",
            "gateway_previous_key_id",
        )?;
        let next = match get("gateway_next_public_key") {
            None => None,
            Some(raw) => {
                let name = "gateway_next_public_key";
                // Published in the signed key set and pinned by clients: a weak key (an
                // all-zero placeholder, say) would let a verifier that is not strict
                // accept forgeries under its kid.
                let public = sound_public_key(&key_bytes(&raw, name)?).map_err(|fault| {
                    GatewaySettingsError::Key {
                        name,
                        what: fault.to_string(),
                    }
                })?;
                let kid = kid(&get, "gateway_next_key_id")?.unwrap_or_else(|| derived_kid(&public));
                Some(NextKey { public, kid })
            }
        };
        let named = signing
            .iter()
            .chain(&previous)
            .map(|k| (&k.kid, k.key.verifying_key()))
            .chain(next.iter().map(|k| (&k.kid, k.public)));
        let mut seen: Vec<(&String, VerifyingKey)> = Vec::new();
        for (kid, public) in named {
            if seen.iter().any(|(k, p)| *k == kid && *p != public) {
                return Err(GatewaySettingsError::SameKeyId(kid.clone()));
            }
            seen.push((kid, public));
        }
        let window_s = number(&get, "command_freshness_window_seconds", 1, 600)?.unwrap_or(60);
        let max_payload = max_payload_setting(&get)?;
        let budgets = CommandBudgets {
            per_session: rate(&get, "command_rate_limit_per_session", "60/60")?,
            per_user: rate(&get, "command_rate_limit_per_user", "300/60")?,
            per_message_type: rate(&get, "command_rate_limit_per_message_type", "60/60")?,
            per_client: rate(&get, "command_rate_limit_per_client", "600/60")?,
        };
        // Blank reads as unset: the default table (`none` routes nothing).
        let routes = BackendRoutes::parse(
            get("backend_routes")
                .as_deref()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or(DEFAULT_ROUTES),
        )?;
        let backend = match get("backend_url") {
            None => None,
            Some(url) => Some(BackendTarget {
                url: backend_url(&url)?,
                token: get("backend_token"),
                connect_timeout_ms: number(&get, "backend_connect_timeout_ms", 1, 60_000)?
                    .unwrap_or(2_000),
                first_byte_timeout_ms: number(&get, "backend_first_byte_timeout_ms", 1, 60_000)?
                    .unwrap_or(5_000),
            }),
        };
        Ok(Self {
            signing,
            next,
            previous,
            window_ms: window_s * 1000,
            max_payload,
            budgets,
            routes,
            backend,
            clients: ClientPolicy::from_settings(&get)?,
        })
    }

    /// How long a request id stays reserved.
    pub fn replay_ttl_ms(&self) -> u64 {
        2 * self.window_ms + REPLAY_GRACE_MS
    }

    /// The published keys, signed (`None`: no signing key): the current key first, then
    /// the next one and the previous one when set, each `kid` once; signed by the current key
    /// and by the previous one (a client that pinned only the previous key follows the
    /// swap by its signature; PROTOCOL.md, section 9.2).
    pub fn jwks(&self) -> Option<Jwks> {
        let current = self.signing.as_ref()?;
        let mut keys = vec![Jwk::ed25519(
            &current.kid,
            current.key.verifying_key().as_bytes(),
        )];
        let others = self.next.iter().map(|k| (&k.kid, k.public)).chain(
            self.previous
                .iter()
                .map(|k| (&k.kid, k.key.verifying_key())),
        );
        for (kid, public) in others {
            // Settings refuse one kid for two keys, so a listed kid is this very key.
            if !keys.iter().any(|k| &k.kid == kid) {
                keys.push(Jwk::ed25519(kid, public.as_bytes()));
            }
        }
        let mut signatures = vec![sign_key_set(&current.key, &current.kid, &keys)];
        if let Some(previous) = &self.previous
            && previous.kid != current.kid
        {
            signatures.push(sign_key_set(&previous.key, &previous.kid, &keys));
        }
        Some(Jwks { keys, signatures })
    }
}
