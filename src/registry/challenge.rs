//! `WWW-Authenticate` challenges and token scopes.

/// How a registry wants to be authenticated, from its answer to `GET /v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `/v2/` answered 200: no credentials are sent.
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Unsupported(String),
}

impl Challenge {
    /// The best challenge among all `WWW-Authenticate` header values: Bearer, then Basic.
    pub(crate) fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Challenge {
        let all: Vec<_> = headers.into_iter().flat_map(parse_header).collect();
        let bearer = all.iter().find_map(|(scheme, params)| {
            let param = |key: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            (scheme == "bearer")
                .then(|| param("realm"))
                .flatten()
                .map(|realm| Challenge::Bearer {
                    realm,
                    service: param("service"),
                })
        });
        bearer
            .or_else(|| {
                all.iter()
                    .any(|(s, _)| s == "basic")
                    .then_some(Challenge::Basic)
            })
            .unwrap_or_else(|| {
                Challenge::Unsupported(
                    all.first()
                        .map(|(s, _)| s.clone())
                        .unwrap_or_else(|| "none".into()),
                )
            })
    }
}

type Params = Vec<(String, String)>;

/// Parses `Scheme k=v, k="v", Scheme2 k=v` into (lowercase scheme, params) pairs.
fn parse_header(value: &str) -> Vec<(String, Params)> {
    let mut out: Vec<(String, Params)> = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return out;
        }
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = rest[..end].to_ascii_lowercase();
        let after = rest[end..].trim_start();
        match (after.strip_prefix('='), out.last_mut()) {
            (Some(value), Some((_, params))) => {
                let (v, remaining) = parse_value(value.trim_start());
                params.push((token, v));
                rest = remaining;
            }
            (Some(value), None) => rest = parse_value(value.trim_start()).1,
            (None, _) => {
                out.push((token, Vec::new()));
                rest = after;
            }
        }
    }
}

/// A quoted string (with `\` escapes) or a token; returns it and the remaining input.
fn parse_value(s: &str) -> (String, &str) {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => return (value, &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

/// The repository actions a token must grant, e.g. `repository:a/b:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Scope(Vec<String>);

impl Scope {
    pub(crate) fn pull(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull")])
    }

    pub(crate) fn push(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull,push")])
    }

    /// A cross-repository mount needs push on the target and pull on the source.
    pub(crate) fn mount(target: &str, from: &str) -> Scope {
        Scope(vec![
            format!("repository:{target}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }

    pub(crate) fn items(&self) -> &[String] {
        &self.0
    }

    /// Space-separated, as OAuth2 wants it; also the token cache key.
    pub(crate) fn joined(&self) -> String {
        self.0.join(" ")
    }

    pub(crate) fn is_push(&self) -> bool {
        self.0.first().is_some_and(|s| s.ends_with(",push"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let bearer = |realm: &str, service: Option<&str>| Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
        };
        let cases: Vec<(Vec<&str>, Challenge)> = vec![
            (vec![r#"Basic realm="basic-realm""#], Challenge::Basic),
            (
                vec![r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#],
                bearer("https://auth.docker.io/token", Some("registry.docker.io")),
            ),
            (
                vec![
                    r#"bearer realm="https://ghcr.io/token", service="ghcr.io", scope="repository:u/a:pull""#,
                ],
                bearer("https://ghcr.io/token", Some("ghcr.io")),
            ),
            (
                vec![r#"Bearer realm=https://r.io/t,service=r"#],
                bearer("https://r.io/t", Some("r")),
            ),
            (
                vec![r#"Bearer realm="https://r.io/a\"b""#],
                bearer("https://r.io/a\"b", None),
            ),
            (
                vec![r#"Basic realm="x", Bearer realm="https://r.io/t""#],
                bearer("https://r.io/t", None),
            ),
            (
                vec![r#"Basic realm="x""#, r#"Bearer realm="https://r.io/t""#],
                bearer("https://r.io/t", None),
            ),
            (
                vec!["Bearer service=x"],
                Challenge::Unsupported("bearer".into()),
            ),
            (
                vec![r#"Negotiate"#],
                Challenge::Unsupported("negotiate".into()),
            ),
            (
                vec![r#"Bearer realm="unterminated"#],
                bearer("unterminated", None),
            ),
            (vec![r#"=x, ,"#], Challenge::Unsupported("none".into())),
            (vec![], Challenge::Unsupported("none".into())),
        ];
        for (headers, want) in cases {
            assert_eq!(
                Challenge::parse(headers.iter().copied()),
                want,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn scopes() {
        assert_eq!(Scope::pull("a/b").joined(), "repository:a/b:pull");
        assert_eq!(Scope::push("a/b").joined(), "repository:a/b:pull,push");
        let mount = Scope::mount("t/x", "f/y");
        assert_eq!(
            mount.items(),
            ["repository:t/x:pull,push", "repository:f/y:pull"]
        );
        assert!(mount.is_push() && !Scope::pull("a").is_push());
    }
}
