//! A logged-in test device: its key and session, signing commands with the client crate
//! (the same encoding code the gateway verifies with).

use std::time::{SystemTime, UNIX_EPOCH};

use edge_auth_client::{DeviceKey, Prepared, new_request_id, sign_command};

/// A device with a session.
#[derive(Debug, Clone)]
pub struct Device {
    pub key: DeviceKey,
    pub session: String,
}

/// This machine's clock in Unix ms (the same clock as the test's Redis).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Device {
    /// A fresh signed command (new request id, now).
    pub fn command(&self, message_type: &str, payload: &[u8]) -> Prepared {
        self.command_at(message_type, payload, now_ms())
    }

    /// A signed command with the device's clock at `timestamp_ms`.
    pub fn command_at(&self, message_type: &str, payload: &[u8], timestamp_ms: u64) -> Prepared {
        let request_id = new_request_id().expect("randomness");
        sign_command(
            &self.key,
            &self.session,
            message_type,
            payload,
            timestamp_ms,
            &request_id,
        )
    }
}
