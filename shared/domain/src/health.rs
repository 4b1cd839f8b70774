//! The health check: is the state store reachable right now?
//!
//! A gateway whose Redis is gone cannot log anyone in or check a session, so health is
//! exactly "one Redis round trip succeeds".

/// The one thing health needs from the state store.
pub trait StorePing {
    /// Performs one cheap round trip to the store.
    ///
    /// # Errors
    /// The store cannot be reached or did not answer as expected; the error carries
    /// the cause for the log.
    fn ping(&self) -> anyhow::Result<()>;
}

/// The outcome of a health check.
#[derive(Debug)]
pub enum Health {
    Ok,
    /// The store did not answer; the cause is kept for the log, never for the client.
    StoreUnreachable(anyhow::Error),
}

/// Checks the store with one round trip.
pub fn check(store: &impl StorePing) -> Health {
    match store.ping() {
        Ok(()) => Health::Ok,
        Err(e) => Health::StoreUnreachable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct FakeStore {
        up: bool,
        pings: Cell<u32>,
    }

    impl StorePing for FakeStore {
        fn ping(&self) -> anyhow::Result<()> {
            self.pings.set(self.pings.get() + 1);
            if self.up {
                Ok(())
            } else {
                anyhow::bail!("connection refused")
            }
        }
    }

    #[test]
    fn a_reachable_store_is_healthy_after_exactly_one_ping() {
        let store = FakeStore {
            up: true,
            pings: Cell::new(0),
        };
        assert!(matches!(check(&store), Health::Ok));
        assert_eq!(store.pings.get(), 1);
    }

    #[test]
    fn an_unreachable_store_reports_its_cause() {
        let store = FakeStore {
            up: false,
            pings: Cell::new(0),
        };
        match check(&store) {
            Health::StoreUnreachable(e) => assert!(e.to_string().contains("refused")),
            Health::Ok => panic!("must not be healthy"),
        }
    }
}
