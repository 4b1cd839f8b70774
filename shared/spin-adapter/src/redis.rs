//! Redis for the use cases: the connection, Lua scripts with EVALSHA → EVAL fallback, and
//! reading the flat replies Spin's `execute` returns.
//!
//! Two transports carry the same commands: Spin's Redis interface (RESP, `redis_url`), the
//! default, and the Upstash REST protocol over Spin's outbound HTTP ([`crate::redis_rest`],
//! when `redis_rest_url` is set). Replies decode to the same flat list on both, so no use
//! case knows which one it runs on. A push stream's blocking wait always takes RESP
//! ([`SpinRedis::connect_resp`]): REST cannot block.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{Context, bail};
use edge_auth_domain::health::StorePing;
use spin_sdk::redis::{Connection, Error as RedisError, RedisParameter, RedisResult};

use crate::config;
use crate::redis_rest::{RedisRestError, RestAnswerLost, RestClient};

/// How commands reach Redis.
#[derive(Debug)]
enum Transport {
    /// Spin's Redis interface: one connection per request.
    Resp(Connection),
    /// Upstash REST: one HTTP request per command, on Spin's pooled outbound HTTP.
    Rest(RestClient),
}

/// Redis as the deployment configured it (see the module docs).
///
/// A request opens one connection and every [`SpinRedis::connect`] of the request shares
/// it (an instance serves one request, and each open is a new TCP connection for Spin),
/// so work done after the response (metrics, delivery records) costs no new connection.
pub struct SpinRedis {
    transport: Rc<Transport>,
}

thread_local! {
    /// The request's transport, once opened ([`SpinRedis::connect`]).
    static SHARED: RefCell<Option<Rc<Transport>>> = const { RefCell::new(None) };
    /// The request's RESP connection, once opened ([`SpinRedis::connect_resp`]).
    static RESP: RefCell<Option<Rc<Transport>>> = const { RefCell::new(None) };
}

impl std::fmt::Debug for SpinRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the URL or token: they may hold credentials.
        f.write_str(match *self.transport {
            Transport::Resp(_) => "SpinRedis(resp)",
            Transport::Rest(_) => "SpinRedis(rest)",
        })
    }
}

