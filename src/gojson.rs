//! JSON bytes as Go's `encoding/json` writes them, so configs and manifests hash the way
//! ko's do: compact, struct field order, sorted map keys, and `<`, `>`, `&`, U+2028, U+2029
//! escaped as `\u003c` and so on.

use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serialize `value` the way Go's `json.Marshal` would for the equivalent struct.
pub fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = Serializer::with_formatter(&mut out, GoFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing plain data to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_like_go() {
        let v = serde_json::json!({"b": "a<b>&c\u{2028}", "a": "\n\"é"});
        assert_eq!(
            String::from_utf8(super::to_vec(&v)).unwrap(),
            r#"{"a":"\n\"é","b":"a\u003cb\u003e\u0026c\u2028"}"#
        );
    }
}
