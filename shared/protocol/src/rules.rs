//! Field rules: what the gateway accepts, and what a client must send.

/// `request_id`: 16–128 characters of the base64url alphabet (`A-Z a-z 0-9 - _`). Chosen
/// by the client, unique per device session within the replay window (a random 128-bit
/// value in unpadded base64url, 22 characters, is the intended form).
pub fn is_request_id(text: &str) -> bool {
    (16..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `message_type`: 1–64 characters of `a-z 0-9 . _ -`, starting with a letter
/// (`gateway.` names are the gateway's own).
pub fn is_message_type(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.as_bytes()[0].is_ascii_lowercase()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A SHA-256 digest as 64 lower-case hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The largest `timestamp_ms` (2^53 - 1, so JSON numbers stay exact everywhere).
pub const MAX_TIMESTAMP_MS: u64 = (1 << 53) - 1;

/// The HTTP status a signed `result_code` stands for (PROTOCOL.md, section 6.2): a client
/// acts on this, not on the status line, which is not signed (anyone on the path could
/// turn a `session_revoked` into a `503` to keep a client signing new commands).
/// `None` for a code this version does not know.
pub fn signed_status(result_code: &str) -> Option<u16> {
    Some(match result_code {
        "ok" => 200,
        "session_revoked" | "session_expired" => 401,
        "user_blocked" => 403,
        "unknown_message_type" => 404,
        "replayed_request" => 409,
        "backend_rejected" => 422,
        "rate_limited" | "too_many_streams" => 429,
        "backend_unavailable" => 502,
        "backend_timeout" => 504,
        _ => return None,
    })
}

/// Why 32 bytes are no sound Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFault {
    #[error("not a valid Ed25519 point")]
    NotAPoint,
    #[error("not canonically encoded")]
    NonCanonical,
    #[error("a small-order point")]
    SmallOrder,
}

/// An Ed25519 public key every verifier reads alike: a point, canonically encoded, not of
/// small order. Strict verification refuses every signature under a small-order key, but
/// a verifier that is not strict (some WebCrypto implementations) accepts forgeries under
/// one, and a non-canonical encoding names the same point as another text: a device key,
/// a gateway key and a key a client takes from the JWKS must all pass this.
///
/// # Errors
/// The [`KeyFault`].
pub fn sound_public_key(bytes: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, KeyFault> {
    // `from_bytes` fails only when the bytes do not decompress to a point.
    let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
        .map_err(|_decompression: ed25519_dalek::SignatureError| KeyFault::NotAPoint)?;
    // `from_bytes` keeps the bytes it was given: re-encode the decoded point.
    if key.to_edwards().compress().to_bytes() != *bytes {
        return Err(KeyFault::NonCanonical);
    }
    if key.is_weak() {
        return Err(KeyFault::SmallOrder);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_codes_have_the_statuses_of_protocol_md_section_6_2() {
        // The table clients act on: the browser client's copy is checked against the same
        // rows (tests/js-client/vectors.mjs), the gateway's by the adapter's tests.
        let text = include_str!("../PROTOCOL.md");
        let start = text.find("### 6.2").expect("PROTOCOL.md has section 6.2");
        let section = &text[start..];
        let section = &section[..section[1..].find("\n#").map_or(section.len(), |e| e + 1)];
        let mut signed = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (code, status, kind) = (cells[1].trim_matches('`'), cells[2], cells[3]);
            if kind.starts_with("signed") {
                assert_eq!(
                    signed_status(code),
                    Some(status.parse::<u16>().expect("a status")),
                    "{code}"
                );
                signed.push(code);
            }
        }
        assert!(signed.len() >= 10, "{signed:?}");
        for code in [
            "session_revoked",
            "session_expired",
            "user_blocked",
            "unknown_message_type",
            "replayed_request",
            "backend_rejected",
            "rate_limited",
            "too_many_streams",
            "backend_unavailable",
            "backend_timeout",
        ] {
            assert!(
                signed.contains(&code),
                "{code} is a signed row of section 6.2"
            );
        }
    }

    #[test]
    fn only_canonical_points_not_of_small_order_are_sound_public_keys() {
        let good = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(sound_public_key(good.as_bytes()), Ok(good));
        assert_eq!(sound_public_key(&[0; 32]), Err(KeyFault::SmallOrder));
        let mut identity = [0; 32];
        identity[0] = 1;
        assert_eq!(sound_public_key(&identity), Err(KeyFault::SmallOrder));
        // y = p: the encoding of y = 0 plus the field's modulus.
        let mut y_is_p = [0xff; 32];
        y_is_p[0] = 0xed;
        y_is_p[31] = 0x7f;
        assert_eq!(sound_public_key(&y_is_p), Err(KeyFault::NonCanonical));
        // y = 2 has no x on the curve.
        let mut off_curve = [0; 32];
        off_curve[0] = 2;
        assert_eq!(sound_public_key(&off_curve), Err(KeyFault::NotAPoint));
    }

    #[test]
    fn request_ids_are_base64url_words_of_16_to_128_characters() {
        assert!(is_request_id("AAAAAAAAAAAAAAAA"));
        assert!(is_request_id(&"a-_9".repeat(32)));
        for bad in [
            "",
            "short",
            &"a".repeat(129),
            "AAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAA/",
        ] {
            assert!(!is_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn message_types_are_lower_case_dotted_names() {
        for good in ["echo", "profile.get", "gateway.logout", "a-b_c.1"] {
            assert!(is_message_type(good), "{good}");
        }
        for bad in ["", "Echo", "1abc", ".x", "has space", &"a".repeat(65)] {
            assert!(!is_message_type(bad), "{bad:?}");
        }
    }
}