/// A Lua script and its SHA1 (Redis' script id), both fixed at build time: see
/// [`scripts`] for the list and `build.rs` for how each is assembled (key-layout prelude
/// from [`crate::keys::lua_prelude`], then `scripts/lib.lua`, then the script's body).
#[derive(Debug)]
pub struct Script {
    /// Appears in errors.
    name: &'static str,
    source: &'static str,
    sha1: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/scripts.rs"));

/// An argument for a script or command.
#[derive(Debug)]
pub enum Arg {
    Text(String),
    Int(i64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}
impl From<u64> for Arg {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Arg {
    fn from(n: u32) -> Self {
        Self::Int(i64::from(n))
    }
}

fn param(arg: &Arg) -> RedisParameter {
    match arg {
        Arg::Text(s) => RedisParameter::Binary(s.as_bytes().to_vec()),
        Arg::Int(n) => RedisParameter::Int64(*n),
    }
}

/// Whether `error` is Redis saying it does not know a script (`NOSCRIPT`), on either
/// transport.
fn unknown_script(error: &anyhow::Error) -> bool {
    match error.downcast_ref::<RedisError>() {
        // redis-rs (behind Spin) reports Redis' `NOSCRIPT` by its kind: "An error was
        // signalled by the server - NoScriptError: No matching script…". A script's own
        // error that merely mentions NOSCRIPT is another kind (`ResponseError`), and must
        // not be run again by EVAL: Redis does not undo what it wrote before failing.
        Some(RedisError::Other(message)) => message.contains("- NoScriptError:"),
        // Redis' error text starts with its code; Upstash passes it on (its own client
        // matches it in any case).
        _ => error.downcast_ref::<RedisRestError>().is_some_and(|e| {
            e.0.trim_start()
                .get(..8)
                .is_some_and(|code| code.eq_ignore_ascii_case("NOSCRIPT"))
        }),
    }
}

/// Forgets the connections a previous request opened. Spin gives every request a fresh
/// instance today; should it reuse instances one day, no request would inherit another's
/// Redis (or its token).
pub fn forget_connections() {
    SHARED.set(None);
    RESP.set(None);
}

/// Checks `redis_rest_url` before any command goes there: the database's REST endpoint
/// itself, `https://<db>.upstash.io` (commands are posted to it). The message names the
/// variable and never quotes the value, which could hold a token (`?_token=`).
///
/// # Errors
/// Not an `https://` URL with a host (`http://` only to a loopback address), or one with
/// credentials, a path or a query.
fn check_rest_url(url: &str) -> anyhow::Result<()> {
    let wrong = "`redis_rest_url` is not the database's REST endpoint (https://<db>.upstash.io)";
    // The parser's message names the fault, not the value.
    let uri = url
        .parse::<http::Uri>()
        .with_context(|| format!("{wrong}: it is not a URL"))?;
    // The token travels in every request: in clear only to this machine (a local server
    // or sidecar), never across a network.
    let loopback = uri.host().is_some_and(crate::outbound::loopback_host);
    let why = if !matches!(uri.scheme_str(), Some("http" | "https")) {
        Some("it must start with https://")
    } else if uri.scheme_str() == Some("http") && !loopback {
        Some(
            "it must start with https:// (http:// only to a loopback address: the token would travel in clear)",
        )
    } else if uri.authority().is_none_or(|a| a.host().is_empty()) {
        Some("it has no host")
    } else if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        Some("it holds credentials: give the token as `redis_rest_token`")
    } else if uri.query().is_some() {
        Some("it has a query: give the token as `redis_rest_token`")
    } else if !matches!(uri.path(), "" | "/") {
        Some("it has a path: give the endpoint alone")
    } else {
        None
    };
    match why {
        Some(why) => bail!("{wrong}: {why}"),
        None => Ok(()),
    }
}

impl SpinRedis {
    /// Whether this goes over Upstash REST, where a command whose answer was lost (a
    /// timeout) may still have run, and there is no connection to replace.
    pub fn over_rest(&self) -> bool {
        matches!(*self.transport, Transport::Rest(_))
    }

    /// Whether `err`, from a command on this transport, is a REST call whose answer was
    /// lost (see [`RestAnswerLost`]), which may have run all the same. (On RESP a lost
    /// answer is not told apart from a command that never ran.)
    pub fn answer_lost_over_rest(&self, err: &anyhow::Error) -> bool {
        self.over_rest() && err.chain().any(|cause| cause.is::<RestAnswerLost>())
    }

    /// The request's Redis: Upstash REST when `redis_rest_url` is set (with
    /// `redis_rest_token`), else a RESP connection to `redis_url`.
    ///
    /// # Errors
    /// A variable is missing, the address is not allowed or malformed, or Redis refused
    /// the connection.
    pub fn connect() -> anyhow::Result<Self> {
        if let Some(transport) = SHARED.with_borrow(Clone::clone) {
            return Ok(Self { transport });
        }
        let transport = match crate::settings::optional("redis_rest_url")? {
            Some(url) => {
                let token = crate::settings::optional("redis_rest_token")?
                    .context("`redis_rest_url` is set but `redis_rest_token` is not")?;
                check_rest_url(&url)?;
                Rc::new(Transport::Rest(RestClient::new(url, token)))
            }
            None => Self::connect_resp()?.transport,
        };
        SHARED.set(Some(Rc::clone(&transport)));
        Ok(Self { transport })
    }

