//! A Go binary's build information, as `go version -m` prints it.
//!
//! The output is the first line `<file>: go1.x.y`, then one tab-indented record per line:
//! `path`, `mod`, `dep`, `=>` (replaces the module on the line before), `build KEY=VALUE`.
//! Parsing never fails: lines it does not understand are skipped, so a newer Go that adds
//! records still gives an SBOM.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::SbomError;

/// A module as Go records it; `replace` is what a `=>` line put in its place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    pub version: String,
    /// `h1:<base64 sha256>`, empty for the main module, local replacements and vendored builds.
    pub sum: String,
    pub replace: Option<Box<Module>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// e.g. `go1.26.8`.
    pub go_version: String,
    /// The main package's import path.
    pub path: String,
    pub main: Module,
    pub deps: Vec<Module>,
    /// `build` records in order, e.g. (`GOOS`, `linux`), (`-ldflags`, `-s -w`).
    pub settings: Vec<(String, String)>,
}

/// Runs `<go> version -m <binary>` and parses what it prints.
pub async fn read(go: &str, binary: &Path) -> Result<BuildInfo, SbomError> {
    let mut cmd = Command::new(go);
    cmd.arg("version")
        .arg("-m")
        .arg(binary)
        .stdin(Stdio::null());
    let out = crate::interrupt::output(&mut cmd)
        .await
        .map_err(|source| SbomError::GoSpawn {
            go: go.to_string(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || stdout.trim().is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(SbomError::GoVersion {
            binary: binary.to_path_buf(),
            message: if message.is_empty() {
                format!("no build information ({})", out.status)
            } else {
                message
            },
        });
    }
    Ok(parse(&stdout))
}

/// Parses `go version -m` output; see the module docs.
pub fn parse(output: &str) -> BuildInfo {
    let mut info = BuildInfo::default();
    let mut lines = output.lines();
    if let Some(first) = lines.next() {
        // The file name may itself contain ": ", the version never does.
        info.go_version = match first.rsplit_once(": ") {
            Some((_, v)) => v.trim().to_string(),
            None => first.trim().to_string(),
        };
    }
    // Whether the last `mod`/`dep` can still take a `=>` line.
    let mut last: Option<&mut Module> = None;
    for line in lines {
        let line = line.trim_start();
        let mut fields = line.splitn(2, '\t');
        let kind = fields.next().unwrap_or_default();
        let rest = fields.next().unwrap_or_default();
        match kind {
            "path" => {
                info.path = rest.trim().to_string();
                last = None;
            }
            "mod" => {
                info.main = module(rest);
                last = Some(&mut info.main);
            }
            "dep" => {
                info.deps.push(module(rest));
                last = info.deps.last_mut();
            }
            "=>" => {
                if let Some(m) = last.take() {
                    m.replace = Some(Box::new(module(rest)));
                }
            }
            "build" => {
                if let Some(setting) = setting(rest) {
                    info.settings.push(setting);
                }
                last = None;
            }
            _ => {}
        }
    }
    info
}

fn module(fields: &str) -> Module {
    let mut f = fields.split('\t').map(str::trim);
    Module {
        path: f.next().unwrap_or_default().to_string(),
        version: f.next().unwrap_or_default().to_string(),
        sum: f.next().unwrap_or_default().to_string(),
        replace: None,
    }
}

/// `KEY=VALUE`, where Go quotes a key or value that holds spaces, quotes or `=`.
fn setting(s: &str) -> Option<(String, String)> {
    let (key, value) = if s.starts_with('"') {
        let end = quoted_end(s)?;
        let value = s[end..].strip_prefix('=')?;
        (unquote(&s[..end]), value)
    } else {
        let (k, v) = s.split_once('=')?;
        (k.to_string(), v)
    };
    let value = if value.starts_with('"') || value.starts_with('`') {
        unquote(value)
    } else {
        value.to_string()
    };
    Some((key, value))
}

/// The byte index just past the closing quote of the Go string literal `s` starts with.
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Go's `strconv.Unquote` for the escapes `strconv.Quote` writes; anything it cannot read is
/// returned unchanged rather than guessed at.
fn unquote(s: &str) -> String {
    if let Some(raw) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return raw.to_string();
    }
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next() {
            Some('a') => Some('\x07'),
            Some('b') => Some('\x08'),
            Some('f') => Some('\x0c'),
            Some('n') => Some('\n'),
            Some('r') => Some('\r'),
            Some('t') => Some('\t'),
            Some('v') => Some('\x0b'),
            Some(c @ ('\\' | '"' | '\'')) => Some(c),
            Some('x') => hex_char(&mut chars, 2),
            Some('u') => hex_char(&mut chars, 4),
            Some('U') => hex_char(&mut chars, 8),
            _ => None,
        };
        match decoded {
            Some(c) => out.push(c),
            None => return s.to_string(),
        }
    }
    out
}

