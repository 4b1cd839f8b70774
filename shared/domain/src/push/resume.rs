//! Where a subscribe resumes: the position its signed payload names, checked against a
//! `Last-Event-ID` header.

use serde::Deserialize;

use crate::gateway::execute::{CommandError, SUBSCRIBE};
use crate::push::ports::Position;

/// The payload of `gateway.subscribe` (a DTO).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribePayload {
    #[serde(default, deserialize_with = "crate::json::present_string")]
    last_event_id: Option<String>,
}

/// Where the client resumes: the signed payload's `last_event_id`, else from now.
///
/// A `Last-Event-ID` header is no resume point: anyone on the path could add one, and a
/// fresh stream would then replay old (genuinely signed) events the client has no
/// position to refuse. One that does not name the signed position is refused, so a
/// client that relies on it learns so at once instead of silently starting from now.
/// (A browser's `EventSource` cannot send this POST anyway.)
///
/// # Errors
/// `InvalidRequest`: a payload that is neither empty nor `{"last_event_id"}` with a
/// position, or a header that does not name the signed position.
pub fn resume_point(
    payload: &[u8],
    header: Option<&str>,
) -> Result<Option<Position>, CommandError> {
    let invalid = |m: String| CommandError::InvalidRequest(m);
    let signed = if payload.is_empty() {
        None
    } else if !crate::json::starts_an_object(payload) {
        return Err(invalid(format!(
            "the payload of {SUBSCRIBE} must be empty or a JSON object"
        )));
    } else {
        serde_json::from_slice::<SubscribePayload>(payload)
            .map_err(|e| {
                invalid(format!(
                    "the payload of {SUBSCRIBE} must be empty or {{\"last_event_id\"}}: {e}"
                ))
            })?
            .last_event_id
    };
    let signed = signed
        .as_deref()
        .map(|raw| Position::parse(raw).map_err(|e| invalid(e.to_string())))
        .transpose()?;
    if let Some(header) = header.map(str::trim).filter(|h| !h.is_empty())
        && signed.is_none_or(|at| Position::parse(header).ok() != Some(at))
    {
        return Err(invalid(format!(
            "a Last-Event-ID header must name the signed payload's last_event_id: \
             the resume point is signed (put it in the {SUBSCRIBE} payload)"
        )));
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(payload: &[u8], header: Option<&str>) -> Option<Position> {
        resume_point(payload, header).expect("a resume point")
    }

    #[test]
    fn a_subscribe_resumes_only_from_the_position_its_signed_payload_names() {
        let at = Position::parse("1700000000000-3").expect("position");
        let signed = br#"{"last_event_id":"1700000000000-3"}"#;
        assert_eq!(ok(b"", None), None);
        assert_eq!(ok(b"{}", None), None);
        assert_eq!(ok(signed, None), Some(at));
        // A header may repeat the signed position (spaces aside), never replace it.
        assert_eq!(ok(signed, Some(" 1700000000000-3 ")), Some(at));
        assert_eq!(ok(b"", Some("  ")), None);
        for (payload, header) in [
            (&b""[..], Some("1700000000000-3")),
            (&signed[..], Some("1700000000000-2")),
            (&signed[..], Some("yesterday")),
            (&b"[\"1700000000000-3\"]"[..], None),
            (&br#"{"last_event_id":"yesterday"}"#[..], None),
            (&br#"{"last_event_id":"1-0","more":1}"#[..], None),
            (&b"null"[..], None),
            (&br#"{"last_event_id":null}"#[..], None),
        ] {
            assert!(
                matches!(
                    resume_point(payload, header),
                    Err(CommandError::InvalidRequest(_))
                ),
                "{:?} {header:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