    /// The request's RESP connection to `redis_url`, whatever [`SpinRedis::connect`]
    /// uses: for blocking commands (`XREAD BLOCK`), which only RESP can wait in.
    ///
    /// # Errors
    /// As [`SpinRedis::connect`].
    pub fn connect_resp() -> anyhow::Result<Self> {
        if let Some(transport) = RESP.with_borrow(Clone::clone) {
            return Ok(Self { transport });
        }
        let url = config::variable("redis_url")?;
        // Spin answers `InvalidAddress` alike for a URL it cannot parse and for one the
        // component may not reach: name both variables that decide it.
        let conn = Connection::open(&url).context(
            "opening the Redis connection (is `redis_url` a redis:// or rediss:// URL, and \
             is its scheme://host:port the `redis_allowed_host` variable?)",
        )?;
        let transport = Rc::new(Transport::Resp(conn));
        RESP.set(Some(Rc::clone(&transport)));
        Ok(Self { transport })
    }

    /// Sends one command on the transport; counts one round trip.
    fn execute(&self, name: &str, params: &[RedisParameter]) -> anyhow::Result<Vec<RedisResult>> {
        crate::request_log::count_round_trip();
        match &*self.transport {
            Transport::Resp(conn) => Ok(conn.execute(name, params)?),
            Transport::Rest(client) => client.execute(name, params),
        }
    }

    /// Runs `script`: EVALSHA, and EVAL (which also caches it) when Redis does not know
    /// it yet. One round trip once the script is cached.
    ///
    /// # Errors
    /// Redis is unreachable or the script failed.
    pub fn run(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Arg],
    ) -> anyhow::Result<Vec<RedisResult>> {
        let mut params = Vec::with_capacity(2 + keys.len() + args.len());
        params.push(RedisParameter::Binary(script.sha1.as_bytes().to_vec()));
        params.push(RedisParameter::Int64(i64::try_from(keys.len())?));
        params.extend(
            keys.iter()
                .map(|k| RedisParameter::Binary(k.as_bytes().to_vec())),
        );
        params.extend(args.iter().map(param));
        match self.execute("EVALSHA", &params) {
            Ok(reply) => Ok(reply),
            Err(e) if unknown_script(&e) => {
                params[0] = RedisParameter::Binary(script.source.as_bytes().to_vec());
                self.execute("EVAL", &params)
                    .with_context(|| format!("running Redis script `{}`", script.name))
            }
            Err(e) => Err(e.context(format!("running Redis script `{}`", script.name))),
        }
    }

    /// Runs a plain command.
    ///
    /// # Errors
    /// Redis is unreachable or refused the command.
    pub fn command(&self, name: &str, args: &[Arg]) -> anyhow::Result<Vec<RedisResult>> {
        let params: Vec<RedisParameter> = args.iter().map(param).collect();
        self.execute(name, &params)
            .with_context(|| format!("sending {name} to Redis"))
    }
}

impl StorePing for SpinRedis {
    fn ping(&self) -> anyhow::Result<()> {
        match self.command("PING", &[])?.as_slice() {
            // A status on RESP, text on REST.
            [RedisResult::Status(s)] if s == "PONG" => Ok(()),
            [RedisResult::Binary(b)] if b == b"PONG" => Ok(()),
            other => bail!("unexpected PING reply: {other:?}"),
        }
    }
}

/// Reads a flat script reply.
#[derive(Debug)]
pub struct Reply {
    items: std::vec::IntoIter<RedisResult>,
    script: &'static str,
}

impl Reply {
    /// Wraps the reply of `script`.
    pub fn new(script: &'static str, items: Vec<RedisResult>) -> Self {
        Self {
            items: items.into_iter(),
            script,
        }
    }

    /// The next item as text (nil → `None`).
    ///
    /// # Errors
    /// The reply ended, or the item is an integer.
    pub fn text(&mut self) -> anyhow::Result<Option<String>> {
        match self.items.next() {
            Some(RedisResult::Binary(b)) => {
                Ok(Some(String::from_utf8(b).with_context(|| {
                    format!("`{}` reply: not UTF-8", self.script)
                })?))
            }
            Some(RedisResult::Status(s)) => Ok(Some(s)),
            Some(RedisResult::Nil) => Ok(None),
            Some(RedisResult::Int64(n)) => bail!("`{}` reply: expected text, got {n}", self.script),
            None => bail!("`{}` reply ended early", self.script),
        }
    }

