//! Image names the way Skaffold derives them (`pkg/skaffold/docker/reference.go`,
//! `default_repo.go`): `ko://` stripped and the name lower-cased, then rewritten under the
//! default repo. artifacts.json's `imageName` is not derived: it is the raw `image` field
//! ([`super::Artifact::image`]).

use std::collections::BTreeMap;

/// Skaffold truncates rewritten names to this many bytes.
const MAX_NAME_LENGTH: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("invalid image reference {image:?}: {reason}")]
    Invalid { image: String, reason: String },
    #[error(
        "default repo must be set when using the 'ko://' prefix and pushing to a registry: {0}, see https://skaffold.dev/docs/environment/image-registries/"
    )]
    DefaultRepoRequired(String),
}

/// An image reference parsed as Skaffold's `docker.ParseReference` does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageReference {
    /// The name without tag or digest, `ko://` stripped and lower-cased.
    pub base_name: String,
    /// The first path element when it is a registry host (`host[:port]`), else "".
    pub domain: String,
    pub path: String,
    /// `base_name` up to its last `/`; "" for a single-element name.
    pub repo: String,
    /// `base_name` after its last `/`; "" for a single-element name (Skaffold's quirk).
    pub name: String,
    pub tag: String,
    pub digest: String,
    /// A tag other than `latest`, or a digest.
    pub fully_qualified: bool,
}

fn is_alnum(c: u8, any_case: bool) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || (any_case && c.is_ascii_uppercase())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(s: &str, any_case: bool) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0], any_case) || !is_alnum(b[b.len() - 1], any_case) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i], any_case) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i], any_case) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]`, host a domain name or a bracketed IPv6 address.
fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after.strip_prefix(':') {
            Some(port) => ("[]", Some(port)),
            None if after.is_empty() => ("[]", None),
            None => return false,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host_ok = host == "[]"
        || (!host.is_empty()
            && host.split('.').all(|c| {
                let b = c.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
            }));
    host_ok && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// Split a valid name into (domain, path); `None` if the name is not valid.
fn split_name(name: &str, any_case: bool) -> Option<(&str, &str)> {
    let parts: Vec<&str> = name.split('/').collect();
    let rest_ok = |from: usize| parts[from..].iter().all(|p| is_path_component(p, any_case));
    if parts.len() >= 2 && is_domain(parts[0]) && rest_ok(1) {
        Some((parts[0], &name[parts[0].len() + 1..]))
    } else if rest_ok(0) {
        Some(("", name))
    } else {
        None
    }
}

fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Split `name[:tag][@digest]` at the only places the grammar allows.
fn split_reference(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    match rest.rfind(':') {
        Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..]), digest),
        _ => (rest, None, digest),
    }
}

/// The checks of go-digest's `Parse` for the algorithms registries use.
fn check_digest(d: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return Err(format!("invalid digest {d:?}"));
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm {algorithm:?}")),
    };
    if hex.len() != length
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err(format!("invalid checksum digest format {d:?}"));
    }
    Ok(())
}

/// Skaffold's `SanitizeImageName`: drop a `ko://` prefix and lower-case the name part,
/// keeping the tag's case.
pub fn sanitize_image_name(image: &str) -> String {
    let image = image.strip_prefix("ko://").unwrap_or(image);
    let (name, tag, digest) = split_reference(image);
    let valid = split_name(name, true).is_some()
        && tag.is_none_or(is_tag)
        && digest.is_none_or(|d| d.contains(':'));
    if valid {
        format!("{}{}", name.to_lowercase(), &image[name.len()..])
    } else {
        image.to_string()
    }
}

