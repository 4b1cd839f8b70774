//! E-mail addresses: parsed once at the edge, normalised into the user's identity.
//!
//! Normalisation rule (documented in the OpenAPI file too):
//! - surrounding whitespace is trimmed;
//! - the domain is IDNA-normalised (UTS #46, to its ASCII/punycode form) and lower-cased;
//! - the local part is lower-cased: `Alice@Example.COM` and `alice@example.com` are one
//!   identity. Almost every provider treats local parts case-insensitively, and two
//!   identities that differ only by case would be an account-takeover hazard.
//!
//! Accepted syntax is the common "dot-atom" form: no quoted local parts, no comments, no
//! IP-literal domains, ASCII local parts only. Lengths follow RFC 5321 (local part up to
//! 64, domain up to 253, whole address up to 254).

use std::fmt;

/// A syntactically valid, normalised e-mail address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Why an address was refused; every variant maps to the public `invalid_email`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the e-mail address is empty")]
    Empty,
    #[error("the e-mail address is longer than 254 characters")]
    TooLong,
    #[error("the e-mail address has no '@'")]
    MissingAt,
    #[error("the part before '@' is not a valid local part")]
    InvalidLocalPart,
    #[error("the part after '@' is not a valid domain name")]
    InvalidDomain,
}

const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

impl EmailAddress {
    /// Parses and normalises `raw`.
    ///
    /// # Errors
    /// See [`EmailError`].
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > 320 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::MissingAt)?;
        let local = normalise_local(local)?;
        let domain = normalise_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > 254 {
            return Err(EmailError::TooLong);
        }
        Ok(Self(address))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The mailbox this address delivers to, when the address is one of its variants:
    /// without a `+` tag (`ada+news@example.com` → `ada@example.com`, the sub-address
    /// convention of RFC 5233 most providers follow), and for Gmail without dots and at
    /// `gmail.com` (`a.da@googlemail.com` → `ada@gmail.com`). `None` for an address that
    /// is its own mailbox form, or whose form without its tag is no valid address
    /// (`+tag@example.com`, `a.+tag@example.com`).
    ///
    /// Only budgets use it: the variants stay distinct addresses, each its own identity,
    /// but they reach one inbox, so they share a send budget kept at the inbox's address.
    pub fn mailbox(&self) -> Option<Self> {
        let (local, domain) = self.0.rsplit_once('@')?;
        let local = local.split_once('+').map_or(local, |(base, _tag)| base);
        let (local, domain) = match domain {
            "gmail.com" | "googlemail.com" => (local.replace('.', ""), "gmail.com"),
            _ => (local.to_string(), domain),
        };
        // Parsed again, so that it is a valid address (`a.+x@example.com` has none).
        let mailbox = Self::parse(&format!("{local}@{domain}")).ok()?;
        (mailbox != *self).then_some(mailbox)
    }
}

impl fmt::Debug for EmailAddress {
    /// Addresses are personal data: debug output shows the domain only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = self.0.rsplit_once('@').map_or("", |(_, d)| d);
        write!(f, "EmailAddress(…@{domain})")
    }
}

fn normalise_local(local: &str) -> Result<String, EmailError> {
    let valid_chars = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || LOCAL_SPECIALS.contains(c));
    if local.is_empty()
        || local.len() > 64
        || !valid_chars
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err(EmailError::InvalidLocalPart);
    }
    Ok(local.to_ascii_lowercase())
}

fn normalise_domain(domain: &str) -> Result<String, EmailError> {
    if domain.is_empty() || domain.starts_with('[') {
        return Err(EmailError::InvalidDomain);
    }
    // idna's error type is empty (`Errors {}`): it says no more than `InvalidDomain`.
    let ascii = idna::domain_to_ascii_strict(domain)
        .map_err(|_empty: idna::Errors| EmailError::InvalidDomain)?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_lowercase()));
    if ascii.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
        return Err(EmailError::InvalidDomain);
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        EmailAddress::parse(raw)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .as_str()
            .to_string()
    }

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            ok("  Alice.Smith+tag@Example.COM \n"),
            "alice.smith+tag@example.com"
        );
    }

    #[test]
    fn international_domains_become_punycode() {
        assert_eq!(ok("bob@Bücher.example"), "bob@xn--bcher-kva.example");
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        for (raw, err) in [
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("no-at.example.com", EmailError::MissingAt),
            ("@example.com", EmailError::InvalidLocalPart),
            (".a@example.com", EmailError::InvalidLocalPart),
            ("a..b@example.com", EmailError::InvalidLocalPart),
            ("a b@example.com", EmailError::InvalidLocalPart),
            ("\"q\"@example.com", EmailError::InvalidLocalPart),
            ("jörg@example.com", EmailError::InvalidLocalPart),
            ("a@", EmailError::InvalidDomain),
            ("a@localhost", EmailError::InvalidDomain),
            ("a@[127.0.0.1]", EmailError::InvalidDomain),
            ("a@-bad.example", EmailError::InvalidDomain),
            ("a@exa_mple.com", EmailError::InvalidDomain),
            ("a@example.123", EmailError::InvalidDomain),
            ("a@example..com", EmailError::InvalidDomain),
        ] {
            assert_eq!(EmailAddress::parse(raw), Err(err), "{raw:?}");
        }
    }

    #[test]
    fn length_limits_follow_rfc_5321() {
        let local = "a".repeat(64);
        assert!(EmailAddress::parse(&format!("{local}@example.com")).is_ok());
        let local = "a".repeat(65);
        assert_eq!(
            EmailAddress::parse(&format!("{local}@example.com")),
            Err(EmailError::InvalidLocalPart)
        );
        let domain = format!("{}.com", vec!["a".repeat(60); 4].join("."));
        assert_eq!(
            EmailAddress::parse(&format!("{}@{domain}", "b".repeat(10))),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn a_tagged_or_gmail_dotted_address_names_the_mailbox_it_reaches() {
        let mailbox = |raw: &str| {
            EmailAddress::parse(raw)
                .expect("valid")
                .mailbox()
                .map(|m| m.as_str().to_string())
        };
        for (raw, expected) in [
            ("Ada+News@Example.com", Some("ada@example.com")),
            ("ada+a+b@example.com", Some("ada@example.com")),
            ("ada+@example.com", Some("ada@example.com")),
            ("a.d.a@gmail.com", Some("ada@gmail.com")),
            ("A.da+x@GoogleMail.com", Some("ada@gmail.com")),
            ("ada@googlemail.com", Some("ada@gmail.com")),
            // Dots matter everywhere but Gmail.
            ("a.da@example.com", None),
            ("ada@example.com", None),
            ("ada@gmail.com", None),
            // Nothing before the tag: no mailbox to name.
            ("+tag@example.com", None),
            ("+tag@gmail.com", None),
            ("a.+tag@example.com", None),
            ("a-b@example.com", None),
        ] {
            assert_eq!(mailbox(raw).as_deref(), expected, "{raw}");
        }
    }

    #[test]
    fn a_mailbox_form_is_its_own_mailbox_and_a_valid_address() {
        for raw in ["ada+x@example.com", "a.d.a+y@googlemail.com"] {
            let mailbox = EmailAddress::parse(raw)
                .expect("valid")
                .mailbox()
                .expect("a variant");
            assert_eq!(EmailAddress::parse(mailbox.as_str()), Ok(mailbox.clone()));
            assert_eq!(mailbox.mailbox(), None);
        }
    }

    #[test]
    fn debug_output_hides_the_local_part() {
        let email = EmailAddress::parse("secret.person@example.com").expect("valid");
        assert!(!format!("{email:?}").contains("secret"));
    }
}
