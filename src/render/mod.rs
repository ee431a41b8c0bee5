//! `kobuild render`: put built images into Kubernetes manifests without touching anything else.
//!
//! Values of `image` keys at any depth are matched by Skaffold's rule, and every `ko://` string
//! is a placeholder by ko's rule ([`images`]). Replacement splices new scalar text into the
//! original files ([`manifest`]), so comments, order, quoting and layout survive byte for byte.

mod images;
mod manifest;
mod skaffold;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use images::ImageMap;
pub use manifest::{find_ko_references, render_text};

use crate::cli::RenderArgs;
use crate::env::Env;
use crate::fsutil::{self, WriteError, write_atomic};

/// How stdin is named in messages.
const STDIN: &str = "<stdin>";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{file}:{line}:{col}: {message}")]
    Yaml {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error(
        "{file}:{line}:{col}: {reference} has no built image: build it first or pass --images {reference}=REF"
    )]
    Unresolved {
        file: String,
        line: usize,
        col: usize,
        reference: String,
    },
    #[error("{file}: invalid build artifacts: {message}")]
    Artifacts { file: String, message: String },
    #[error("--images {flag}: {message}")]
    ImagesFlag { flag: String, message: String },
    #[error("{0}: no such file or directory")]
    Missing(String),
    #[error(
        "{0}: a kustomization, which kobuild render does not build: pipe its output in instead (`kustomize build DIR | kobuild render -f -`)"
    )]
    Kustomization(String),
    #[error(
        "no manifests: give them with -f PATH, or run where a skaffold.yaml is (its manifests section is rendered)"
    )]
    NoInput,
    /// The skaffold.yaml could not be read; the message names FILE:LINE:COL.
    #[error("{0}")]
    Skaffold(String),
    #[error(
        "{at}: {field}: kobuild render reads rawYaml and kustomize only: render this one with its own tool and pipe it in (`... | kobuild render -f -`)"
    )]
    Renderer { at: String, field: String },
    #[error(
        "{0}: manifests.kustomize needs kustomize or kubectl on PATH: install one, or pipe `kustomize build` output to `kobuild render -f -`"
    )]
    NoKustomize(String),
    #[error("{dir}: {message}")]
    Kustomize { dir: String, message: String },
    #[error("{0}: not UTF-8 text")]
    NotUtf8(String),
    #[error("stdin can be read only once: it is both a manifest (-f -) and --build-artifacts -")]
    StdinTwice,
    /// Past the input limit: bad input, not a failing read.
    #[error("{file}: {source}; split it into smaller files")]
    TooLarge {
        file: String,
        source: std::io::Error,
    },
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("cannot write {file}: {source}")]
    Write {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] WriteError),
}

impl RenderError {
    /// Names the file for errors found in text parsed without one (`find_ko_references`).
    pub fn in_file(self, name: &str) -> RenderError {
        match self {
            RenderError::Yaml {
                line, col, message, ..
            } => RenderError::Yaml {
                file: name.to_string(),
                line,
                col,
                message,
            },
            other => other,
        }
    }

    /// Bad input (manifests, artifacts, flags) rather than a failing read or write.
    pub fn is_config(&self) -> bool {
        !matches!(
            self,
            RenderError::Read { .. } | RenderError::Write { .. } | RenderError::Output(_)
        )
    }
}

/// A manifest input, in command-line order.
enum Input {
    Stdin,
    File(PathBuf),
    /// A renderer's output (`kustomize build DIR`), named for messages.
    Generated {
        name: String,
        text: String,
    },
}

