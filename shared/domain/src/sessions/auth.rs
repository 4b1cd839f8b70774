//! The internal API's bearer token.

use subtle::ConstantTimeEq;

/// Whether an `Authorization` header carries `Bearer <expected>`; constant-time in the
/// token's content. An empty configured token never matches.
pub fn bearer_matches(header: Option<&str>, expected: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::bearer_matches;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        for header in [
            None,
            Some(""),
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret "),
            Some("bearer s3cret"),
            Some("Basic s3cret"),
        ] {
            assert!(!bearer_matches(header, "s3cret"), "{header:?}");
        }
        assert!(
            !bearer_matches(Some("Bearer "), ""),
            "an unset token locks everything"
        );
    }
}
