//! JSON request bodies as the API's contracts admit them: objects only.

/// Whether `text` is a JSON object, by its first byte after JSON whitespace. Serde's
/// derived structs also accept a JSON array of their fields in order, which no route's
/// contract admits: every body (and signed payload) parsed into a struct is checked with
/// this first. Anything else that is not a valid object the parse itself refuses.
pub fn starts_an_object(text: &[u8]) -> bool {
    text.iter().find(|b| !b" \t\n\r".contains(b)) == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::starts_an_object;

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
}
