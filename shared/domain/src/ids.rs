//! Identifiers: 128 random bits, URL-safe, carrying the address tag they belong to.
//!
//! Form: `<kind>_<tag>_<random>` where `kind` is `c` (challenge), `s` (device session) or
//! `u` (user), `tag` is the 16-hex-digit [`AddressTag`], and `random` is 16 bytes in
//! unpadded base64url (22 characters). The tag lets any holder of an id find the Redis
//! slot of its data in one step, and ties a session to its user's keys for atomic scripts.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::random::Random;

/// The pseudonymous tag of one e-mail address (see [`crate::crypto::ServerKey::address_tag`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressTag([u8; 8]);

impl AddressTag {
    /// Wraps tag bytes.
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(bytes)
    }

    /// Sixteen lower-case hex digits.
    pub fn to_hex(&self) -> String {
        edge_auth_protocol::canonical::hex(&self.0)
    }

    /// Parses sixteen lower-case hex digits.
    pub fn parse_hex(text: &str) -> Option<Self> {
        if text.len() != 16
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut out = [0u8; 8];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for AddressTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressTag({})", self.to_hex())
    }
}

/// An id string that is not of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct InvalidId {
    pub kind: &'static str,
    /// The decoder's error, when the random part was not base64url.
    #[source]
    pub cause: Option<base64::DecodeError>,
}

fn generate(prefix: char, tag: AddressTag, random: &impl Random) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    random.fill(&mut bytes)?;
    Ok(format!(
        "{prefix}_{}_{}",
        tag.to_hex(),
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn parse(prefix: char, kind: &'static str, text: &str) -> Result<AddressTag, InvalidId> {
    let err = |cause| InvalidId { kind, cause };
    let rest = text
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or(err(None))?;
    let (tag, random) = rest.split_once('_').ok_or(err(None))?;
    let tag = AddressTag::parse_hex(tag).ok_or(err(None))?;
    // Canonical unpadded base64url of exactly 16 bytes.
    let decoded = URL_SAFE_NO_PAD.decode(random).map_err(|e| err(Some(e)))?;
    if random.len() != 22 || decoded.len() != 16 {
        return Err(err(None));
    }
    Ok(tag)
}

macro_rules! tagged_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            text: String,
            tag: AddressTag,
        }

        impl $name {
            /// A fresh random id under `tag`.
            ///
            /// # Errors
            /// The random source failed.
            pub fn generate(tag: AddressTag, random: &impl Random) -> anyhow::Result<Self> {
                Ok(Self { text: generate($prefix, tag, random)?, tag })
            }

            /// Parses an id received from outside.
            ///
            /// # Errors
            /// Anything but the exact form this kind of id has.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                let tag = parse($prefix, $kind, text)?;
                Ok(Self { text: text.to_string(), tag })
            }

            /// The id as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.text
            }

            /// The address tag it belongs to.
            pub fn tag(&self) -> AddressTag {
                self.tag
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.text)
            }
        }
    };
}

tagged_id!(
    /// Identifies one login challenge.
    ChallengeId, 'c', "challenge"
);
tagged_id!(
    /// Identifies one device session.
    DeviceSessionId, 's', "device session"
);
tagged_id!(
    /// Identifies one user (Redis user directory).
    UserId, 'u', "user"
);

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u8);
    impl Random for Fixed {
        fn fill(&self, buf: &mut [u8]) -> anyhow::Result<()> {
            buf.fill(self.0);
            Ok(())
        }
    }

    #[test]
    fn ids_round_trip_and_keep_their_tag() {
        let tag = AddressTag::from_bytes([0xab; 8]);
        let id = ChallengeId::generate(tag, &Fixed(1)).expect("generated");
        assert_eq!(id.as_str(), "c_abababababababab_AQEBAQEBAQEBAQEBAQEBAQ");
        let parsed = ChallengeId::parse(id.as_str()).expect("parses");
        assert_eq!(parsed, id);
        assert_eq!(parsed.tag(), tag);
    }

    #[test]
    fn ids_of_another_kind_or_shape_are_refused() {
        let good = "s_abababababababab_AQEBAQEBAQEBAQEBAQEBAQ";
        assert!(DeviceSessionId::parse(good).is_ok());
        for bad in [
            "c_abababababababab_AQEBAQEBAQEBAQEBAQEBAQ",
            "s_ABABABABABABABAB_AQEBAQEBAQEBAQEBAQEBAQ",
            "s_abababababababab_AQEBAQEBAQEBAQEBAQEBAQ==",
            "s_abababababababab_AQEBAQEBAQEBAQEBAQEBAR",
            "s_abababababababab_short",
            "s_ababab_AQEBAQEBAQEBAQEBAQEBAQ",
            "",
            "s__",
        ] {
            assert!(DeviceSessionId::parse(bad).is_err(), "{bad}");
        }
    }
}
