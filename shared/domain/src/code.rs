//! Verification codes: uniformly random digits from the CSPRNG.

use crate::random::Random;

/// A code as generated (for delivery) or as typed by the user.
#[derive(Clone, PartialEq, Eq)]
pub struct VerificationCode(String);

impl std::fmt::Debug for VerificationCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerificationCode(redacted)")
    }
}

impl VerificationCode {
    /// `length` uniformly random decimal digits (rejection sampling: no modulo bias).
    ///
    /// # Errors
    /// The random source failed.
    pub fn generate(length: u8, random: &impl Random) -> anyhow::Result<Self> {
        let mut code = String::with_capacity(usize::from(length));
        let mut buf = [0u8; 16];
        while code.len() < usize::from(length) {
            random.fill(&mut buf)?;
            for byte in buf {
                // 250 = 25 * 10: bytes above it would favour low digits.
                if byte < 250 && code.len() < usize::from(length) {
                    code.push(char::from(b'0' + byte % 10));
                }
            }
        }
        Ok(Self(code))
    }

    /// Accepts what a user typed: exactly `length` ASCII digits (surrounding spaces trimmed).
    pub fn parse(raw: &str, length: u8) -> Option<Self> {
        let raw = raw.trim();
        (raw.len() == usize::from(length) && raw.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(raw.to_string()))
    }

    /// The digits. Handle with care: never log them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn generated_codes_have_the_requested_number_of_digits() {
        for length in 6..=10 {
            let code = VerificationCode::generate(length, &OsRandom).expect("random works");
            assert_eq!(code.expose().len(), usize::from(length));
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn digits_are_close_to_uniform() {
        let mut counts = [0u32; 10];
        for _ in 0..2_000 {
            let code = VerificationCode::generate(10, &OsRandom).expect("random works");
            for b in code.expose().bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        // 20,000 digits: each expected 2,000; a 5-sigma band is about ±212.
        for (digit, n) in counts.iter().enumerate() {
            assert!((1_750..=2_250).contains(n), "digit {digit}: {n}");
        }
    }

    #[test]
    fn typed_codes_must_be_exact_digits() {
        assert!(VerificationCode::parse(" 123456 ", 6).is_some());
        assert!(VerificationCode::parse("12345", 6).is_none());
        assert!(VerificationCode::parse("1234567", 6).is_none());
        assert!(VerificationCode::parse("12345a", 6).is_none());
        assert!(VerificationCode::parse("１２３４５６", 6).is_none());
    }

    #[test]
    fn debug_never_shows_the_digits() {
        let code = VerificationCode::parse("123456", 6).expect("valid");
        assert!(!format!("{code:?}").contains("123456"));
    }
}
