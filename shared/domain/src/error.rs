//! The public error contract: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Each use case has its own error enum; this is the one shape they all become at the
//! edge, so clients can match on a stable `code` while `message` stays human text.

use serde::Serialize;

/// A public error: an HTTP status, a stable machine code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (`Retry-After`), when it applies.
    pub retry_after: Option<u64>,
    /// The server's clock, for a client whose clock is off (`stale_request`).
    pub server_time_ms: Option<u64>,
}

impl PublicError {
    /// An error without a retry hint.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            server_time_ms: None,
        }
    }

    /// The JSON body for this error.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                server_time_ms: self.server_time_ms,
            },
        }
    }
}

/// Wire form of a [`PublicError`].
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// The inner object of [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_time_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_serialises_to_the_public_shape() {
        let err = PublicError::new(400, "invalid_request", "bad JSON");
        let json = serde_json::to_value(err.body()).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "invalid_request", "message": "bad JSON"}})
        );
    }
}