/// Runs `kobuild render`: the result goes to `--output` (atomically, and only when everything
/// rendered) or to stdout (also for `-o -`).
pub fn run(args: &RenderArgs, env: &Env, cwd: &Path) -> Result<(), RenderError> {
    let rendered = render(args, env, cwd, &mut std::io::stdin().lock())?;
    match args.output.as_deref().filter(|p| *p != Path::new("-")) {
        Some(path) => write_atomic(path, rendered.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            let written = out
                .write_all(rendered.as_bytes())
                .and_then(|()| out.flush());
            // A closed stdout (e.g. `| head`) is the reader's choice, not a failure.
            if let Err(source) = written
                && source.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(RenderError::Write {
                    file: "<stdout>".into(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The rendered text of every input, in order, documents of different files separated by
/// `---` lines. A skaffold.yaml given with `-f` (or found in `cwd` when there is no `-f`)
/// stands for the manifests it names.
pub fn render(
    args: &RenderArgs,
    env: &Env,
    cwd: &Path,
    stdin: &mut dyn Read,
) -> Result<String, RenderError> {
    let dash = Path::new("-");
    if args.build_artifacts.as_deref() == Some(dash) && args.files.iter().any(|f| f == dash) {
        return Err(RenderError::StdinTwice);
    }
    let mut images = ImageMap::new();
    for flag in &args.images {
        images
            .insert_flag(flag)
            .map_err(|message| RenderError::ImagesFlag {
                flag: flag.clone(),
                message,
            })?;
    }
    // Loaded after the flags: Skaffold lets file entries win.
    if let Some(path) = &args.build_artifacts {
        let (file, bytes) = read(&input(path), stdin, fsutil::MAX_CONFIG_BYTES)?;
        images
            .insert_artifacts_json(&bytes)
            .map_err(|message| RenderError::Artifacts { file, message })?;
    }
    // Skaffold renders a kustomization through kustomize; its files alone are a bare patch.
    for path in &args.files {
        if path != dash
            && let Some(k) = kustomization_in(&cwd.join(path), args.recursive)?
        {
            return Err(RenderError::Kustomization(k.display().to_string()));
        }
    }
    let mut out = String::new();
    for input in manifest_inputs(args, env, cwd)? {
        let (file, bytes) = read(&input, stdin, fsutil::MAX_MANIFEST_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| RenderError::NotUtf8(file.clone()))?;
        let rendered = render_text(&file, &text, &images, args.allow_unresolved)?;
        append_file(&mut out, &rendered);
    }
    Ok(out)
}

/// What `-f` names, a skaffold.yaml among it expanded; with no `-f`, ./skaffold.yaml's
/// manifests.
fn manifest_inputs(args: &RenderArgs, env: &Env, cwd: &Path) -> Result<Vec<Input>, RenderError> {
    if args.files.is_empty() {
        let file = cwd.join("skaffold.yaml");
        if !file.is_file() {
            return Err(RenderError::NoInput);
        }
        return skaffold::inputs(&file, &args.profile.profiles, env);
    }
    let mut out = Vec::new();
    for path in &args.files {
        let full = if path == Path::new("-") {
            path.clone()
        } else {
            cwd.join(path)
        };
        if skaffold::is_config(&full) {
            out.extend(skaffold::inputs(&full, &args.profile.profiles, env)?);
        } else {
            out.extend(inputs(std::slice::from_ref(&full), args.recursive)?);
        }
    }
    Ok(out)
}

/// Every input's name and text, in order: for `resolve`, which builds what the `ko://`
/// references name before rendering.
pub fn read_inputs(
    paths: &[PathBuf],
    recursive: bool,
    stdin: &mut dyn Read,
) -> Result<Vec<(String, String)>, RenderError> {
    let mut out = Vec::new();
    for input in inputs(paths, recursive)? {
        let (file, bytes) = read(&input, stdin, fsutil::MAX_MANIFEST_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| RenderError::NotUtf8(file.clone()))?;
        out.push((file, text));
    }
    Ok(out)
}

/// The rendered texts joined as `render` joins files.
pub fn join(rendered: &[String]) -> String {
    let mut out = String::new();
    for text in rendered {
        append_file(&mut out, text);
    }
    out
}

fn input(path: &Path) -> Input {
    if path == Path::new("-") {
        Input::Stdin
    } else {
        Input::File(path.to_path_buf())
    }
}

/// Files, directories (their .yaml, .yml and .json files by name, subdirectories only when
/// `recursive`) and stdin, expanded in order.
fn inputs(paths: &[PathBuf], recursive: bool) -> Result<Vec<Input>, RenderError> {
    let mut out = Vec::new();
    for path in paths {
        match input(path) {
            Input::File(path) if metadata(&path)?.is_dir() => walk(&path, recursive, &mut out)?,
            input => out.push(input),
        }
    }
    Ok(out)
}

/// The kustomization file in directory `path` (or below it when `recursive`), if any.
fn kustomization_in(path: &Path, recursive: bool) -> Result<Option<PathBuf>, RenderError> {
    if !metadata(path)?.is_dir() {
        return Ok(None);
    }
    for name in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
        if path.join(name).is_file() {
            return Ok(Some(path.join(name)));
        }
    }
    if recursive {
        let entries = std::fs::read_dir(path)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|e| io_error(path, e))?;
        for entry in entries {
            let file_type = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
            if file_type.is_dir()
                && let Some(k) = kustomization_in(&entry.path(), true)?
            {
                return Ok(Some(k));
            }
        }
    }
    Ok(None)
}

fn metadata(path: &Path) -> Result<std::fs::Metadata, RenderError> {
    std::fs::metadata(path).map_err(|e| io_error(path, e))
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<Input>) -> Result<(), RenderError> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io_error(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        // Like ko's filepath.Walk: symlinks to directories are not followed, so no loops.
        let file_type = entry.file_type().map_err(|e| io_error(&path, e))?;
        if file_type.is_dir() {
            if recursive {
                walk(&path, recursive, out)?;
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) && metadata(&path)?.is_file()
        {
            out.push(Input::File(path));
        }
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> RenderError {
    let file = path.display().to_string();
    match source.kind() {
        std::io::ErrorKind::NotFound => RenderError::Missing(file),
        std::io::ErrorKind::FileTooLarge => RenderError::TooLarge { file, source },
        _ => RenderError::Read { file, source },
    }
}

/// The name to use in messages, and at most `limit` bytes.
fn read(input: &Input, stdin: &mut dyn Read, limit: u64) -> Result<(String, Vec<u8>), RenderError> {
    match input {
        Input::Stdin => {
            let bytes = fsutil::read_all_bounded(stdin, limit)
                .map_err(|e| io_error(Path::new(STDIN), e))?;
            Ok((STDIN.into(), bytes))
        }
        Input::File(path) => {
            let bytes = fsutil::read_bounded(path, limit).map_err(|e| io_error(path, e))?;
            Ok((path.display().to_string(), bytes))
        }
        Input::Generated { name, text } => Ok((name.clone(), text.clone().into_bytes())),
    }
}

/// Appends one file's text after a `---` line, as Skaffold separates documents ("\n---\n").
/// Before a file that starts with directives (`%YAML`), the separator is `...` instead: a
/// directive may only follow a document end.
fn append_file(out: &mut String, text: &str) {
    if text.is_empty() {
        return;
    }
    if !out.is_empty() {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(if starts_with_directive(text) {
            "...\n"
        } else {
            "---\n"
        });
    }
    out.push_str(text);
}

fn starts_with_directive(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim_start)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .is_some_and(|line| line.starts_with('%'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(files: &[&str]) -> String {
        let mut out = String::new();
        for f in files {
            append_file(&mut out, f);
        }
        out
    }

    #[test]
    fn separates_files_like_skaffold() {
        assert_eq!(joined(&["a: 1\n", "b: 2"]), "a: 1\n---\nb: 2");
        assert_eq!(joined(&["a: 1", "b: 2\n"]), "a: 1\n---\nb: 2\n");
        assert_eq!(joined(&["", "a: 1\n", "", "b: 2\n"]), "a: 1\n---\nb: 2\n");
        assert_eq!(
            joined(&["a: 1\n", "# c\n%YAML 1.2\n---\nb: 2\n"]),
            "a: 1\n...\n# c\n%YAML 1.2\n---\nb: 2\n"
        );
    }

    #[test]
    fn exit_codes() {
        let io = || std::io::Error::other("x");
        assert!(RenderError::Missing("f".into()).is_config());
        assert!(RenderError::StdinTwice.is_config());
        assert!(RenderError::Kustomization("k".into()).is_config());
        assert!(
            !RenderError::Read {
                file: "f".into(),
                source: io()
            }
            .is_config()
        );
        assert!(
            !RenderError::Write {
                file: "f".into(),
                source: io()
            }
            .is_config()
        );
    }
}
