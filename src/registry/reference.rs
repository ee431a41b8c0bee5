//! Image references and repositories, normalised the way Docker and ko's
//! go-containerregistry do: `alpine` is `index.docker.io/library/alpine:latest`.

use std::fmt;

use crate::digest::Digest;

/// Where names without a registry part live.
pub const DOCKER_HUB: &str = "index.docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;
const REFERENCE_FORM: &str = "expected [registry[:port]/]repository[:tag][@sha256:<64 hex digits>]";
const REPOSITORY_FORM: &str = "expected [registry[:port]/]repository";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {reason}")]
pub struct ReferenceError {
    kind: &'static str,
    input: String,
    reason: String,
}

/// A repository in a registry, e.g. `ghcr.io/acme/app`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    /// `host[:port]`, e.g. `127.0.0.1:5000` or `index.docker.io`.
    pub registry: String,
    /// The path inside the registry, e.g. `library/alpine`.
    pub name: String,
}

/// An image reference: a repository plus a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `[registry/]repository[:tag][@digest]`; a reference with neither tag nor
    /// digest gets the tag `latest`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: String| ReferenceError {
            kind: "image reference",
            input: input.into(),
            reason,
        };
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Digest::parse(d).map_err(|e| err(e.to_string()))?),
            ),
            None => (input, None),
        };
        let (name, tag) = split_tag(rest);
        if let Some(tag) = tag {
            check_tag(tag).map_err(err)?;
        }
        let repo = split_name(name, REFERENCE_FORM).map_err(err)?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: repo.registry,
            repository: repo.name,
            tag,
            digest,
        })
    }

    /// What ko's `Name()` prints: `registry/repo@sha256:…` when there is a digest (the tag
    /// is dropped), else `registry/repo:tag`.
    pub fn name(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}/{}@{d}", self.registry, self.repository),
            None => format!(
                "{}/{}:{}",
                self.registry,
                self.repository,
                self.reference_str()
            ),
        }
    }

    /// The part after `/manifests/` in the registry API: the digest if any, else the tag.
    pub fn reference_str(&self) -> &str {
        match &self.digest {
            Some(d) => d.as_str(),
            None => self.tag.as_deref().unwrap_or(DEFAULT_TAG),
        }
    }

    pub fn repository(&self) -> Repository {
        Repository {
            registry: self.registry.clone(),
            name: self.repository.clone(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Repository {
    /// Parses a destination repository, `[registry/]name`, with the same normalisation as
    /// [`Reference::parse`]; tags and digests are refused.
    pub fn parse(input: &str) -> Result<Repository, ReferenceError> {
        let err = |reason: String| ReferenceError {
            kind: "repository",
            input: input.into(),
            reason,
        };
        if input.contains('@') {
            return Err(err(format!(
                "a repository takes no digest; {REPOSITORY_FORM}"
            )));
        }
        if let (_, Some(_)) = split_tag(input) {
            return Err(err(format!("a repository takes no tag; {REPOSITORY_FORM}")));
        }
        split_name(input, REPOSITORY_FORM).map_err(err)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// Checks the `<reference>` of a `/manifests/<reference>` URL: a tag or a digest.
pub(crate) fn check_manifest_ref(reference: &str) -> Result<(), ReferenceError> {
    let err = |reason: String| ReferenceError {
        kind: "tag or digest",
        input: reference.into(),
        reason,
    };
    if reference.contains(':') {
        Digest::parse(reference)
            .map(|_| ())
            .map_err(|e| err(e.to_string()))
    } else {
        check_tag(reference).map_err(err)
    }
}

/// Splits off `:tag`: the last colon, unless a `/` follows it (then it is a port).
fn split_tag(s: &str) -> (&str, Option<&str>) {
    match s.rfind(':') {
        Some(i) if !s[i + 1..].contains('/') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    }
}

/// Splits `[registry/]name` and applies Docker Hub's defaults.
fn split_name(s: &str, form: &str) -> Result<Repository, String> {
    if s.is_empty() {
        return Err(format!("the repository name is missing; {form}"));
    }
    let (registry, name) = match s.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':', '[']) || first == "localhost" => {
            (first, rest)
        }
        _ => (DOCKER_HUB, s),
    };
    check_registry(registry)?;
    let registry = if registry == "docker.io" {
        DOCKER_HUB
    } else {
        registry
    };
    let name = if registry == DOCKER_HUB && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_string()
    };
    check_repository(&name, form)?;
    Ok(Repository {
        registry: registry.to_string(),
        name,
    })
}

fn check_registry(registry: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "invalid registry {registry:?}: expected host[:port]"
        ))
    };
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (registry, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || p.parse::<u16>().is_err()) {
        return bad();
    }
    let ok = if let Some(ip6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        ip6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    };
    if ok { Ok(()) } else { bad() }
}