    /// The next item as text that must be present.
    ///
    /// # Errors
    /// As [`Reply::text`], or nil.
    pub fn required(&mut self) -> anyhow::Result<String> {
        self.text()?
            .with_context(|| format!("`{}` reply: unexpected nil", self.script))
    }

    /// The next item as an integer.
    ///
    /// # Errors
    /// The reply ended or the item is not an integer.
    pub fn int(&mut self) -> anyhow::Result<i64> {
        match self.items.next() {
            Some(RedisResult::Int64(n)) => Ok(n),
            Some(RedisResult::Binary(b)) => String::from_utf8_lossy(&b)
                .parse()
                .with_context(|| format!("`{}` reply: expected an integer", self.script)),
            other => bail!(
                "`{}` reply: expected an integer, got {other:?}",
                self.script
            ),
        }
    }

    /// The items left, as text.
    ///
    /// # Errors
    /// An item that is not text.
    pub fn rest(&mut self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        while self.items.len() > 0 {
            out.push(self.required()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{RedisError, RedisRestError, check_rest_url, scripts, unknown_script};

    #[test]
    fn every_script_starts_with_the_key_layout_prelude_and_the_shared_helpers() {
        let head = format!(
            "{}{}",
            crate::keys::lua_prelude(),
            include_str!("scripts/lib.lua")
        );
        assert!(!scripts::ALL.is_empty());
        for script in scripts::ALL {
            assert!(
                script.source.starts_with(&head) && script.source.len() > head.len(),
                "`{}` lacks the prelude and helpers, or has no body",
                script.name
            );
        }
    }

    #[test]
    fn a_rest_noscript_is_known_by_its_leading_code_in_any_case() {
        let rest = |text: &str| anyhow::Error::new(RedisRestError(text.to_string()));
        for text in [
            "NOSCRIPT No matching script. Please use EVAL.",
            "noscript no matching script",
            " NoScript No matching script",
        ] {
            assert!(unknown_script(&rest(text)), "{text}");
        }
        // A script's own failure that merely mentions it must not be run again by EVAL:
        // Redis does not undo the writes it made before failing.
        for text in [
            "ERR user_script:1: NOSCRIPT in a message",
            "WRONGTYPE Operation against a key",
            "NOSCRIP",
        ] {
            assert!(!unknown_script(&rest(text)), "{text}");
        }
        // Over RESP, as redis-rs (behind Spin, and our host) words it.
        let resp = |text: &str| anyhow::Error::new(RedisError::Other(text.to_string()));
        assert!(unknown_script(&resp(
            "An error was signalled by the server - NoScriptError: No matching script. Please use EVAL."
        )));
        assert!(!unknown_script(&resp(
            "An error was signalled by the server - ResponseError: ERR user_script:1: NOSCRIPT in a message"
        )));
    }

    #[test]
    fn a_rest_url_in_clear_is_refused_unless_it_stays_on_this_machine() {
        for url in [
            "http://127.0.0.1:8079",
            "http://localhost:8079",
            "http://[::1]:8079",
            "https://db.upstash.io",
        ] {
            assert!(check_rest_url(url).is_ok(), "{url}");
        }
        for url in [
            "http://db.upstash.io",
            "http://10.0.0.5:8079",
            "ftp://db.upstash.io",
        ] {
            let refused = check_rest_url(url).expect_err(url).to_string();
            assert!(refused.contains("https://"), "{url}: {refused}");
        }
    }

    #[test]
    fn every_script_id_is_the_sha1_of_its_source() {
        for script in scripts::ALL {
            let sha1 = sha1_smol::Sha1::from(script.source).digest().to_string();
            assert_eq!(script.sha1, sha1, "`{}`", script.name);
        }
    }
}
