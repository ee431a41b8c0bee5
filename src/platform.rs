//! Platforms as users write them (`os/arch[/variant][:osversion]`), matching against image
//! platforms, and the Go environment each one builds with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A platform as OCI indexes and image configs write it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: String,
    pub os_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidPlatform {
    #[error(
        "invalid platform {0:?}: expected os/arch[/variant][:osversion], e.g. linux/amd64 or linux/arm/v7"
    )]
    Syntax(String),
    #[error(
        "{0:?} is not a platform Go builds for: write os/arch in lower case as `go tool dist list` prints it, e.g. linux/amd64"
    )]
    Port(String),
    #[error("{spec:?} has an unknown variant for {arch}: use {valid}")]
    Variant {
        spec: String,
        arch: String,
        valid: &'static str,
    },
}

/// `go tool dist list` (Go 1.26): anything else would only fail in `go build`, after the base
/// image was fetched. Kept static so checking needs no Go toolchain.
const GO_PORTS: &[(&str, &[&str])] = &[
    ("aix", &["ppc64"]),
    ("android", &["386", "amd64", "arm", "arm64"]),
    ("darwin", &["amd64", "arm64"]),
    ("dragonfly", &["amd64"]),
    ("freebsd", &["386", "amd64", "arm", "arm64", "riscv64"]),
    ("illumos", &["amd64"]),
    ("ios", &["amd64", "arm64"]),
    ("js", &["wasm"]),
    (
        "linux",
        &[
            "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle",
            "ppc64", "ppc64le", "riscv64", "s390x",
        ],
    ),
    ("netbsd", &["386", "amd64", "arm", "arm64"]),
    (
        "openbsd",
        &["386", "amd64", "arm", "arm64", "ppc64", "riscv64"],
    ),
    ("plan9", &["386", "amd64", "arm"]),
    ("solaris", &["amd64"]),
    ("wasip1", &["wasm"]),
    ("windows", &["386", "amd64", "arm64"]),
];

type VariantCheck = fn(&str) -> bool;

/// The variants an architecture's images are published under (OCI image index names) that
/// Go can target: arm's v8 is 32-bit code on ARMv8 cores, built as GOARM=7 as ko does.
fn variants(arch: &str) -> Option<(&'static str, VariantCheck)> {
    match arch {
        "arm" => Some(("v5, v6, v7 or v8", |v| {
            matches!(v, "v5" | "v6" | "v7" | "v8")
        })),
        "arm64" => Some(("v8, v8.0-v8.9, v9 or v9.0-v9.5", |v| {
            matches!(v, "v8" | "v9")
                || v.strip_prefix("v8.")
                    .is_some_and(|n| matches!(n.as_bytes(), [b'0'..=b'9']))
                || v.strip_prefix("v9.")
                    .is_some_and(|n| matches!(n.as_bytes(), [b'0'..=b'5']))
        })),
        "amd64" => Some(("v1, v2, v3 or v4", |v| {
            matches!(v, "v1" | "v2" | "v3" | "v4")
        })),
        _ => None,
    }
}

impl Platform {
    pub fn parse(s: &str) -> Result<Self, InvalidPlatform> {
        let bad = || InvalidPlatform::Syntax(s.to_string());
        let (main, os_version) = match s.split_once(':') {
            Some((m, v)) if !v.is_empty() => (m, v),
            Some(_) => return Err(bad()),
            None => (s, ""),
        };
        let parts: Vec<&str> = main.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        if parts.len() > 3 || !parts.iter().all(|p| valid(p)) {
            return Err(bad());
        }
        let get = |i: usize| parts.get(i).map(|p| p.to_string()).unwrap_or_default();
        Ok(Platform {
            os: get(0),
            arch: get(1),
            variant: get(2),
            os_version: os_version.to_string(),
        })
    }

    pub fn linux_amd64() -> Self {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: String::new(),
            os_version: String::new(),
        }
    }

    /// Empty fields of `self` match anything, so `linux/arm64` matches `linux/arm64/v8`.
    pub fn matches(&self, p: &OciPlatform) -> bool {
        let field = |want: &str, have: &str| want.is_empty() || want == have;
        field(&self.os, &p.os)
            && field(&self.arch, &p.architecture)
            && field(&self.variant, &p.variant)
            && field(&self.os_version, &p.os_version)
    }

    pub fn to_oci(&self) -> OciPlatform {
        OciPlatform {
            architecture: self.arch.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }

    /// A platform to build for: an os/arch pair Go supports, with a variant of that arch.
    pub fn check_buildable(&self) -> Result<(), InvalidPlatform> {
        let ported = GO_PORTS
            .iter()
            .any(|(os, arches)| *os == self.os && arches.contains(&self.arch.as_str()));
        if !ported {
            return Err(InvalidPlatform::Port(self.to_string()));
        }
        if self.variant.is_empty() {
            return Ok(());
        }
        match variants(&self.arch) {
            Some((_, valid)) if valid(&self.variant) => Ok(()),
            found => Err(InvalidPlatform::Variant {
                spec: self.to_string(),
                arch: self.arch.clone(),
                valid: found.map_or("no variant", |(names, _)| names),
            }),
        }
    }

    /// GOOS, GOARCH and the variant's GOARM/GOAMD64, as ko maps them.
    pub fn go_env(&self) -> Result<Vec<(String, String)>, InvalidPlatform> {
        self.check_buildable()?;
        let mut env = vec![
            ("GOOS".to_string(), self.os.clone()),
            ("GOARCH".to_string(), self.arch.clone()),
        ];
        if self.variant.is_empty() {
            return Ok(env);
        }
        match self.arch.as_str() {
            "arm" => {
                let n: u32 = self
                    .variant
                    .strip_prefix('v')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| InvalidPlatform::Syntax(self.to_string()))?;
                env.push(("GOARM".into(), n.min(7).to_string()));
            }
            "amd64" => env.push(("GOAMD64".into(), self.variant.clone())),
            _ => {}
        }
        Ok(env)
    }
}

