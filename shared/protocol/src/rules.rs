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

#[cfg(test)]
mod tests {
    use super::*;

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
