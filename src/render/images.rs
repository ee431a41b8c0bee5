//! The built images render puts into manifests: Skaffold's artifacts.json and `--images`, keyed
//! the way Skaffold matches manifest values against build results.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Image name (as Skaffold's key: `ko://` stripped, no tag, lowercased) → reference to write.
#[derive(Clone, Debug, Default)]
pub struct ImageMap {
    refs: HashMap<String, String>,
}

/// What render does with one string value of a manifest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action<'m> {
    Keep,
    Replace(&'m str),
    /// A `ko://` placeholder that no built image matches.
    Unresolved,
}

impl ImageMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the image built for `name` (`ko://path`, or a plain image name).
    pub fn insert(&mut self, name: &str, reference: &str) -> Result<(), String> {
        check_text(name).map_err(|why| format!("image name {name:?} {why}"))?;
        check_text(reference).map_err(|why| format!("reference {reference:?} for {name} {why}"))?;
        self.refs.insert(base_name(name).0, reference.to_string());
        Ok(())
    }

    /// One `--images` value: `NAME=REF`, or a tagged reference that names itself, as Skaffold's
    /// flag takes them.
    pub fn insert_flag(&mut self, flag: &str) -> Result<(), String> {
        match flag.split_once('=') {
            Some((name, reference)) => self.insert(name, reference),
            None => self.insert(flag, flag),
        }
    }

    /// Skaffold's artifacts.json, read as Go's `json.Unmarshal` reads it into Skaffold's
    /// `BuildOutput`: unknown fields ignored, field names matched case-insensitively, `null`
    /// for no builds. Entries replace earlier ones with the same name.
    pub fn insert_artifacts_json(&mut self, bytes: &[u8]) -> Result<(), String> {
        // Skaffold refuses an empty file before unmarshalling it.
        if bytes.is_empty() {
            return Err("empty file, expected Skaffold's build output".into());
        }
        let output: Option<BuildOutput> =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let builds = output.map(|o| o.builds).unwrap_or_default();
        for (i, build) in builds.into_iter().enumerate() {
            let build = build.unwrap_or_default();
            // Skaffold's own check on tags, with its wording.
            if build.tag.is_empty() {
                return Err(format!(
                    "builds[{i}]: no tag provided for image [{}]",
                    build.image_name
                ));
            }
            self.insert(&build.image_name, &build.tag)
                .map_err(|e| format!("builds[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// Skaffold's rule for values of `image` keys (the name without tag, lowercased, after
    /// stripping `ko://`, looked up; values with a digest left alone), plus ko's rule that every
    /// `ko://` string is a placeholder, which ko trims.
    pub(crate) fn action(&self, value: &str, image_value: bool) -> Action<'_> {
        let placeholder = value.starts_with("ko://");
        if !placeholder && !image_value {
            return Action::Keep;
        }
        let candidate = if placeholder { value.trim() } else { value };
        let (key, digest) = base_name(candidate);
        if digest {
            return Action::Keep;
        }
        match self.refs.get(&key) {
            Some(reference) => Action::Replace(reference),
            None if placeholder => Action::Unresolved,
            None => Action::Keep,
        }
    }
}

/// Skaffold's matching key for a name or reference, and whether it carries a digest.
pub(crate) fn base_name(value: &str) -> (String, bool) {
    let name = value.strip_prefix("ko://").unwrap_or(value);
    let (name, digest) = match name.split_once('@') {
        Some((name, _)) => (name, true),
        None => (name, false),
    };
    // A colon after the last slash starts the tag; before it, it is a registry port.
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    (name.to_lowercase(), digest)
}

/// Names and references end up inside YAML scalars: whitespace and control characters would
/// change the document's structure, and no image reference has them.
fn check_text(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("is empty");
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\u{feff}')
    {
        return Err("contains whitespace or control characters");
    }
    Ok(())
}

/// Skaffold's `flags.BuildOutput`.
struct BuildOutput {
    builds: Vec<Option<Build>>,
}

/// Skaffold's `graph.Artifact`; a missing or null field stays empty, as in Go.
#[derive(Default)]
struct Build {
    image_name: String,
    tag: String,
}

/// Go matches JSON keys to field names exactly or under Unicode simple case folding; for these
/// ASCII field names that folding adds only ſ (s) and the Kelvin sign (k) to ASCII case.
fn field_is(key: &str, field: &str) -> bool {
    let fold = |c: char| match c {
        'ſ' => 'S',
        '\u{212a}' => 'K',
        c => c.to_ascii_uppercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

impl<'de> Deserialize<'de> for BuildOutput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BuildOutput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("Skaffold's build output, an object with \"builds\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BuildOutput, A::Error> {
                let mut builds = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if field_is(&key, "builds") {
                        // Go sets a slice to nil for null, even after an earlier value.
                        builds = map.next_value::<Option<_>>()?.unwrap_or_default();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(BuildOutput { builds })
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Build {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Build;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a build, an object with \"imageName\" and \"tag\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Build, A::Error> {
                let mut build = Build::default();
                while let Some(key) = map.next_key::<String>()? {
                    // Go leaves a string field unchanged for null.
                    let field = if field_is(&key, "imageName") {
                        &mut build.image_name
                    } else if field_is(&key, "tag") {
                        &mut build.tag
                    } else if field_is(&key, "runtimeType") {
                        // A typed field in Go: a non-string fails there too.
                        map.next_value::<Option<String>>()?;
                        continue;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    if let Some(value) = map.next_value::<Option<String>>()? {
                        *field = value;
                    }
                }
                Ok(build)
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:3f0c000000000000000000000000000000000000000000000000000000000000";

    fn map(json: &str) -> Result<ImageMap, String> {
        let mut m = ImageMap::new();
        m.insert_artifacts_json(json.as_bytes())?;
        Ok(m)
    }

    #[test]
    fn base_name_strips_scheme_tag_and_case() {
        assert_eq!(
            base_name("ko://github.com/Org/App"),
            ("github.com/org/app".into(), false)
        );
        assert_eq!(
            base_name("example.com/app:Old"),
            ("example.com/app".into(), false)
        );
        assert_eq!(
            base_name("localhost:5000/app"),
            ("localhost:5000/app".into(), false)
        );
        assert_eq!(
            base_name("localhost:5000/app:v1"),
            ("localhost:5000/app".into(), false)
        );
        assert_eq!(base_name(&format!("app:v1@{DIGEST}")), ("app".into(), true));
        assert_eq!(base_name("ko://app@sha256:00"), ("app".into(), true));
    }

    #[test]
    fn skaffold_matching_rule() {
        let m =
            map(r#"{"builds":[{"imageName":"ko://github.com/org/app","tag":"r/app:t"}]}"#).unwrap();
        let hit = Action::Replace("r/app:t");
        for value in [
            "ko://github.com/Org/App",
            "ko://github.com/org/app",
            "github.com/org/app",
            "github.com/org/app:latest",
            "github.com/ORG/app:v1",
        ] {
            assert_eq!(m.action(value, true), hit, "{value}");
        }
        // ko's rule: placeholders anywhere, trimmed.
        assert_eq!(m.action("ko://github.com/org/app ", false), hit);
        // Skaffold's rule only under `image` keys, values as written.
        assert_eq!(m.action("github.com/org/app", false), Action::Keep);
        assert_eq!(m.action(" github.com/org/app", true), Action::Keep);
        // Registry-qualified names do not match; digests are left alone.
        assert_eq!(m.action("gcr.io/p/github.com/org/app", true), Action::Keep);
        assert_eq!(
            m.action(&format!("github.com/org/app@{DIGEST}"), true),
            Action::Keep
        );
        assert_eq!(
            m.action(&format!("ko://github.com/org/app@{DIGEST}"), false),
            Action::Keep
        );
        assert_eq!(
            m.action("ko://github.com/org/other", true),
            Action::Unresolved
        );
        assert_eq!(
            m.action("ko://github.com/org/app x", true),
            Action::Unresolved
        );
        assert_eq!(m.action("other", true), Action::Keep);
    }

    #[test]
    fn reads_skaffold_output() {
        let tag = format!("gcr.io/my-proj/github.com/acme/svc/cmd/api:v1.2.0@{DIGEST}");
        let json = format!(
            r#"{{"builds":[{{"imageName":"ko://github.com/acme/svc/cmd/api","tag":"{tag}"}},{{"imageName":"web","tag":"gcr.io/my-proj/web:v1.2.0","runtimeType":"go"}}]}}"#
        );
        let m = map(&json).unwrap();
        assert_eq!(
            m.action("ko://github.com/acme/svc/cmd/api", true),
            Action::Replace(&tag)
        );
        assert_eq!(
            m.action("web:old", true),
            Action::Replace("gcr.io/my-proj/web:v1.2.0")
        );
    }

    #[test]
    fn reads_like_go() {
        // Case-insensitive keys (with Go's folding), unknown fields, nulls, last key wins.
        let m = map(
            r#"{"BUILDſ":[{"ImageNAME":"a","TAG":"r/a:1","extra":[1,{}]},null],"other":1,"Builds":null}"#,
        );
        assert_eq!(m.unwrap().action("a", true), Action::Keep);
        let m = map(r#"{"builds":[{"imagename":"a","tag":"r/a:1","tag":null,"\u212aind":1}]}"#)
            .unwrap();
        assert_eq!(m.action("a", true), Action::Replace("r/a:1"));
        for empty in ["null", r#"{"builds":null}"#, "{}", r#"{"builds":[]}"#] {
            assert!(map(empty).unwrap().refs.is_empty(), "{empty}");
        }
    }

    #[test]
    fn rejects_malformed_files() {
        for (json, why) in [
            ("", "empty file"),
            ("  ", "EOF while parsing"),
            ("[]", "expected Skaffold's build output"),
            (r#"{"builds":{}}"#, "invalid type: map, expected a sequence"),
            (
                r#"{"builds":[{"imageName":"a","tag":1}]}"#,
                "invalid type: integer",
            ),
            (
                r#"{"builds":[{"imageName":"a","tag":"t","runtimeType":2}]}"#,
                "invalid type",
            ),
            (
                r#"{"builds":[{"imageName":"a"}]}"#,
                "builds[0]: no tag provided for image [a]",
            ),
            (r#"{"builds":[null]}"#, "builds[0]: no tag provided"),
            (
                r#"{"builds":[{"tag":"r/a"}]}"#,
                "builds[0]: image name \"\" is empty",
            ),
            (
                r#"{"builds":[{"imageName":"a","tag":"r/a\n"}]}"#,
                "whitespace",
            ),
            (r#"{"builds":[]} x"#, "trailing characters"),
        ] {
            let err = map(json).err().unwrap_or_default();
            assert!(err.contains(why), "{json}: {err}");
        }
    }

    #[test]
    fn flags() {
        let mut m = ImageMap::new();
        m.insert_flag("ko://example.com/x=reg/x:1").unwrap();
        m.insert_flag("reg/y:2").unwrap();
        assert_eq!(
            m.action("ko://example.com/x", false),
            Action::Replace("reg/x:1")
        );
        assert_eq!(m.action("reg/y", true), Action::Replace("reg/y:2"));
        assert!(m.insert_flag("a=").is_err());
        assert!(m.insert_flag("=b").is_err());
        // artifacts.json entries loaded later win.
        m.insert_artifacts_json(br#"{"builds":[{"imageName":"reg/y","tag":"reg/y:3"}]}"#)
            .unwrap();
        assert_eq!(m.action("reg/y", true), Action::Replace("reg/y:3"));
    }
}