/// Skaffold's `docker.ParseReference`: sanitize, then parse as distribution's reference.
pub fn parse_reference(image: &str) -> Result<ImageReference, NamingError> {
    let invalid = |reason: &str| NamingError::Invalid {
        image: image.to_string(),
        reason: reason.to_string(),
    };
    let sanitized = sanitize_image_name(image);
    if sanitized.is_empty() {
        return Err(invalid("repository name must have at least one component"));
    }
    let (name, tag, digest) = split_reference(&sanitized);
    let Some((domain, path)) = split_name(name, false) else {
        return Err(invalid("invalid reference format"));
    };
    if tag.is_some_and(|t| !is_tag(t)) {
        return Err(invalid("invalid reference format"));
    }
    if let Some(d) = digest {
        check_digest(d).map_err(|reason| invalid(&reason))?;
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(invalid(
            "repository name must not be more than 255 characters",
        ));
    }
    let (repo, last) = match name.rsplit_once('/') {
        Some((repo, last)) => (repo, last),
        None => ("", ""),
    };
    let tag = tag.unwrap_or_default();
    Ok(ImageReference {
        base_name: name.to_string(),
        domain: domain.to_string(),
        path: path.to_string(),
        repo: repo.to_string(),
        name: last.to_string(),
        tag: tag.to_string(),
        digest: digest.unwrap_or_default().to_string(),
        fully_qualified: digest.is_some() || (!tag.is_empty() && tag != "latest"),
    })
}

fn truncate(mut name: String) -> String {
    if name.len() > MAX_NAME_LENGTH {
        let mut end = MAX_NAME_LENGTH;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// The match of Skaffold's `prefixRegex` at the start of `name`, "" if none: a registry host,
/// `/`, then the longest GCP project id there (`[a-z][a-z0-9-]{4,28}[a-z0-9]`, which may end
/// inside a path component), then a `/` if one follows.
fn project_prefix(name: &str) -> &str {
    let Some((host, rest)) = name.split_once('/') else {
        return "";
    };
    if !is_domain(host) {
        return "";
    }
    let b = rest.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_lowercase) {
        return "";
    }
    let run = b
        .iter()
        .take(30)
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || **c == b'-')
        .count();
    let Some(len) = (6..=run)
        .rev()
        .find(|&l| b[l - 1].is_ascii_lowercase() || b[l - 1].is_ascii_digit())
    else {
        return "";
    };
    let slash = usize::from(b.get(len) == Some(&b'/'));
    &name[..host.len() + 1 + len + slash]
}

/// Skaffold's `replace`: multi-level names only when the default repo's project prefix names
/// gcr.io or Artifact Registry (so a short project id flattens), or with `multi_level`.
fn replace(default_repo: &str, multi_level: bool, base: &str) -> String {
    if base.starts_with(default_repo) {
        return base.to_string();
    }
    let own = project_prefix(base);
    let target = project_prefix(default_repo);
    if target.contains("gcr.io") || target.contains("-docker.pkg.dev") || multi_level {
        if own == target {
            // Skaffold does not truncate this form.
            return format!("{default_repo}/{}", &base[own.len()..]);
        }
        return truncate(format!("{default_repo}/{base}"));
    }
    let escaped: String = base
        .chars()
        .map(|c| if "/._:@".contains(c) { '_' } else { c })
        .collect();
    truncate(format!("{default_repo}/{escaped}"))
}

/// Skaffold's `SubstituteDefaultRepoIntoImage`: the image under `default_repo` (unchanged
/// when it is empty), keeping its tag and digest. Names already under the default repo are
/// kept; gcr.io or Artifact Registry repos with a valid project id, or `multi_level`, keep
/// the path, others get it flattened with `_`; the name is truncated to 255 bytes.
pub fn substitute_default_repo(
    default_repo: &str,
    multi_level: bool,
    image: &str,
) -> Result<String, NamingError> {
    if default_repo.is_empty() {
        return Ok(image.to_string());
    }
    let parsed = parse_reference(image)?;
    let mut out = replace(default_repo, multi_level, &parsed.base_name);
    if !parsed.tag.is_empty() {
        out = format!("{out}:{}", parsed.tag);
    }
    if !parsed.digest.is_empty() {
        out = format!("{out}@{}", parsed.digest);
    }
    Ok(out)
}

/// The repository an artifact is pushed to: its sanitized name under the default repo. A
/// `ko://` image needs a default repo, as in Skaffold's ko builder.
pub fn registry_repository(
    image: &str,
    default_repo: Option<&str>,
    multi_level: bool,
) -> Result<String, NamingError> {
    let substituted =
        substitute_default_repo(default_repo.unwrap_or_default(), multi_level, image)?;
    if substituted.starts_with("ko://") {
        return Err(NamingError::DefaultRepoRequired(image.to_string()));
    }
    Ok(parse_reference(&substituted)?.base_name)
}

