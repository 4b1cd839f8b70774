//! The app's request log lines, as tests read them.

use serde_json::Value;

use crate::TestApp;

/// The request lines among `lines` (JSON objects with `msg: request`).
pub fn request_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|line| {
            let json = &line[line.find('{')?..];
            serde_json::from_str::<Value>(json).ok()
        })
        .filter(|v| v["msg"] == "request")
        .collect()
}

/// The request lines whose `request_id` is `request_id`.
pub fn lines_with_id(lines: &[String], request_id: &str) -> Vec<Value> {
    request_lines(lines)
        .into_iter()
        .filter(|v| v["request_id"] == request_id)
        .collect()
}

impl TestApp {
    /// The line of the request whose response carried `request_id`, waited for: it is
    /// written once the response is sent and the work after it (a delivery, say) is
    /// done, so a test that waits for it has seen that work end.
    ///
    /// # Panics
    /// Not exactly one such line within 10 s.
    pub async fn request_line(&self, request_id: &str) -> Value {
        let logs = self
            .logs_once(|lines| !lines_with_id(lines, request_id).is_empty())
            .await;
        let lines = lines_with_id(&logs, request_id);
        assert_eq!(lines.len(), 1, "one line for {request_id}: {lines:#?}");
        lines[0].clone()
    }
}
