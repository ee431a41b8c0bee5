//! Template functions: the Sprig v2 subset Skaffold users write, the five `--output` helpers,
//! and a Go-compatible `json`. Argument checks follow Go's: a missing map key passed where
//! a string is expected fails with "invalid value; expected string", as in text/template.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use gotmpl::{FuncMap, Value};
use sha2::Digest as _;

use super::gotime::format_go_time;

type Res = gotmpl::Result<Value>;

/// Caps the output of `repeat`, so a one-line template cannot allocate gigabytes.
const MAX_REPEAT_BYTES: usize = 1 << 20;

fn fail(message: impl Into<String>) -> gotmpl::TemplateError {
    gotmpl::TemplateError::Exec(message.into())
}

fn string(s: impl Into<Arc<str>>) -> Value {
    Value::String(s.into())
}

fn arity(name: &str, args: &[Value], want: usize) -> gotmpl::Result<()> {
    if args.len() == want {
        Ok(())
    } else {
        Err(fail(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        )))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::Bool(_) => "bool",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
        Value::Nil => "nil",
    }
}

fn arg_str(args: &[Value], i: usize) -> gotmpl::Result<&str> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Nil) => Err(fail("invalid value; expected string")),
        Some(other) => Err(fail(format!(
            "wrong type for value; expected string; got {}",
            type_name(other)
        ))),
    }
}

fn arg_int(args: &[Value], i: usize) -> gotmpl::Result<i64> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Uint(n)) => i64::try_from(*n).map_err(|_| fail("integer overflow")),
        None | Some(Value::Nil) => Err(fail("invalid value; expected int")),
        Some(other) => Err(fail(format!(
            "wrong type for value; expected int; got {}",
            type_name(other)
        ))),
    }
}

/// Go's `fmt.Sprint(v)`, which Sprig's `strval` falls back to.
fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Nil => "<nil>".to_string(),
        other => other.to_string(),
    }
}

/// Sprig's `empty`: nil, zero numbers, false, and empty strings, lists and maps.
fn is_empty(v: &Value) -> bool {
    !v.is_truthy() && !matches!(v, Value::Function(_))
}

/// Go's `strconv.Quote`, close enough for configuration values: control characters escaped,
/// printable Unicode kept.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `strings.Title`: upper-case the first letter of every word.
fn title(s: &str) -> String {
    let separator = |c: char| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            c.is_whitespace()
        }
    };
    let mut prev = ' ';
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if separator(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn go_split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    if sep.is_empty() {
        s.char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect()
    } else {
        s.split(sep).collect()
    }
}

/// Sprig's `strslice`: a list gives its non-nil elements, any other value one element.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::List(items) => items
            .iter()
            .filter(|i| !matches!(i, Value::Nil))
            .map(strval)
            .collect(),
        Value::Nil => Vec::new(),
        other => vec![strval(other)],
    }
}

/// Byte-indexed slicing as Go does it, failing (as Go's runtime would) out of range or
/// inside a UTF-8 sequence.
fn byte_slice(s: &str, start: i64, end: i64) -> gotmpl::Result<&str> {
    let bad = || fail(format!("slice bounds out of range [{start}:{end}]"));
    let start = usize::try_from(start).map_err(|_| bad())?;
    let end = usize::try_from(end).map_err(|_| bad())?;
    s.get(start..end).ok_or_else(bad)
}

