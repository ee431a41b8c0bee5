//! The runner's environment files: step outputs (`GITHUB_OUTPUT`), variables for later steps
//! (`GITHUB_ENV`) and the job summary (`GITHUB_STEP_SUMMARY`). Paths come from [`Env`].

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::GhaError;
use crate::digest::to_hex;
use crate::plan::Env;

/// The runner drops a step summary above 1024 KiB, with an error annotation instead.
pub const SUMMARY_LIMIT: u64 = 1024 * 1024;

/// Fresh delimiters to try before giving up: a random 128-bit one collides with nothing in
/// practice, so running out means the random source is broken.
const DELIMITER_TRIES: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct Files {
    pub output: Option<PathBuf>,
    pub env: Option<PathBuf>,
    pub summary: Option<PathBuf>,
}

impl Files {
    pub fn from_env(env: &Env) -> Self {
        let path = |name| env.get(name).filter(|p| !p.is_empty()).map(PathBuf::from);
        Files {
            output: path("GITHUB_OUTPUT"),
            env: path("GITHUB_ENV"),
            summary: path("GITHUB_STEP_SUMMARY"),
        }
    }

    /// A step output; skipped when the runner gave no output file.
    pub fn set_output(&self, name: &str, value: &str) -> Result<(), GhaError> {
        match &self.output {
            Some(path) => append_record(path, name, value, random_delimiter),
            None => Ok(()),
        }
    }

    /// An environment variable for the job's later steps.
    pub fn export_env(&self, name: &str, value: &str) -> Result<(), GhaError> {
        match &self.env {
            Some(path) => append_record(path, name, value, random_delimiter),
            None => Ok(()),
        }
    }

    /// Bytes the summary may still grow by; `None` without a summary file.
    pub fn summary_room(&self) -> Result<Option<u64>, GhaError> {
        let Some(path) = &self.summary else {
            return Ok(None);
        };
        let used = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(GhaError::file(path, source)),
        };
        Ok(Some(SUMMARY_LIMIT.saturating_sub(used)))
    }

    /// Appends Markdown to the summary; refuses what would push it over the runner's limit.
    pub fn append_summary(&self, markdown: &str) -> Result<(), GhaError> {
        let Some(path) = &self.summary else {
            return Ok(());
        };
        let room = self.summary_room()?.unwrap_or(0);
        if markdown.len() as u64 > room {
            return Err(GhaError::SummaryTooLarge {
                size: markdown.len() as u64,
                room,
            });
        }
        append(path, markdown.as_bytes())
    }
}

/// `name<<DELIM\nvalue\nDELIM\n`, the form that carries any value, with a delimiter that
/// occurs in neither the name nor the value.
pub fn append_record(
    path: &Path,
    name: &str,
    value: &str,
    mut delimiter: impl FnMut() -> Result<String, GhaError>,
) -> Result<(), GhaError> {
    // The runner splits a line on its first `=` or `<<`, whichever comes first.
    if name.is_empty() || name.contains(['\n', '\r', '=']) || name.contains("<<") {
        return Err(GhaError::RecordName(name.to_string()));
    }
    for _ in 0..DELIMITER_TRIES {
        let delim = delimiter()?;
        if !name.contains(&delim) && !value.contains(&delim) {
            return append(
                path,
                format!("{name}<<{delim}\n{value}\n{delim}\n").as_bytes(),
            );
        }
    }
    Err(GhaError::Delimiter(name.to_string()))
}

/// `ghadelimiter_<128 random bits>`, the toolkit's prefix with randomness from the kernel.
pub fn random_delimiter() -> Result<String, GhaError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| GhaError::file(Path::new("/dev/urandom"), source))?;
    Ok(format!("ghadelimiter_{}", to_hex(&bytes)))
}

/// One write per record, so a record is never split between two appenders.
fn append(path: &Path, bytes: &[u8]) -> Result<(), GhaError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| GhaError::file(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Files {
        Files {
            output: Some(dir.join("output")),
            env: Some(dir.join("env")),
            summary: Some(dir.join("summary")),
        }
    }

    #[test]
    fn records_use_a_fresh_random_delimiter() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        f.set_output("images", "a\nb").unwrap();
        f.export_env("KOBUILD_DEFAULT_REPO", "ghcr.io/o/r").unwrap();
        let text = std::fs::read_to_string(dir.path().join("output")).unwrap();
        let (head, rest) = text.split_once('\n').unwrap();
        let delim = head.strip_prefix("images<<").unwrap();
        assert!(
            delim.starts_with("ghadelimiter_") && delim.len() == 13 + 32,
            "{delim}"
        );
        assert_eq!(rest, format!("a\nb\n{delim}\n"));
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        assert!(
            env.starts_with("KOBUILD_DEFAULT_REPO<<ghadelimiter_"),
            "{env}"
        );
        assert_ne!(random_delimiter().unwrap(), random_delimiter().unwrap());
    }

    #[test]
    fn a_delimiter_in_the_value_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output");
        let mut candidates = ["EOF", "EOF", "END"].into_iter();
        let mut next = || Ok(candidates.next().unwrap().to_string());
        append_record(&path, "x", "line\nEOF\nmore", &mut next).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "x<<END\nline\nEOF\nmore\nEND\n"
        );
        let always = || Ok("same".to_string());
        let e = append_record(&path, "x", "the same", always).unwrap_err();
        assert!(matches!(e, GhaError::Delimiter(_)), "{e}");
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        for name in ["", "a=b", "a<<b", "a\nb"] {
            assert!(
                matches!(f.set_output(name, "v"), Err(GhaError::RecordName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn summary_stays_under_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert_eq!(f.summary_room().unwrap(), Some(SUMMARY_LIMIT));
        f.append_summary("# hi\n").unwrap();
        assert_eq!(f.summary_room().unwrap(), Some(SUMMARY_LIMIT - 5));
        let big = "x".repeat(SUMMARY_LIMIT as usize);
        assert!(matches!(
            f.append_summary(&big),
            Err(GhaError::SummaryTooLarge { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("summary")).unwrap(),
            "# hi\n"
        );
    }

    #[test]
    fn without_files_nothing_is_written() {
        let f = Files::from_env(&Env::from_pairs(&[("GITHUB_OUTPUT", "")]));
        assert!(f.output.is_none());
        f.set_output("a", "b").unwrap();
        assert_eq!(f.summary_room().unwrap(), None);
    }
}
