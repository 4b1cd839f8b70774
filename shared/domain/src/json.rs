//! JSON request bodies as the API's contracts admit them: objects only.

/// Whether `text` is a JSON object, by its first byte after JSON whitespace. Serde's
/// derived structs also accept a JSON array of their fields in order, which no route's
/// contract admits: every body (and signed payload) parsed into a struct is checked with
/// this first. Anything else that is not a valid object the parse itself refuses.
pub fn starts_an_object(text: &[u8]) -> bool {
    text.iter().find(|b| !b" \t\n\r".contains(b)) == Some(&b'{')
}

/// For an optional string field (`#[serde(default, deserialize_with = "...")]`): absent is
/// `None`, a string is `Some`, and an explicit `null` is refused. A plain `Option<String>`
/// reads `null` as absent, which no route's contract admits: its schema types the field as
/// a string, and bad input must be a `400` that changes nothing.
///
/// # Errors
/// The value is not a string (`null` included).
pub fn present_string<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <String as serde::Deserialize>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::{present_string, starts_an_object};

    #[test]
    fn only_text_that_opens_an_object_is_taken_for_one() {
        for object in [&b"{}"[..], b" \r\n\t{\"a\":1}", b"{"] {
            assert!(starts_an_object(object), "{object:?}");
        }
        for other in [
            &b""[..],
            b"   ",
            b"[1,2]",
            b" [{}]",
            b"null",
            b"\"{\"",
            b"\x0c{}",
        ] {
            assert!(!starts_an_object(other), "{other:?}");
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default, deserialize_with = "present_string")]
        name: Option<String>,
    }

    #[test]
    fn an_optional_string_is_absent_or_a_string_never_null() {
        let read = |text: &str| serde_json::from_str::<Body>(text).map(|b| b.name);
        assert_eq!(read("{}").expect("absent"), None);
        assert_eq!(read(r#"{"name":"a"}"#).expect("a string"), Some("a".into()));
        for bad in [r#"{"name":null}"#, r#"{"name":1}"#, r#"{"name":["a"]}"#] {
            let err = read(bad).expect_err(bad);
            assert!(
                err.to_string().contains("expected a string"),
                "{bad}: {err}"
            );
        }
    }
}