fn unix_seconds(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::Uint(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        _ => now(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Write `v` as Go's `json.Encoder` with `SetEscapeHTML(false)` would: map keys sorted,
/// U+2028/U+2029 escaped. With `go_fields`, maps holding Skaffold's build output use the
/// struct's JSON names and order (`imageName`, `tag`, `runtimeType` omitted when empty).
pub(super) fn to_json(v: &Value, go_fields: bool, out: &mut String) -> gotmpl::Result<()> {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) => {
            let n = serde_json::Number::from_f64(*f)
                .ok_or_else(|| fail(format!("json: unsupported value: {f}")))?;
            let _ = write!(out, "{n}");
        }
        Value::String(s) => {
            let quoted = serde_json::to_string(s.as_ref()).map_err(|e| fail(e.to_string()))?;
            out.push_str(
                &quoted
                    .replace('\u{2028}', "\\u2028")
                    .replace('\u{2029}', "\\u2029"),
            );
        }
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                to_json(item, go_fields, out)?;
            }
            out.push(']');
        }
        Value::Map(map) => {
            const FIELDS: [(&str, &str); 4] = [
                ("Builds", "builds"),
                ("ImageName", "imageName"),
                ("Tag", "tag"),
                ("RuntimeType", "runtimeType"),
            ];
            let mut entries: Vec<(&str, &Value)> = Vec::new();
            if go_fields {
                for (field, key) in FIELDS {
                    match map.get(field) {
                        Some(Value::String(s)) if field == "RuntimeType" && s.is_empty() => {}
                        Some(value) => entries.push((key, value)),
                        None => {}
                    }
                }
            }
            for (k, value) in map.iter() {
                if !(go_fields && FIELDS.iter().any(|(f, _)| *f == k.as_ref())) {
                    entries.push((k, value));
                }
            }
            out.push('{');
            for (i, (k, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                to_json(&string(k), false, out)?;
                out.push(':');
                to_json(value, go_fields, out)?;
            }
            out.push('}');
        }
        Value::Function(_) => return Err(fail("json: unsupported type: func")),
    }
    Ok(())
}

fn json_func(go_fields: bool) -> impl Fn(&[Value]) -> Res + Send + Sync + 'static {
    move |args| {
        arity("json", args, 1)?;
        let mut out = String::new();
        to_json(&args[0], go_fields, &mut out)?;
        Ok(string(out))
    }
}

fn insert(m: &mut FuncMap, name: &str, f: impl Fn(&[Value]) -> Res + Send + Sync + 'static) {
    m.insert(name.to_string(), Arc::new(f));
}

fn str1(m: &mut FuncMap, name: &'static str, f: fn(&str) -> String) {
    insert(m, name, move |args| {
        arity(name, args, 1)?;
        Ok(string(f(arg_str(args, 0)?)))
    });
}

fn pred2(m: &mut FuncMap, name: &'static str, f: fn(&str, &str) -> bool) {
    insert(m, name, move |args| {
        arity(name, args, 2)?;
        Ok(Value::Bool(f(arg_str(args, 1)?, arg_str(args, 0)?)))
    });
}

