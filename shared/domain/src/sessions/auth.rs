//! The internal API's bearer token, and during a rotation the next one.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest internal API token accepted, in characters.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The configured internal API token: at least [`MIN_TOKEN_CHARS`] characters.
#[derive(Clone)]
pub struct InternalApiToken {
    /// SHA-256 of the token: compared instead of the token itself, so that neither its
    /// content nor its length shows in the time a comparison takes.
    digest: [u8; 32],
    /// `internal_api_next_token`'s digest, during a rotation: accepted as well.
    next: Option<[u8; 32]>,
}

/// The configured token is too short to be a secret.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} has {chars} characters; at least {MIN_TOKEN_CHARS} are required \
     (e.g. `head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)"
)]
pub struct WeakToken {
    /// The variable that holds it.
    pub name: &'static str,
    pub chars: usize,
}

fn digest(name: &'static str, token: &str) -> Result<[u8; 32], WeakToken> {
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(WeakToken { name, chars });
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

impl InternalApiToken {
    /// Accepts a token of at least [`MIN_TOKEN_CHARS`] characters.
    ///
    /// # Errors
    /// [`WeakToken`] when it is shorter (an unset token is empty, so it is refused too).
    pub fn parse(token: &str) -> Result<Self, WeakToken> {
        Ok(Self {
            digest: digest("internal_api_token", token)?,
            next: None,
        })
    }

    /// Also accepts `next` (`internal_api_next_token`), while callers move to it.
    ///
    /// # Errors
    /// [`WeakToken`] when `next` is shorter than [`MIN_TOKEN_CHARS`].
    pub fn with_next(self, next: &str) -> Result<Self, WeakToken> {
        Ok(Self {
            next: Some(digest("internal_api_next_token", next)?),
            ..self
        })
    }

    /// Whether an `Authorization` header carries `Bearer <this token>` (or the next
    /// one). Constant-time in the tokens' content and length: both sides are hashed, the
    /// digests compared, and both comparisons always made.
    pub fn authorizes(&self, header: Option<&str>) -> bool {
        let Some(presented) = header.and_then(bearer_credentials) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let next = self
            .next
            .map_or(subtle::Choice::from(0), |n| presented.ct_eq(&n));
        bool::from(presented.ct_eq(&self.digest) | next)
    }
}

/// Whether `header` is `Bearer <expected>`, compared in constant time (for shared secrets
/// of any length, e.g. the token a backend expects from the gateway).
pub fn bearer_matches(expected: &str, header: Option<&str>) -> bool {
    let Some(presented) = header.and_then(bearer_credentials) else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let expected: [u8; 32] = Sha256::digest(expected.as_bytes()).into();
    bool::from(presented.ct_eq(&expected))
}

/// The credentials of an `Authorization` header of the `Bearer` scheme: the scheme's name
/// in any case, as RFC 9110 section 11.1 has it, then one or more spaces. `None` for another
/// scheme. (The token itself is compared exactly.)
fn bearer_credentials(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| credentials.trim_start_matches(' '))
}

impl std::fmt::Debug for InternalApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalApiToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::{InternalApiToken, MIN_TOKEN_CHARS};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_exact_bearer_token_authorizes() {
        let token = InternalApiToken::parse(TOKEN).expect("32 characters");
        // The scheme's name is case-insensitive (RFC 9110 section 11.1), and one or more
        // spaces may follow it; the token is compared exactly.
        for header in [
            format!("Bearer {TOKEN}"),
            format!("bearer {TOKEN}"),
            format!("BEARER  {TOKEN}"),
        ] {
            assert!(token.authorizes(Some(&header)), "{header:?}");
            assert!(super::bearer_matches(TOKEN, Some(&header)), "{header:?}");
        }
        let shorter = format!("Bearer {}", &TOKEN[..31]);
        let longer = format!("Bearer {TOKEN} ");
        let upper = format!("Bearer {}", TOKEN.to_uppercase());
        let glued = format!("Bearer{TOKEN}");
        let tabbed = format!("Bearer\t{TOKEN}");
        let other = format!("Basic {TOKEN}");
        let prefixed = format!("XBearer {TOKEN}");
        for header in [
            None,
            Some(""),
            Some(TOKEN),
            Some(shorter.as_str()),
            Some(longer.as_str()),
            Some(upper.as_str()),
            Some(glued.as_str()),
            Some(tabbed.as_str()),
            Some(other.as_str()),
            Some(prefixed.as_str()),
            Some("Bearer "),
            Some("Bearer"),
        ] {
            assert!(!token.authorizes(header), "{header:?}");
            assert!(!super::bearer_matches(TOKEN, header), "{header:?}");
        }
    }

    #[test]
    fn a_token_shorter_than_32_characters_is_refused() {
        for short in ["", "s3cret", &TOKEN[..MIN_TOKEN_CHARS - 1]] {
            let err = InternalApiToken::parse(short).expect_err("too short");
            assert!(err.to_string().contains("internal_api_token"), "{err}");
        }
    }

    #[test]
    fn during_a_rotation_the_next_token_is_accepted_beside_the_current_one() {
        const NEXT: &str = "fedcba9876543210fedcba9876543210";
        let token = InternalApiToken::parse(TOKEN)
            .and_then(|t| t.with_next(NEXT))
            .expect("32 characters each");
        assert!(token.authorizes(Some(&format!("Bearer {TOKEN}"))));
        assert!(token.authorizes(Some(&format!("Bearer {NEXT}"))));
        assert!(!token.authorizes(Some(&format!("Bearer {NEXT}x"))));
        assert!(!token.authorizes(None));
        let only = InternalApiToken::parse(TOKEN).expect("32 characters");
        assert!(!only.authorizes(Some(&format!("Bearer {NEXT}"))));
        let weak = InternalApiToken::parse(TOKEN).and_then(|t| t.with_next("short"));
        let err = weak.expect_err("too short");
        assert!(err.to_string().contains("internal_api_next_token"), "{err}");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = InternalApiToken::parse(TOKEN).expect("32 characters");
        assert!(!format!("{token:?}").contains(TOKEN));
    }
}