fn check_repository(name: &str, form: &str) -> Result<(), String> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the repository name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(format!(
                "invalid path component {component:?}: expected lowercase letters and digits, \
                 joined by '.', '_', '__' or dashes ({form})"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return false;
    }
    // Every run of separators between alphanumerics must be one allowed separator.
    c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        .all(|sep| {
            sep.is_empty() || matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-')
        })
}

/// The distribution spec's tag grammar, `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: the one
/// check of every tag kobuild takes.
pub fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

fn check_tag(tag: &str) -> Result<(), String> {
    if valid_tag(tag) {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: expected 1 to {MAX_TAG_LEN} characters from [A-Za-z0-9_.-], \
             not starting with '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for good in ["v1", "_x", "1.2.3-rc.1", &"a".repeat(128)] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in ["", "-x", ".x", "a:b", "a/b", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// input, registry, repository, tag, has a digest, name()
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, bool, String);

    #[test]
    fn parses_and_normalises() {
        let cases: &[Case] = &[
            (
                "alpine",
                DOCKER_HUB,
                "library/alpine",
                Some("latest"),
                false,
                "index.docker.io/library/alpine:latest".into(),
            ),
            (
                "alpine:3.20",
                DOCKER_HUB,
                "library/alpine",
                Some("3.20"),
                false,
                "index.docker.io/library/alpine:3.20".into(),
            ),
            (
                "user/app",
                DOCKER_HUB,
                "user/app",
                Some("latest"),
                false,
                "index.docker.io/user/app:latest".into(),
            ),
            (
                "docker.io/alpine",
                DOCKER_HUB,
                "library/alpine",
                Some("latest"),
                false,
                "index.docker.io/library/alpine:latest".into(),
            ),
            (
                "docker.io/user/app:v1",
                DOCKER_HUB,
                "user/app",
                Some("v1"),
                false,
                "index.docker.io/user/app:v1".into(),
            ),
            (
                "ghcr.io/acme/app",
                "ghcr.io",
                "acme/app",
                Some("latest"),
                false,
                "ghcr.io/acme/app:latest".into(),
            ),
            (
                "localhost/app",
                "localhost",
                "app",
                Some("latest"),
                false,
                "localhost/app:latest".into(),
            ),
            (
                "localhost:5000/a/b:t",
                "localhost:5000",
                "a/b",
                Some("t"),
                false,
                "localhost:5000/a/b:t".into(),
            ),
            (
                "127.0.0.1:5000/app",
                "127.0.0.1:5000",
                "app",
                Some("latest"),
                false,
                "127.0.0.1:5000/app:latest".into(),
            ),
            (
                "[::1]:5000/app:x",
                "[::1]:5000",
                "app",
                Some("x"),
                false,
                "[::1]:5000/app:x".into(),
            ),
            (
                &format!("gcr.io/distroless/static@{D}"),
                "gcr.io",
                "distroless/static",
                None,
                true,
                format!("gcr.io/distroless/static@{D}"),
            ),
            (
                &format!("gcr.io/d/s:nonroot@{D}"),
                "gcr.io",
                "d/s",
                Some("nonroot"),
                true,
                format!("gcr.io/d/s@{D}"),
            ),
            (
                "a.io/x-y/z__w.v_u---t:V_1.0-rc",
                "a.io",
                "x-y/z__w.v_u---t",
                Some("V_1.0-rc"),
                false,
                "a.io/x-y/z__w.v_u---t:V_1.0-rc".into(),
            ),
        ];
        for (input, registry, repository, tag, has_digest, name) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry, *registry, "{input}");
            assert_eq!(r.repository, *repository, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
            assert_eq!(r.digest.is_some(), *has_digest, "{input}");
            assert_eq!(r.name(), *name, "{input}");
            assert_eq!(r.to_string(), *name, "{input}");
            let expected_ref = if *has_digest {
                D
            } else {
                tag.unwrap_or_default()
            };
            assert_eq!(r.reference_str(), expected_ref, "{input}");
            assert_eq!(
                r.repository().to_string(),
                format!("{registry}/{repository}")
            );
        }
    }

    #[test]
    fn rejects_bad_references() {
        // input, part of the message
        let cases = [
            ("", "repository name is missing"),
            ("Foo/bar", "repository names must be lowercase"),
            ("ghcr.io/Acme/app", "repository names must be lowercase"),
            ("app:", "invalid tag \"\""),
            ("app:-x", "invalid tag \"-x\""),
            (&format!("app:{}", "t".repeat(129)), "invalid tag"),
            ("app@sha256:abc", "invalid digest"),
            ("app@md5:00", "invalid digest"),
            ("a//b", "invalid path component \"\""),
            ("ghcr.io/a/-b", "invalid path component \"-b\""),
            ("ghcr.io/a/b_", "invalid path component \"b_\""),
            ("ghcr.io/a/b___c", "invalid path component"),
            ("ghcr.io/a/b._c", "invalid path component"),
            ("ghcr.io/a b", "invalid path component"),
            ("host:99999/app", "invalid registry \"host:99999\""),
            ("ho_st.io/app", "invalid registry"),
            ("[nope]:5000/app", "invalid registry"),
            ("ghcr.io/", "invalid path component"),
            (&format!("ghcr.io/{}", "a".repeat(256)), "longer than 255"),
        ];
        for (input, want) in cases {
            let e = Reference::parse(input).expect_err(input).to_string();
            assert!(e.contains(want), "{input:?}: {e}");
            assert!(
                e.starts_with(&format!("invalid image reference {input:?}: ")),
                "{e}"
            );
        }
        assert_eq!(
            Reference::parse("Foo/bar").unwrap_err().to_string(),
            r#"invalid image reference "Foo/bar": repository names must be lowercase"#
        );
    }

    #[test]
    fn parses_repositories() {
        let cases = [
            ("host:5000/a/b", "host:5000", "a/b"),
            ("127.0.0.1:5000/apps", "127.0.0.1:5000", "apps"),
            ("localhost/app", "localhost", "app"),
            ("app", DOCKER_HUB, "library/app"),
            ("docker.io/user/app", DOCKER_HUB, "user/app"),
        ];
        for (input, registry, name) in cases {
            let r = Repository::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.registry.as_str(), r.name.as_str()),
                (registry, name),
                "{input}"
            );
            assert_eq!(r.to_string(), format!("{registry}/{name}"));
        }
        let bad = [
            ("host:5000/a:tag", "takes no tag"),
            (&format!("host/a@{D}") as &str, "takes no digest"),
            ("Bad Repo", "must be lowercase"),
            ("", "missing"),
        ];
        for (input, want) in bad {
            let e = Repository::parse(input).expect_err(input).to_string();
            assert!(
                e.starts_with(&format!("invalid repository {input:?}: ")),
                "{e}"
            );
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn checks_manifest_refs() {
        for ok in ["latest", "v1.2.3", "_x", D] {
            assert!(check_manifest_ref(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "sha256:xyz", ".x", "a?b"] {
            assert!(check_manifest_ref(bad).is_err(), "{bad}");
        }
    }
}