/// Skaffold's function map: Sprig's commonly used functions, `json`, and a `cmd` that
/// refuses to run (kobuild does not execute commands from configuration files).
pub(super) fn sprig(env: Arc<BTreeMap<String, String>>) -> FuncMap {
    let mut m = FuncMap::new();
    insert(&mut m, "default", |args| {
        if args.is_empty() {
            return Err(fail(
                "wrong number of args for default: want at least 1 got 0",
            ));
        }
        match args.get(1) {
            Some(given) if !is_empty(given) => Ok(given.clone()),
            _ => Ok(args[0].clone()),
        }
    });
    insert(&mut m, "empty", |args| {
        arity("empty", args, 1)?;
        Ok(Value::Bool(is_empty(&args[0])))
    });
    insert(&mut m, "coalesce", |args| {
        Ok(args
            .iter()
            .find(|v| !is_empty(v))
            .cloned()
            .unwrap_or(Value::Nil))
    });
    insert(&mut m, "ternary", |args| {
        arity("ternary", args, 3)?;
        match &args[2] {
            Value::Bool(b) => Ok(if *b { args[0].clone() } else { args[1].clone() }),
            other => Err(fail(format!(
                "wrong type for value; expected bool; got {}",
                type_name(other)
            ))),
        }
    });
    str1(&mut m, "upper", str::to_uppercase);
    str1(&mut m, "lower", str::to_lowercase);
    str1(&mut m, "title", title);
    str1(&mut m, "trim", |s| s.trim().to_string());
    str1(&mut m, "nospace", |s| {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    });
    str1(&mut m, "b64enc", |s| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    str1(&mut m, "b64dec", |s| {
        // Sprig returns the decoding error's text instead of failing.
        match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => e.to_string(),
        }
    });
    str1(&mut m, "sha256sum", |s| {
        sha2::Sha256::digest(s.as_bytes())
            .iter()
            .fold(String::new(), |mut out, b| {
                let _ = write!(out, "{b:02x}");
                out
            })
    });
    insert(&mut m, "trimAll", |args| {
        arity("trimAll", args, 2)?;
        let cutset = arg_str(args, 0)?;
        Ok(string(
            arg_str(args, 1)?.trim_matches(|c| cutset.contains(c)),
        ))
    });
    insert(&mut m, "trimPrefix", |args| {
        arity("trimPrefix", args, 2)?;
        let (prefix, s) = (arg_str(args, 0)?, arg_str(args, 1)?);
        Ok(string(s.strip_prefix(prefix).unwrap_or(s)))
    });
    insert(&mut m, "trimSuffix", |args| {
        arity("trimSuffix", args, 2)?;
        let (suffix, s) = (arg_str(args, 0)?, arg_str(args, 1)?);
        Ok(string(s.strip_suffix(suffix).unwrap_or(s)))
    });
    insert(&mut m, "replace", |args| {
        arity("replace", args, 3)?;
        let (old, new, src) = (arg_str(args, 0)?, arg_str(args, 1)?, arg_str(args, 2)?);
        Ok(string(src.replace(old, new)))
    });
    insert(&mut m, "repeat", |args| {
        arity("repeat", args, 2)?;
        let (count, s) = (arg_int(args, 0)?, arg_str(args, 1)?);
        let count = usize::try_from(count).map_err(|_| fail("strings: negative Repeat count"))?;
        if count.saturating_mul(s.len()) > MAX_REPEAT_BYTES {
            return Err(fail("repeat: result too large"));
        }
        Ok(string(s.repeat(count)))
    });
    insert(&mut m, "substr", |args| {
        arity("substr", args, 3)?;
        let (start, end, s) = (arg_int(args, 0)?, arg_int(args, 1)?, arg_str(args, 2)?);
        let len = i64::try_from(s.len()).unwrap_or(i64::MAX);
        let (from, to) = if start < 0 {
            (0, end)
        } else if end < 0 || end > len {
            (start, len)
        } else {
            (start, end)
        };
        Ok(string(byte_slice(s, from, to)?))
    });
    insert(&mut m, "trunc", |args| {
        arity("trunc", args, 2)?;
        let (c, s) = (arg_int(args, 0)?, arg_str(args, 1)?);
        let len = i64::try_from(s.len()).unwrap_or(i64::MAX);
        let out = if c < 0 && len + c > 0 {
            byte_slice(s, len + c, len)?
        } else if c >= 0 && len > c {
            byte_slice(s, 0, c)?
        } else {
            s
        };
        Ok(string(out))
    });
    insert(&mut m, "cat", |args| {
        let parts: Vec<String> = args
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(strval)
            .collect();
        Ok(string(parts.join(" ")))
    });
    insert(&mut m, "quote", |args| {
        let parts: Vec<String> = args
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| go_quote(&strval(v)))
            .collect();
        Ok(string(parts.join(" ")))
    });
    insert(&mut m, "squote", |args| {
        let parts: Vec<String> = args
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| format!("'{}'", strval(v)))
            .collect();
        Ok(string(parts.join(" ")))
    });
    pred2(&mut m, "contains", |s, sub| s.contains(sub));
    pred2(&mut m, "hasPrefix", |s, prefix| s.starts_with(prefix));
    pred2(&mut m, "hasSuffix", |s, suffix| s.ends_with(suffix));
    insert(&mut m, "join", |args| {
        arity("join", args, 2)?;
        Ok(string(strslice(&args[1]).join(arg_str(args, 0)?)))
    });
    insert(&mut m, "splitList", |args| {
        arity("splitList", args, 2)?;
        let parts = go_split(arg_str(args, 1)?, arg_str(args, 0)?);
        Ok(Value::List(parts.into_iter().map(string).collect()))
    });
    insert(&mut m, "split", |args| {
        arity("split", args, 2)?;
        let parts = go_split(arg_str(args, 1)?, arg_str(args, 0)?);
        let map = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| (Arc::from(format!("_{i}")), string(p)))
            .collect();
        Ok(Value::Map(Arc::new(map)))
    });
    insert(&mut m, "list", |args| {
        Ok(Value::List(args.iter().cloned().collect()))
    });
    insert(&mut m, "toString", |args| {
        arity("toString", args, 1)?;
        Ok(string(strval(&args[0])))
    });
    insert(&mut m, "env", move |args| {
        arity("env", args, 1)?;
        let name = arg_str(args, 0)?;
        Ok(string(env.get(name).map_or("", String::as_str)))
    });
    // Sprig's `now` is a time.Time; here it is Unix seconds, which `date` and `unixEpoch` take.
    insert(&mut m, "now", |args| {
        arity("now", args, 0)?;
        Ok(Value::Int(now()))
    });
    insert(&mut m, "date", |args| {
        arity("date", args, 2)?;
        Ok(string(format_go_time(
            unix_seconds(&args[1]),
            0,
            arg_str(args, 0)?,
        )))
    });
    insert(&mut m, "unixEpoch", |args| {
        arity("unixEpoch", args, 1)?;
        Ok(string(unix_seconds(&args[0]).to_string()))
    });
    insert(&mut m, "json", json_func(false));
    insert(&mut m, "toJson", json_func(false));
    insert(&mut m, "cmd", |_| {
        Err(fail(
            "cmd is not supported by kobuild: run the command before the build and pass its output in an environment variable",
        ))
    });
    m
}