/// The platforms asked for: every one the base offers, or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Platforms {
    All,
    List(Vec<Platform>),
}

impl Platforms {
    /// `--platform` values: each may be a comma-separated list; `all` stands alone.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut list: Vec<Platform> = Vec::new();
        let mut all = false;
        for part in items
            .iter()
            .flat_map(|s| s.as_ref().split(','))
            .map(str::trim)
        {
            if part == "all" {
                all = true;
                continue;
            }
            let p = Platform::parse(part).map_err(|e| e.to_string())?;
            if p.arch.is_empty() {
                return Err(format!(
                    "{part:?} has no architecture: write os/arch, e.g. linux/arm64"
                ));
            }
            p.check_buildable().map_err(|e| e.to_string())?;
            if !list.contains(&p) {
                list.push(p);
            }
        }
        match (all, list.is_empty()) {
            (true, true) => Ok(Platforms::All),
            (true, false) => Err("all cannot be combined with other platforms".into()),
            (false, true) => Err("no platform given".into()),
            (false, false) => Ok(Platforms::List(list)),
        }
    }

    /// Whether a base image for `p` is wanted; attestation entries never are.
    pub fn wants(&self, p: &OciPlatform) -> bool {
        if p.os == "unknown" && p.architecture == "unknown" {
            return false;
        }
        match self {
            Platforms::All => true,
            Platforms::List(list) => list.iter().any(|want| want.matches(p)),
        }
    }
}

impl From<&OciPlatform> for Platform {
    fn from(p: &OciPlatform) -> Self {
        Platform {
            os: p.os.clone(),
            arch: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
        }
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platforms::All => f.write_str("all"),
            Platforms::List(l) => {
                let names: Vec<String> = l.iter().map(Platform::to_string).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        if !self.os_version.is_empty() {
            write!(f, ":{}", self.os_version)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for s in [
            "linux/amd64",
            "linux/arm/v7",
            "windows/amd64:10.0.17763",
            "linux",
        ] {
            assert_eq!(p(s).to_string().trim_end_matches('/'), s);
        }
        for bad in [
            "",
            "linux//amd64",
            "a/b/c/d",
            "linux/amd64:",
            "linux/am d64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_fields_are_wildcards() {
        let arm64v8 = OciPlatform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: "v8".into(),
            ..Default::default()
        };
        assert!(p("linux/arm64").matches(&arm64v8));
        assert!(!p("linux/arm64/v9").matches(&arm64v8));
        assert!(!p("linux/amd64").matches(&arm64v8));
    }

    #[test]
    fn platform_lists() {
        assert_eq!(Platforms::parse(&["all"]).unwrap(), Platforms::All);
        let l =
            Platforms::parse(&["linux/amd64,linux/arm64", "linux/arm/v7", "linux/amd64"]).unwrap();
        assert_eq!(l.to_string(), "linux/amd64,linux/arm64,linux/arm/v7");
        assert!(
            Platforms::parse(&["all,linux/amd64"])
                .unwrap_err()
                .contains("all cannot be combined")
        );
        assert!(
            Platforms::parse(&["linux"])
                .unwrap_err()
                .contains("no architecture")
        );
        let unknown = OciPlatform {
            os: "unknown".into(),
            architecture: "unknown".into(),
            ..Default::default()
        };
        assert!(!Platforms::All.wants(&unknown));
    }

    #[test]
    fn variants_map_to_go_env_like_ko() {
        let env = |s: &str| p(s).go_env().unwrap();
        assert!(env("linux/arm/v7").contains(&("GOARM".into(), "7".into())));
        assert!(env("linux/arm/v8").contains(&("GOARM".into(), "7".into())));
        assert!(env("linux/amd64/v3").contains(&("GOAMD64".into(), "v3".into())));
        assert_eq!(env("linux/arm64/v8").len(), 2);
        assert!(p("linux/arm/x").go_env().is_err());
    }

    #[test]
    fn only_what_go_builds_is_accepted() {
        for good in [
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm64/v8.2",
            "linux/amd64/v3",
            "windows/amd64:10.0.17763",
            "wasip1/wasm",
            "linux/s390x",
        ] {
            p(good).check_buildable().unwrap();
        }
        for (bad, needle) in [
            ("LINUX/AMD64", "lower case"),
            ("plan9x/386", "not a platform Go builds for"),
            ("linux/nope", "not a platform Go builds for"),
            ("linux/arm/v99", "v5, v6, v7 or v8"),
            ("linux/arm/v4", "v5, v6, v7 or v8"),
            ("linux/arm64/v8.10", "v8.0-v8.9"),
            ("linux/amd64/v5", "v1, v2, v3 or v4"),
            ("linux/riscv64/v1", "no variant"),
        ] {
            let e = Platforms::parse(&[bad]).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
