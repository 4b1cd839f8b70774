//! Edge budgets: how many calls a client address or an e-mail address may make.
//!
//! Enforced with GCRA in Redis (one script call checks every budget of a request and
//! spends them only if all allow it). A budget of `N/S` allows a burst of `N` calls at
//! once and then one call every `S/N` seconds: `N/S` on average, but up to `2N − 1`
//! calls can fall in one window of `S` seconds (a full burst at its start, `N − 1`
//! refills before its end).

use std::time::Duration;

/// `limit` calls per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

/// The longest period a rate may have: a year. Longer ones would reach Redis as
/// expiries it refuses (every call of the route a 503), not as a settings error.
pub const MAX_PERIOD_SECONDS: u64 = 365 * 24 * 3600;

/// A rate that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{setting} must look like \"30/60\" (calls/seconds: calls 1 or more, seconds 1 to {MAX_PERIOD_SECONDS}, a year), got {got:?}"
)]
pub struct RateError {
    pub setting: &'static str,
    pub got: String,
    /// Why a number in it did not parse, when that was the trouble.
    #[source]
    pub cause: Option<std::num::ParseIntError>,
}

impl Rate {
    /// Parses `"<calls>/<seconds>"`.
    ///
    /// # Errors
    /// Anything else, zero in either place, or a period over [`MAX_PERIOD_SECONDS`].
    pub fn parse(setting: &'static str, raw: &str) -> Result<Self, RateError> {
        let err = |cause| RateError {
            setting,
            got: raw.to_string(),
            cause,
        };
        let (limit, seconds) = raw.trim().split_once('/').ok_or_else(|| err(None))?;
        let limit: u32 = limit.trim().parse().map_err(|e| err(Some(e)))?;
        let seconds: u64 = seconds.trim().parse().map_err(|e| err(Some(e)))?;
        if limit == 0 || seconds == 0 || seconds > MAX_PERIOD_SECONDS {
            return Err(err(None));
        }
        Ok(Self {
            limit,
            period: Duration::from_secs(seconds),
        })
    }

    /// GCRA emission interval: the period spread over the calls, in ms (at least 1).
    pub fn interval_ms(&self) -> u64 {
        (crate::time::millis(self.period) / u64::from(self.limit)).max(1)
    }

    /// GCRA burst tolerance in ms: `limit` calls may arrive at once (and `2 × limit − 1`
    /// within one period, see the module docs).
    pub fn tolerance_ms(&self) -> u64 {
        crate::time::millis(self.period).saturating_sub(self.interval_ms())
    }
}

/// One client budget a request spends from (e-mail address budgets are spent by the
/// login store, in the address's own slot, only for calls that reach it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The route family, e.g. `send` or `confirm`: each has its own buckets.
    pub route: &'static str,
    /// The client's budget key ([`crate::client::ClientPolicy::budget_key`]).
    pub client: String,
    pub rate: Rate,
}

/// The budgets of the public login routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    pub per_client: Rate,
    pub per_address: Rate,
    /// Wrong codes per client address, across every e-mail address. The address's own
    /// cap bounds the guesses aimed at one address; this bounds a client that spreads its
    /// guesses over many addresses, a few each (each one of 10^6 to hit some account).
    pub wrong_codes_per_client: Rate,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            per_client: Rate {
                limit: 30,
                period: Duration::from_secs(60),
            },
            per_address: Rate {
                limit: 10,
                period: Duration::from_secs(3600),
            },
            wrong_codes_per_client: Rate {
                limit: 30,
                period: Duration::from_secs(3600),
            },
        }
    }
}

impl EdgeLimits {
    /// Reads `rate_limit_per_client`, `rate_limit_per_address` and
    /// `rate_limit_wrong_codes_per_client` (`None` = default).
    ///
    /// # Errors
    /// A value that does not parse.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, RateError> {
        let d = Self::default();
        Ok(Self {
            per_client: match get("rate_limit_per_client") {
                Some(raw) => Rate::parse("rate_limit_per_client", &raw)?,
                None => d.per_client,
            },
            per_address: match get("rate_limit_per_address") {
                Some(raw) => Rate::parse("rate_limit_per_address", &raw)?,
                None => d.per_address,
            },
            wrong_codes_per_client: match get("rate_limit_wrong_codes_per_client") {
                Some(raw) => Rate::parse("rate_limit_wrong_codes_per_client", &raw)?,
                None => d.wrong_codes_per_client,
            },
        })
    }
}

impl EdgeLimits {
    /// The budget of a client on `route`, by its budget key.
    pub fn client_budget(&self, route: &'static str, client: String) -> Budget {
        Budget {
            route,
            client,
            rate: self.per_client,
        }
    }

    /// The wrong-code budget of a client, by its budget key: confirm needs room in it,
    /// and spends it only for a wrong code.
    pub fn wrong_code_budget(&self, client: String) -> Budget {
        Budget {
            route: "wrong_code",
            client,
            rate: self.wrong_codes_per_client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_spread_their_period() {
        let rate = Rate::parse("x", " 30/60 ").expect("valid");
        assert_eq!(rate.limit, 30);
        assert_eq!(rate.interval_ms(), 2_000);
        assert_eq!(rate.tolerance_ms(), 58_000);
        for bad in [
            "",
            "30",
            "0/60",
            "30/0",
            "a/60",
            "30/-1",
            // Review finding: a period this long overflowed to u64::MAX ms, which Redis
            // refused as an expiry on every call.
            "30/100000000000000",
            "30/31536001",
        ] {
            assert!(Rate::parse("x", bad).is_err(), "{bad}");
        }
        assert!(Rate::parse("x", "30/31536000").is_ok(), "a year");
    }

    #[test]
    fn the_wrong_code_budget_defaults_to_30_an_hour_and_names_itself_when_bad() {
        let limits = EdgeLimits::from_settings(|_| None).expect("defaults");
        assert_eq!(
            limits.wrong_code_budget("c".into()).rate,
            Rate::parse("x", "30/3600").expect("valid")
        );
        let set =
            |name: &str| (name == "rate_limit_wrong_codes_per_client").then(|| "5/60".to_string());
        let limits = EdgeLimits::from_settings(set).expect("valid");
        assert_eq!(limits.wrong_codes_per_client.limit, 5);
        assert_eq!(limits.per_client, EdgeLimits::default().per_client);
        let err = EdgeLimits::from_settings(|name| {
            (name == "rate_limit_wrong_codes_per_client").then(|| "many".to_string())
        })
        .expect_err("refused");
        assert_eq!(err.setting, "rate_limit_wrong_codes_per_client");
    }

    #[test]
    fn a_burst_of_n_then_one_per_interval_gives_2n_minus_1_in_one_window() {
        // The GCRA of the Redis scripts, replayed: calls at every ms of one period.
        let rate = Rate::parse("x", "10/60").expect("valid");
        let (interval, tolerance) = (rate.interval_ms(), rate.tolerance_ms());
        let mut tat = 0_u64;
        let mut allowed = 0;
        for now in 0..60_000_u64 {
            let t = tat.max(now);
            if t - now <= tolerance {
                tat = t + interval;
                allowed += 1;
            }
        }
        assert_eq!(allowed, 2 * 10 - 1);
    }
}