/// Skaffold's `--output` function map (`cmd/skaffold/app/flags/template.go`).
pub(super) fn output() -> FuncMap {
    let mut m = FuncMap::new();
    insert(&mut m, "json", json_func(true));
    insert(&mut m, "join", |args| {
        arity("join", args, 2)?;
        let Value::List(items) = &args[0] else {
            return Err(fail(format!(
                "wrong type for value; expected []string; got {}",
                type_name(&args[0])
            )));
        };
        let parts = (0..items.len())
            .map(|i| arg_str(items, i).map(str::to_string))
            .collect::<gotmpl::Result<Vec<_>>>()?;
        Ok(string(parts.join(arg_str(args, 1)?)))
    });
    str1(&mut m, "title", title);
    str1(&mut m, "lower", str::to_lowercase);
    str1(&mut m, "upper", str::to_uppercase);
    m
}

/// Go's `index` returns the element type's zero value for a missing map key; every map
/// kobuild hands to a template holds strings, so that is "" rather than gotmpl's nil.
pub(super) fn index_with_zero_values(m: &mut FuncMap) {
    insert(m, "index", |args| {
        if args.len() < 2 {
            return Err(fail(format!(
                "wrong number of args for index: want at least 2 got {}",
                args.len()
            )));
        }
        let mut v = args[0].clone();
        for key in &args[1..] {
            v = match (&v, key) {
                (Value::Map(map), Value::String(k)) if !map.contains_key(k.as_ref()) => string(""),
                _ => v.index(key)?,
            };
        }
        Ok(v)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_helpers() {
        assert_eq!(title("hello wORLD-x_y ünï"), "Hello WORLD-X_y Ünï");
        assert_eq!(go_quote("a\"b\\\n\u{1}é"), "\"a\\\"b\\\\\\n\\x01é\"");
        assert_eq!(go_split("abc", ""), ["a", "b", "c"]);
        assert_eq!(go_split("a,b,", ","), ["a", "b", ""]);
        assert!(byte_slice("é", 0, 1).is_err());
        assert!(byte_slice("ab", 1, 5).is_err());
    }

    #[test]
    fn json_matches_go_encoder() {
        let mut out = String::new();
        let map = Value::Map(Arc::new(
            [
                (Arc::from("b"), string("<&>\u{2028}")),
                (
                    Arc::from("a"),
                    Value::List(Arc::from([Value::Int(1), Value::Nil])),
                ),
            ]
            .into_iter()
            .collect(),
        ));
        to_json(&map, false, &mut out).unwrap();
        assert_eq!(out, r#"{"a":[1,null],"b":"<&>\u2028"}"#);
        assert!(to_json(&Value::Float(f64::NAN), false, &mut String::new()).is_err());
    }
}
