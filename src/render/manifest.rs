//! Image references in one YAML (or JSON) text, found with their source spans and replaced by
//! splicing new scalar text into the original string: nothing is re-serialized, so every byte
//! outside the replaced scalars stays as it was.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use granit_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, Tag, options};

use super::RenderError;
use super::images::{Action, ImageMap, base_name};

/// A string node render may replace: a `ko://` scalar, or a string under an `image` key.
struct Site<'s> {
    value: Cow<'s, str>,
    /// `None` for an alias (`*name`), whose token is replaced as a whole.
    style: Option<ScalarStyle>,
    range: Range<usize>,
    start: Marker,
    image_value: bool,
}

/// An anchored scalar, for aliases that use it as an `image` key or value.
struct Anchored<'s> {
    value: Cow<'s, str>,
    string: bool,
    image_value: bool,
}

enum Frame {
    Sequence,
    Mapping {
        next_is_key: bool,
        key_is_image: bool,
    },
}

/// Where a node sits in its parent.
enum Position {
    Key,
    Value { image: bool },
    Other,
}

fn position(stack: &mut [Frame]) -> Position {
    match stack.last_mut() {
        Some(Frame::Mapping {
            next_is_key,
            key_is_image,
        }) => {
            let key = *next_is_key;
            *next_is_key = !key;
            if key {
                Position::Key
            } else {
                Position::Value {
                    image: *key_is_image,
                }
            }
        }
        _ => Position::Other,
    }
}

fn set_key_is_image(stack: &mut [Frame], image: bool) {
    if let Some(Frame::Mapping { key_is_image, .. }) = stack.last_mut() {
        *key_is_image = image;
    }
}

/// Whether a scalar's value is a string, as Go's YAML decoders resolve it.
fn is_string(value: &str, style: ScalarStyle, tag: Option<&Tag>) -> bool {
    match tag {
        // `!` is the non-specific tag that makes any scalar a string.
        Some(tag) => tag.is_yaml_core_schema_tag("str") || tag.parts() == ("", "!"),
        None => style != ScalarStyle::Plain || !may_be_non_string(value),
    }
}

/// Plain text that YAML 1.1 or 1.2 may read as null, a boolean or a number. Deliberately broad:
/// it only keeps such values from matching, and makes replacements quoted.
fn may_be_non_string(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "" | "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return true;
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') && !text.contains('/')
}

fn yaml_error(file: &str, e: &ScanError) -> RenderError {
    RenderError::Yaml {
        file: file.to_string(),
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info(),
    }
}

fn byte_range(file: &str, span: &Span) -> Result<Range<usize>, RenderError> {
    span.byte_range().ok_or_else(|| RenderError::Yaml {
        file: file.to_string(),
        line: span.start.line(),
        col: span.start.col() + 1,
        message: "the YAML parser gave no source position".into(),
    })
}