/// `IMAGE_REPO`, `IMAGE_NAME` and `IMAGE_TAG` for Skaffold's ko templates, from the final
/// reference (`repo/name:tag`).
pub fn image_template_vars(reference: &str) -> Result<BTreeMap<String, String>, NamingError> {
    let r = parse_reference(reference)?;
    Ok(BTreeMap::from([
        ("IMAGE_REPO".to_string(), r.repo),
        ("IMAGE_NAME".to_string(), r.name),
        ("IMAGE_TAG".to_string(), r.tag),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "a",
            "a/b",
            "localhost:5000/a",
            "[::1]:5000/a",
            "a__b",
            "a--b-c",
            "Example.com/a",
        ] {
            assert!(split_name(ok, false).is_some(), "{ok}");
        }
        for bad in ["", "a//b", "-a", "a-", "a_-b", "a...b", "[zz]/a", "h:/a"] {
            assert!(split_name(bad, false).is_none(), "{bad}");
        }
        assert!(split_name("A", false).is_none());
        assert!(is_tag("v1.0-rc_1") && !is_tag(".v1") && !is_tag(&"a".repeat(129)));
        assert!(check_digest("sha256:ABC").is_err());
    }

    /// Skaffold's default-repo cases: the project id decides, not the host.
    #[test]
    fn default_repo_follows_the_project_regex() {
        let cases = [
            (
                "gcr.io/myproject1",
                "ko://github.com/Org/Repo/cmd/App",
                "gcr.io/myproject1/github.com/org/repo/cmd/app",
            ),
            (
                "gcr.io/myproject1",
                "gcr.io/myproject1/sub/app",
                "gcr.io/myproject1/sub/app",
            ),
            (
                "gcr.io/myproject1",
                "gcr.io/foobar/x",
                "gcr.io/myproject1/gcr.io/foobar/x",
            ),
            ("gcr.io/foo", "gcr.io/foobar/x", "gcr.io/foobar/x"),
            (
                "gcr.io/foo",
                "ko://example.com/app",
                "gcr.io/foo/example_com_app",
            ),
            (
                "us-docker.pkg.dev/p/r",
                "ko://example.com/a/b",
                "us-docker.pkg.dev/p/r/example_com_a_b",
            ),
            (
                "us-docker.pkg.dev/my-proj-1/r",
                "ko://example.com/a/b",
                "us-docker.pkg.dev/my-proj-1/r/example.com/a/b",
            ),
            (
                "us-docker.pkg.dev/my-proj-1/r",
                "us-docker.pkg.dev/my-proj-1/other/app",
                "us-docker.pkg.dev/my-proj-1/r/other/app",
            ),
            (
                "us-docker.pkg.dev/my-proj-1/r",
                "eu-docker.pkg.dev/my-proj-1/other/app",
                "us-docker.pkg.dev/my-proj-1/r/eu-docker.pkg.dev/my-proj-1/other/app",
            ),
            (
                "localhost:5000",
                "example.com/Team/App.Name",
                "localhost:5000/example_com_team_app_name",
            ),
            // The project id may end inside a path component (`prefixRegex` is not anchored there).
            ("gcr.io/myproject1_x", "ko://a/b", "gcr.io/myproject1_x/a/b"),
        ];
        for (repo, image, want) in cases {
            assert_eq!(
                substitute_default_repo(repo, false, image).unwrap(),
                want,
                "{image} under {repo}"
            );
        }
        assert_eq!(project_prefix("gcr.io/myproject1/x"), "gcr.io/myproject1/");
        assert_eq!(project_prefix("gcr.io/myproject1_x"), "gcr.io/myproject1");
        assert_eq!(project_prefix("gcr.io/a-------b/x"), "gcr.io/a-------b/");
        assert_eq!(project_prefix("gcr.io/abcdef-/x"), "gcr.io/abcdef");
        assert_eq!(project_prefix("gcr.io/abcd-/x"), "");
        assert_eq!(
            project_prefix(&format!("h/a{}", "b".repeat(40))),
            format!("h/a{}", "b".repeat(29))
        );
        // Equal prefixes under --multi-level-repo, even empty ones: no truncation.
        let long = format!("localhost:5000/ab/{}", "r".repeat(250));
        assert_eq!(
            substitute_default_repo(&long, true, "ko://x/app").unwrap(),
            format!("{long}/x/app")
        );
    }
}