fn hex_char(chars: &mut std::str::Chars, n: usize) -> Option<char> {
    let digits: String = chars.take(n).collect();
    if digits.len() != n {
        return None;
    }
    char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &str, version: &str, sum: &str) -> Module {
        Module {
            path: path.into(),
            version: version.into(),
            sum: sum.into(),
            replace: None,
        }
    }

    /// `go version -m` of tests/fixtures/apps/hello built with -trimpath (go1.26.8).
    const HELLO: &str = "/tmp/gvm/hello: go1.26.8\n\
        \tpath\texample.com/hello\n\
        \tmod\texample.com/hello\t(devel)\t\n\
        \tbuild\t-buildmode=exe\n\
        \tbuild\t-compiler=gc\n\
        \tbuild\t-trimpath=true\n\
        \tbuild\tDefaultGODEBUG=asynctimerchan=1,tlssha1=1\n\
        \tbuild\tCGO_ENABLED=1\n\
        \tbuild\tGOARCH=amd64\n\
        \tbuild\tGOOS=linux\n\
        \tbuild\tGOAMD64=v1\n";

    /// A module with a directory replacement and a module replacement, built with -ldflags
    /// (go1.26.8; the blank `\t` lines are Go's).
    const REPLACED: &str = "/tmp/gvm/depapp-r: go1.26.8\n\
        \tpath\texample.com/app\n\
        \tmod\texample.com/app\t(devel)\t\n\
        \tdep\texample.com/dep\tv1.2.3\n\
        \t=>\t../dep\t(devel)\t\n\
        \t\n\
        \tdep\tgithub.com/google/go-cmp\tv0.6.0\n\
        \t=>\tgithub.com/google/go-cmp\tv0.7.0\th1:wk8382ETsv4JYUZwIsn6YpYiWiBsYLSJiTsyBybVuN8=\n\
        \t\n\
        \tbuild\t-buildmode=exe\n\
        \tbuild\t-ldflags=\"-X main.version=1 -s\"\n\
        \tbuild\tCGO_ENABLED=0\n\
        \tbuild\tGOOS=linux\n";

    #[test]
    fn parses_a_binary_without_dependencies() {
        let info = parse(HELLO);
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(info.path, "example.com/hello");
        assert_eq!(info.main, m("example.com/hello", "(devel)", ""));
        assert!(info.deps.is_empty());
        assert_eq!(info.settings.len(), 8);
        assert_eq!(
            info.settings[3],
            ("DefaultGODEBUG".into(), "asynctimerchan=1,tlssha1=1".into())
        );
        assert_eq!(info.settings[6], ("GOOS".into(), "linux".into()));
    }

    #[test]
    fn parses_dependencies_with_sums_and_replacements() {
        let info = parse(REPLACED);
        assert_eq!(info.deps.len(), 2);
        let mut local = m("example.com/dep", "v1.2.3", "");
        local.replace = Some(Box::new(m("../dep", "(devel)", "")));
        assert_eq!(info.deps[0], local);
        let mut cmp = m("github.com/google/go-cmp", "v0.6.0", "");
        cmp.replace = Some(Box::new(m(
            "github.com/google/go-cmp",
            "v0.7.0",
            "h1:wk8382ETsv4JYUZwIsn6YpYiWiBsYLSJiTsyBybVuN8=",
        )));
        assert_eq!(info.deps[1], cmp);
        assert_eq!(
            info.settings[1],
            ("-ldflags".into(), "-X main.version=1 -s".into())
        );
        assert_eq!(info.main.replace, None);
    }

    #[test]
    fn parses_a_plain_dependency_sum() {
        let info = parse(
            "x: go1.22.0\n\tpath\tex.com/a\n\tmod\tex.com/a\tv1.0.0\t\n\
             \tdep\tgolang.org/x/text\tv0.14.0\th1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ=\n",
        );
        assert_eq!(info.main, m("ex.com/a", "v1.0.0", ""));
        assert_eq!(
            info.deps,
            [m(
                "golang.org/x/text",
                "v0.14.0",
                "h1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ="
            )]
        );
    }

    #[test]
    fn unquotes_keys_and_values_like_go() {
        assert_eq!(
            setting(r#""a=b"="x\ty \"q\" \u00e9""#),
            Some(("a=b".into(), "x\ty \"q\" é".into()))
        );
        assert_eq!(setting("k=`raw \\n`"), Some(("k".into(), "raw \\n".into())));
        // Not a Go literal: kept as written.
        assert_eq!(
            setting(r#"k="bad \q""#),
            Some(("k".into(), r#""bad \q""#.into()))
        );
        assert_eq!(setting("no-equals"), None);
        assert_eq!(setting(r#""unterminated=x"#), None);
    }

    #[test]
    fn odd_input_never_panics() {
        for input in [
            "",
            "\n",
            "garbage",
            "f: go1\n=>\tx\n\t=>\n\tdep\n\tmod\n\tbuild\n\tbuild\t\"\n\tbuild\t\"\\x\"=1\n\tpath\n",
            "f: go1\n\tbuild\tk=\"\\u12\"\n\tbuild\tk=\"\\U0011ffff\"\n\tbuild\t=v\n",
            "f: go1\n\tdep\ta\tb\tc\td\te\n\t=>\t\n\t=>\tsecond\n",
        ] {
            let info = parse(input);
            assert!(info.deps.len() <= 2, "{input:?}");
        }
        let info = parse("f: go1\n\tdep\ta\tv1\n\t=>\tb\tv2\n\t=>\tc\tv3\n");
        // A second `=>` has no module left to replace.
        assert_eq!(info.deps[0].replace.as_deref(), Some(&m("b", "v2", "")));
    }
}
