//! Configuration errors, located as `FILE:LINE:COL` and named by field path, so a user (or a
//! GitHub Actions annotation) can go straight to the offending line.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a configuration file; both 1-based, the column in characters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{}{kind}", Prefix(file, *position))]
pub struct ConfigError {
    pub file: PathBuf,
    pub position: Option<Pos>,
    pub kind: ConfigErrorKind,
}

struct Prefix<'a>(&'a Path, Option<Pos>);

impl fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(p) => write!(f, "{}:{}:{}: ", self.0.display(), p.line, p.column),
            None => write!(f, "{}: ", self.0.display()),
        }
    }
}

fn field(path: &str) -> &str {
    if path.is_empty() {
        "the document"
    } else {
        path
    }
}

fn in_path(path: &str) -> String {
    if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {path}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    #[error("invalid YAML: {0}")]
    Syntax(String),
    #[error("unknown field {field:?} {} (expected one of: {})", in_path(path), expected.join(", "))]
    UnknownField {
        field: String,
        path: String,
        expected: Vec<&'static str>,
    },
    #[error("{}: expected {expected}, found {found}", field(path))]
    Type {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{}: {message}", field(path))]
    Invalid { path: String, message: String },
    #[error(
        "apiVersion {found:?} is not supported: the ko builder needs {} to skaffold/v4beta{} (`skaffold fix --version skaffold/v4beta{}` upgrades older files)",
        super::skaffold::FIRST_KO_SCHEMA,
        super::skaffold::LATEST_V4BETA,
        super::skaffold::LATEST_V4BETA
    )]
    UnsupportedVersion { found: String },
    #[error("unknown profile {name:?} (available: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    UnknownProfile {
        name: String,
        available: Vec<String>,
    },
    #[error("profile {profile:?}: {message}")]
    Profile { profile: String, message: String },
    #[error("{0}")]
    Message(String),
}

/// An error before the file name is attached.
#[derive(Debug)]
pub(crate) struct Fault {
    pub pos: Option<Pos>,
    pub kind: ConfigErrorKind,
}

impl Fault {
    pub fn at(pos: Pos, kind: ConfigErrorKind) -> Fault {
        Fault {
            pos: Some(pos),
            kind,
        }
    }

    pub fn invalid(pos: Pos, path: &str, message: impl Into<String>) -> Fault {
        Fault::at(
            pos,
            ConfigErrorKind::Invalid {
                path: path.to_string(),
                message: message.into(),
            },
        )
    }

    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            position: self.pos,
            kind: self.kind,
        }
    }
}

/// The candidate nearest to `word` (case-insensitive edit distance), if close enough to be
/// a likely typo: at most 2 edits, and fewer than a third of the word.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word: Vec<char> = word.to_lowercase().chars().collect();
    candidates
        .iter()
        .map(|c| {
            (
                edit_distance(&word, &c.to_lowercase().chars().collect::<Vec<_>>()),
                *c,
            )
        })
        .filter(|&(d, _)| d <= 2 && d * 3 < word.len().max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, one row at a time.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