/// Every node render may replace, in source order.
fn sites<'s>(file: &str, text: &'s str) -> Result<Vec<Site<'s>>, RenderError> {
    let mut sites = Vec::new();
    let mut stack = Vec::new();
    let mut anchors: HashMap<usize, Anchored<'s>> = HashMap::new();
    // Comments are not needed; not collecting them also avoids the parser's comment buffer limit.
    let parser = Parser::new_from_str_with_options(text, options! { emit_comments: false });
    for next in parser {
        let (event, span) = next.map_err(|e| yaml_error(file, &e))?;
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                let string = is_string(&value, style, tag.as_deref());
                let image_value = match position(&mut stack) {
                    Position::Key => {
                        set_key_is_image(&mut stack, string && value == "image");
                        false
                    }
                    Position::Value { image } => image,
                    Position::Other => false,
                };
                if anchor != 0 {
                    anchors.insert(
                        anchor,
                        Anchored {
                            value: value.clone(),
                            string,
                            image_value,
                        },
                    );
                }
                if string && (image_value || value.starts_with("ko://")) {
                    sites.push(Site {
                        value,
                        style: Some(style),
                        range: byte_range(file, &span)?,
                        start: span.start,
                        image_value,
                    });
                }
            }
            Event::Alias(anchor) => {
                let target = anchors.get(&anchor).filter(|t| t.string);
                match position(&mut stack) {
                    Position::Key => {
                        set_key_is_image(&mut stack, target.is_some_and(|t| t.value == "image"))
                    }
                    // The anchored scalar itself was already handled when it is a placeholder
                    // or an image value; otherwise only this use of it is an image.
                    Position::Value { image: true } => {
                        if let Some(t) =
                            target.filter(|t| !t.image_value && !t.value.starts_with("ko://"))
                        {
                            sites.push(Site {
                                value: t.value.clone(),
                                style: None,
                                range: byte_range(file, &span)?,
                                start: span.start,
                                image_value: true,
                            });
                        }
                    }
                    _ => {}
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if let Position::Key = position(&mut stack) {
                    set_key_is_image(&mut stack, false);
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Sequence
                } else {
                    Frame::Mapping {
                        next_is_key: true,
                        key_is_image: false,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    Ok(sites)
}

/// Replaces the `ko://` placeholders and built images in `text` (one file, any number of
/// documents) with references from `images`, splicing them into the original text.
///
/// `file` names the text in errors. A placeholder without a built image is an error unless
/// `allow_unresolved`, when it stays as written (as Skaffold leaves it).
pub fn render_text(
    file: &str,
    text: &str,
    images: &ImageMap,
    allow_unresolved: bool,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut copied = 0;
    for site in sites(file, text)? {
        let reference = match images.action(&site.value, site.image_value) {
            Action::Keep => continue,
            Action::Unresolved if allow_unresolved => continue,
            Action::Unresolved => {
                return Err(RenderError::Unresolved {
                    file: file.to_string(),
                    line: site.start.line(),
                    col: site.start.col() + 1,
                    reference: site.value.trim().to_string(),
                });
            }
            Action::Replace(reference) => reference,
        };
        let (Some(before), Some(raw)) = (
            text.get(copied..site.range.start),
            text.get(site.range.clone()),
        ) else {
            return Err(not_spliceable(file, &site));
        };
        out.push_str(before);
        write_scalar(&mut out, &site, raw, reference).ok_or_else(|| not_spliceable(file, &site))?;
        copied = site.range.end;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Ok(out)
}

fn not_spliceable(file: &str, site: &Site) -> RenderError {
    RenderError::Yaml {
        file: file.to_string(),
        line: site.start.line(),
        col: site.start.col() + 1,
        message: format!(
            "cannot replace {} in place; write it on one line",
            site.value.trim()
        ),
    }
}

/// The new scalar for `site`, in the style it was written in. `None` when a block scalar's
/// text does not hold the reference verbatim.
fn write_scalar(out: &mut String, site: &Site, raw: &str, reference: &str) -> Option<()> {
    match site.style {
        Some(ScalarStyle::SingleQuoted) => {
            out.push('\'');
            out.push_str(&reference.replace('\'', "''"));
            out.push('\'');
        }
        Some(ScalarStyle::DoubleQuoted) => push_double_quoted(out, reference),
        // The span starts at the content, after the header and indentation: replace the
        // reference inside it, keeping the header, indentation and line breaks.
        Some(ScalarStyle::Literal | ScalarStyle::Folded) => {
            let old = site.value.trim();
            let at = raw.find(old)?;
            out.push_str(raw.get(..at)?);
            out.push_str(reference);
            out.push_str(raw.get(at + old.len()..)?);
        }
        // Plain scalars and alias tokens: plain when the reference reads back as the same
        // string, else double-quoted.
        _ if plain_safe(reference) => out.push_str(reference),
        _ => push_double_quoted(out, reference),
    }
    Some(())
}

/// Valid in YAML and JSON alike; references have no control characters (`ImageMap` checks).
fn push_double_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Whether `text` (without whitespace, as references are) reads back as the same string when
/// written as a plain scalar, in block and flow context alike.
fn plain_safe(text: &str) -> bool {
    !text.starts_with([
        '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@',
        '`',
    ]) && !text.contains([',', '[', ']', '{', '}'])
        && !text.ends_with(':')
        && !may_be_non_string(text)
}

/// The distinct `ko://` references in `text`, anywhere in any document, in order of first
/// appearance and trimmed as ko trims them. References that already carry a digest are left
/// out: render leaves them alone, so there is nothing to build for them.
pub fn find_ko_references(text: &str) -> Result<Vec<String>, RenderError> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for site in sites("<input>", text)? {
        let reference = site.value.trim();
        if site.value.starts_with("ko://")
            && !base_name(reference).1
            && seen.insert(reference.to_string())
        {
            found.push(reference.to_string());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "reg.example/app:v1@sha256:0123";

    fn images() -> ImageMap {
        let mut m = ImageMap::new();
        m.insert("ko://example.com/app", APP).unwrap();
        m.insert("example.com/web", "reg.example/web:v2").unwrap();
        m
    }

    fn render(text: &str) -> String {
        render_text("t.yaml", text, &images(), false).unwrap()
    }

    fn error(text: &str) -> String {
        render_text("t.yaml", text, &images(), false)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn keeps_quoting_style() {
        assert_eq!(
            render("image: ko://example.com/app\n"),
            format!("image: {APP}\n")
        );
        assert_eq!(
            render("image: \"ko://example.com/app\"  # c\n"),
            format!("image: \"{APP}\"  # c\n")
        );
        assert_eq!(
            render("image: 'ko://example.com/app'"),
            format!("image: '{APP}'")
        );
        assert_eq!(
            render("{\"image\": \"example.com/web:old\"}"),
            "{\"image\": \"reg.example/web:v2\"}"
        );
        assert_eq!(
            render("- {name: a, image: ko://example.com/app}\r\n"),
            format!("- {{name: a, image: {APP}}}\r\n")
        );
    }

    #[test]
    fn escapes_only_what_needs_it() {
        let mut m = ImageMap::new();
        m.insert("ko://a", "r/it's:\"v\"\\").unwrap();
        let r = |t: &str| render_text("t", t, &m, false).unwrap();
        assert_eq!(r("x: 'ko://a'"), "x: 'r/it''s:\"v\"\\'");
        assert_eq!(r("x: \"ko://a\""), "x: \"r/it's:\\\"v\\\"\\\\\"");
        // Plain text that would not read back as the same string gets double quotes.
        m.insert("ko://b", "[x]").unwrap();
        m.insert("ko://c", "1.5").unwrap();
        m.insert("ko://d", "r/d:").unwrap();
        let r = |t: &str| render_text("t", t, &m, false).unwrap();
        assert_eq!(
            r("[ko://b, ko://c, ko://d]"),
            "[\"[x]\", \"1.5\", \"r/d:\"]"
        );
    }

    #[test]
    fn spans_with_properties_and_blocks() {
        assert_eq!(
            render("image: &a !!str ko://example.com/app\nx: *a\n"),
            format!("image: &a !!str {APP}\nx: *a\n")
        );
        assert_eq!(
            render("image: |\n  ko://example.com/app\n\nnext: 1\n"),
            format!("image: |\n  {APP}\n\nnext: 1\n")
        );
        assert_eq!(
            render("a: >- # ko://example.com/app\n   ko://example.com/app  \nb: 2"),
            format!("a: >- # ko://example.com/app\n   {APP}  \nb: 2")
        );
        // ko's rule looks at the value as written: a leading line break is not a placeholder.
        let text = "a: |\n\n  ko://example.com/app\n";
        assert_eq!(render(text), text);
        // Custom tags are not strings; multi-line block values cannot be references.
        assert_eq!(
            render("image: !foo ko://example.com/app"),
            "image: !foo ko://example.com/app"
        );
        assert!(error("a: |\n  ko://example.com/app\n  more\n").contains("has no built image"));
    }

    #[test]
    fn image_keys_at_any_depth_and_ko_strings_anywhere() {
        let text = "kind: Anything\nspec:\n  deep:\n  - image: example.com/web\n    other: example.com/web\n    args: [ko://example.com/app]\n  ko://example.com/app: key\n  image: [example.com/web]\n  image2: example.com/web\n";
        assert_eq!(
            render(text),
            format!(
                "kind: Anything\nspec:\n  deep:\n  - image: reg.example/web:v2\n    other: example.com/web\n    args: [{APP}]\n  {APP}: key\n  image: [example.com/web]\n  image2: example.com/web\n"
            )
        );
        // Non-strings under `image` are left alone.
        assert_eq!(
            render("image: 12\nimage: null\n"),
            "image: 12\nimage: null\n"
        );
    }

    #[test]
    fn aliases() {
        // An alias to a scalar used as an image is replaced by itself; the anchor stays.
        assert_eq!(
            render("x: &w example.com/web\nimage: *w\n"),
            "x: &w example.com/web\nimage: reg.example/web:v2\n"
        );
        // Anchors already replaced need nothing at the alias.
        assert_eq!(
            render(
                "a: &k ko://example.com/app\nimage: *k\nb: &i {image: example.com/web}\nc: *i\n"
            ),
            format!("a: &k {APP}\nimage: *k\nb: &i {{image: reg.example/web:v2}}\nc: *i\n")
        );
        // An alias as the key.
        assert_eq!(
            render("k: &n image\n*n : example.com/web"),
            "k: &n image\n*n : reg.example/web:v2"
        );
    }

    #[test]
    fn digests_are_left_alone() {
        let text = "image: example.com/web@sha256:00\nb: ko://example.com/zzz@sha256:00\n";
        assert_eq!(render(text), text);
    }

    #[test]
    fn error_lines() {
        assert_eq!(
            error("a: 1\nb:\n  - c: ko://example.com/x\n"),
            "t.yaml:3:8: ko://example.com/x has no built image: build it first or pass --images ko://example.com/x=REF"
        );
        assert_eq!(
            error("a: b\n  c: d\n"),
            "t.yaml:2:4: mapping values are not allowed in this context"
        );
        assert_eq!(error("a: [1, 2\n"), "t.yaml:1:4: unclosed bracket '['");
        assert_eq!(
            error("---\nx: 1\n---\nimage: *nope\n"),
            "t.yaml:4:8: while parsing node, found unknown anchor"
        );
        let kept = "a: ko://example.com/x\n";
        assert_eq!(render_text("t", kept, &images(), true).unwrap(), kept);
    }

    #[test]
    fn finds_ko_references() {
        let text = "a: ko://b\n---\nc: [\"ko://a \", ko://b, 'ko://c@sha256:0']\nko://d: !foo ko://e\nimage: *x\n";
        assert!(find_ko_references(text).is_err());
        let text =
            "a: &x ko://b\n---\nc: [\"ko://a \", ko://b, 'ko://c@sha256:0']\nko://d: !foo ko://e\n";
        assert_eq!(
            find_ko_references(text).unwrap(),
            ["ko://b", "ko://a", "ko://d"]
        );
    }

    #[test]
    fn five_thousand_documents() {
        let doc = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app # the app\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: ko://example.com/app\n        ports: [{containerPort: 8080}]\n      - name: web\n        image: \"example.com/web:old\"\n";
        let text = vec![doc; 5000].join("---\n");
        let started = std::time::Instant::now();
        let out = render(&text);
        let elapsed = started.elapsed();
        eprintln!(
            "rendered 5,000 documents ({} bytes) in {elapsed:?}",
            text.len()
        );
        assert_eq!(out.matches(APP).count(), 5000);
        assert_eq!(out.matches("reg.example/web:v2").count(), 5000);
        assert!(elapsed.as_secs() < 5, "{elapsed:?}");
    }
}
