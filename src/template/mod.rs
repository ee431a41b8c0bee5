//! Go `text/template` rendering with the semantics of the tool whose configuration the
//! template came from:
//!
//! - [`skaffold_expand`]: Skaffold's `util.ExpandEnvTemplate` for a ko artifact's `env`,
//!   `flags` and `ldflags` (environment plus `IMAGE_REPO`/`IMAGE_NAME`/`IMAGE_TAG`, `{{.Env.`
//!   rewritten to `{{.`, a missing key renders `<no value>`, Sprig functions);
//! - [`skaffold_expand_label`]: the same for `labels` (environment only, no rewrite);
//! - [`ko_expand`]: ko's `.ko.yaml` templating (`.Env`, `.GoEnv`, `.Git`, `.Date`,
//!   `.Timestamp`, `missingkey=error`, no extra functions);
//! - [`output_template`]: Skaffold's `--output` template over the build results.
//!
//! The engine is gotmpl; nothing outside this module depends on it. Configuration is only
//! semi-trusted, so every execution is bounded (`budget.rs`): 16 MiB of work, 10,000
//! `{{range}}` iterations, nesting 200 deep; going over fails with an error naming the limit.

mod budget;
mod funcs;
mod gotime;

pub use gotime::format_go_time;

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::parse::{Expr, ListNode, Node, Parser, PipeNode};
use gotmpl::{FuncMap, MissingKey, Template, Value};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `line`/`column` (1-based, in characters) point into the template as the user wrote it.
    #[error("unable to parse template {template:?}: {}{message}", at(*position))]
    Parse {
        template: String,
        position: Option<(usize, usize)>,
        message: String,
    },
    #[error("unable to execute template {template:?}: {message}")]
    Execute { template: String, message: String },
}

fn at(position: Option<(usize, usize)>) -> String {
    position.map_or(String::new(), |(line, column)| {
        format!("line {line}, column {column}: ")
    })
}

/// Go's `text/template` builtins, callable besides the registered functions.
const BUILTINS: [&str; 19] = [
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery",
];

/// The name templates are parsed under (`{{template "kobuild"}}` calls the whole text).
const NAME: &str = "kobuild";

/// Caps `{{range}}` iterations per execution; real templates iterate over a few builds. Each
/// iteration may cost as much as its body's functions (a `split` and `toJson` of a long
/// string, say): at 100,000 a template of a few hundred bytes found by fuzzing ran for
/// seconds, so the cap stays well below that.
const MAX_RANGE_ITERATIONS: u64 = 10_000;

/// How a key missing from a map behaves.
#[derive(Clone, Copy)]
enum Missing {
    /// Go's default: `<no value>` (Skaffold's env templates).
    NoValue,
    /// `missingkey=error` (ko).
    KeyError,
    /// The data is a Go struct in Skaffold, so a missing field is an error.
    FieldError,
}

struct Engine {
    funcs: FuncMap,
    missing: Missing,
}

/// Render `source` (the template after any rewriting) for the user's `original` text.
fn render(
    engine: Engine,
    original: &str,
    source: &str,
    data: &Value,
) -> Result<String, TemplateError> {
    let rewritten = original != source;
    let parse_error = |position: Option<(usize, usize)>, message: String| {
        let position = position.map(|(line, col)| {
            (
                line,
                if rewritten {
                    original_column(original, line, col)
                } else {
                    col
                },
            )
        });
        TemplateError::Parse {
            template: original.to_string(),
            position,
            message,
        }
    };
    let from_gotmpl = |e: gotmpl::TemplateError| match e {
        gotmpl::TemplateError::Lex {
            line, col, message, ..
        }
        | gotmpl::TemplateError::Parse {
            line, col, message, ..
        } => parse_error(Some((line, col)), message),
        other => parse_error(None, other.to_string()),
    };

    // Go rejects an unknown function when parsing; gotmpl only when executing it.
    let (tree, defines) = Parser::new(source, "{{", "}}")
        .and_then(Parser::parse)
        .map_err(from_gotmpl)?;
    let known = |name: &str| BUILTINS.contains(&name) || engine.funcs.contains_key(name);
    let unknown = undefined_function(&tree, &known).or_else(|| {
        defines
            .iter()
            .find_map(|d| undefined_function(&d.body, &known))
    });
    if let Some((name, offset)) = unknown {
        let (line, col) = line_column(source, offset);
        return Err(parse_error(
            Some((line, col)),
            format!("function {name:?} not defined"),
        ));
    }

    let meter = budget::Meter::new(budget::MAX_WORK);
    let template = Template::new(NAME)
        .max_range_iters(MAX_RANGE_ITERATIONS)
        .missing_key(match engine.missing {
            Missing::NoValue => MissingKey::Invalid,
            Missing::KeyError | Missing::FieldError => MissingKey::Error,
        })
        .funcs(budget::metered(engine.funcs, &meter))
        .parse(source)
        .map_err(from_gotmpl)?;
    let (template, named) = budget::instrument(template, NAME);
    let mut out = budget::Output::new(&meter);
    let executed = if named {
        template.execute_template_fmt(&mut out, NAME, data)
    } else {
        template.execute_fmt(&mut out, data)
    };
    match executed {
        Ok(()) => Ok(out.text),
        Err(e) => {
            let message = match e {
                _ if meter.exceeded() => budget::work_limit_message(),
                gotmpl::TemplateError::MissingKey { key } => match engine.missing {
                    Missing::FieldError => format!("can't evaluate field {key}"),
                    _ => format!("map has no entry for key {key:?}"),
                },
                gotmpl::TemplateError::RangeIterLimit => format!(
                    "range iteration budget exhausted (kobuild allows {MAX_RANGE_ITERATIONS} \
                     iterations per template): {}",
                    budget::ADVICE
                ),
                gotmpl::TemplateError::RecursionLimit => format!(
                    "recursion limit exceeded ({{{{template}}}}, {{{{if}}}}, {{{{with}}}} and \
                     {{{{range}}}} nest at most 200 deep): {}",
                    budget::ADVICE
                ),
                gotmpl::TemplateError::Exec(message) => message,
                other => other.to_string(),
            };
            Err(TemplateError::Execute {
                template: original.to_string(),
                message,
            })
        }
    }
}

/// 1-based line and character column of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Map a column in the rewritten template back to the user's text: every `{{.Env.` before
/// it on that line lost four characters (`Env.`).
fn original_column(original: &str, line: usize, col: usize) -> usize {
    let Some(text) = line
        .checked_sub(1)
        .and_then(|i| original.split('\n').nth(i))
    else {
        return col;
    };
    let mut extra = 0;
    for (k, (i, _)) in text.match_indices("{{.Env.").enumerate() {
        let rewritten_index = text[..i].chars().count() - 4 * k;
        if rewritten_index + 3 < col {
            extra += 4;
        }
    }
    col + extra
}

fn undefined_function<'a>(
    list: &'a ListNode,
    known: &dyn Fn(&str) -> bool,
) -> Option<(&'a str, usize)> {
    list.nodes.iter().find_map(|node| match node {
        Node::List(l) => undefined_function(l, known),
        Node::Action(a) => undefined_in_pipe(&a.pipe, known),
        Node::If(b) | Node::Range(b) | Node::With(b) => undefined_in_pipe(&b.pipe, known)
            .or_else(|| undefined_function(&b.body, known))
            .or_else(|| {
                b.else_body
                    .as_ref()
                    .and_then(|e| undefined_function(e, known))
            }),
        Node::Template(t) => t.pipe.as_ref().and_then(|p| undefined_in_pipe(p, known)),
        Node::Define(d) => undefined_function(&d.body, known),
        Node::Text(_) | Node::Break(_) | Node::Continue(_) => None,
    })
}

fn undefined_in_pipe<'a>(
    pipe: &'a PipeNode,
    known: &dyn Fn(&str) -> bool,
) -> Option<(&'a str, usize)> {
    fn expr<'a>(e: &'a Expr, known: &dyn Fn(&str) -> bool) -> Option<(&'a str, usize)> {
        match e {
            Expr::Identifier(pos, name) if !known(name) => Some((name.as_str(), pos.offset)),
            Expr::Pipe(_, p) => undefined_in_pipe(p, known),
            Expr::Chain(_, inner, _) => expr(inner, known),
            _ => None,
        }
    }
    pipe.commands
        .iter()
        .flat_map(|c| c.args.iter())
        .find_map(|e| expr(e, known))
}

fn string(s: &str) -> Value {
    Value::String(Arc::from(s))
}

fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Map(Arc::new(
        entries
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect(),
    ))
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    map(m.iter().map(|(k, v)| (k.as_str(), string(v))))
}

fn skaffold_engine(env: &BTreeMap<String, String>) -> Engine {
    let mut funcs = funcs::sprig(Arc::new(env.clone()));
    funcs::index_with_zero_values(&mut funcs);
    Engine {
        funcs,
        missing: Missing::NoValue,
    }
}

/// Skaffold's expansion of a ko artifact's `env`, `flags` and `ldflags` entries: the data is
/// `env` overlaid with `extra` (`IMAGE_REPO`, `IMAGE_NAME`, `IMAGE_TAG`; extra wins), the
/// exact text `{{.Env.` becomes `{{.` first, and a missing variable renders `<no value>`.
pub fn skaffold_expand(
    template: &str,
    env: &BTreeMap<String, String>,
    extra: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let mut data = env.clone();
    data.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let source = template.replace("{{.Env.", "{{.");
    render(skaffold_engine(env), template, &source, &string_map(&data))
}

/// Skaffold's expansion of a ko artifact's `labels` values: environment only, no
/// `IMAGE_*` variables and no `{{.Env.` rewrite.
pub fn skaffold_expand_label(
    template: &str,
    env: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    render(skaffold_engine(env), template, template, &string_map(env))
}

/// What Go's templates print for a missing map key by default.
pub const NO_VALUE: &str = "<no value>";

/// Go's zero `time.Time` in Unix seconds: ko's commit time outside a git repository.
pub const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// What ko's `git` helpers report for the build directory (`pkg/internal/git/info.go`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitInfo {
    pub branch: String,
    /// `git describe --tags --abbrev=0`; ko uses `v0.0.0` when there is no tag.
    pub tag: String,
    pub short_commit: String,
    pub full_commit: String,
    /// Commit time in Unix seconds.
    pub commit_timestamp: i64,
    pub dirty: bool,
}

/// Outside a git repository ko reports empty fields and the zero time.
impl Default for GitInfo {
    fn default() -> Self {
        GitInfo {
            branch: String::new(),
            tag: String::new(),
            short_commit: String::new(),
            full_commit: String::new(),
            commit_timestamp: GO_ZERO_TIME_UNIX,
            dirty: false,
        }
    }
}

/// The data of ko's templates (`createTemplateData`), filled by the caller, which runs `git`
/// and `go env`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KoTemplateData {
    /// The environment `go build` runs with; `LDFLAGS` is "" unless set, as in ko.
    pub env: BTreeMap<String, String>,
    /// `go env`; a key that `env` also sets takes env's value, as in ko.
    pub go_env: BTreeMap<String, String>,
    pub git: GitInfo,
    /// `SOURCE_DATE_EPOCH`, else the current time, in Unix seconds. `.Date` is its RFC 3339
    /// form in UTC (ko uses the host's zone).
    pub timestamp: i64,
}

impl KoTemplateData {
    fn to_value(&self) -> Value {
        let mut env = BTreeMap::from([("LDFLAGS".to_string(), String::new())]);
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let go_env: BTreeMap<String, String> = self
            .go_env
            .iter()
            .map(|(k, v)| (k.clone(), env.get(k).unwrap_or(v).clone()))
            .collect();
        let git = &self.git;
        let git = map([
            ("Branch", string(&git.branch)),
            ("Tag", string(&git.tag)),
            ("ShortCommit", string(&git.short_commit)),
            ("FullCommit", string(&git.full_commit)),
            (
                "CommitDate",
                string(&crate::time::format_unix(git.commit_timestamp)),
            ),
            ("CommitTimestamp", Value::Int(git.commit_timestamp)),
            ("IsDirty", Value::Bool(git.dirty)),
            ("IsClean", Value::Bool(!git.dirty)),
            (
                "TreeState",
                string(if git.dirty { "dirty" } else { "clean" }),
            ),
        ]);
        map([
            ("Env", string_map(&env)),
            ("GoEnv", string_map(&go_env)),
            ("Git", git),
            ("Date", string(&crate::time::format_unix(self.timestamp))),
            ("Timestamp", Value::Int(self.timestamp)),
        ])
    }
}

/// ko's expansion of one `.ko.yaml` `flags`/`ldflags` element: `missingkey=error`, Go's
/// builtins only.
pub fn ko_expand(template: &str, data: &KoTemplateData) -> Result<String, TemplateError> {
    let mut funcs = FuncMap::new();
    funcs::index_with_zero_values(&mut funcs);
    let engine = Engine {
        funcs,
        missing: Missing::KeyError,
    };
    render(engine, template, template, &data.to_value())
}

/// Skaffold's `--output` template (default `{{json .}}`) over the build results, each
/// `(imageName, tag)`: the raw `image` field and the full reference. `None` is a failed
/// build, which Skaffold writes as `{"builds":null}`. Fields are Go's (`.Builds`,
/// `.ImageName`, `.Tag`, `.RuntimeType`); `json` uses the JSON names.
pub fn output_template(
    template: &str,
    builds: Option<&[(String, String)]>,
) -> Result<String, TemplateError> {
    let builds = match builds {
        None => Value::Nil,
        Some(builds) => Value::List(
            builds
                .iter()
                .map(|(image, tag)| {
                    map([
                        ("ImageName", string(image)),
                        ("Tag", string(tag)),
                        ("RuntimeType", string("")),
                    ])
                })
                .collect(),
        ),
    };
    let engine = Engine {
        funcs: funcs::output(),
        missing: Missing::FieldError,
    };
    render(engine, template, template, &map([("Builds", builds)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_map_back_through_the_env_rewrite() {
        let t = "{{.Env.A}}-{{.Env.B}}-{{.X";
        let rewritten = t.replace("{{.Env.", "{{.");
        // The end of the rewritten text maps to the end of the original.
        let end = rewritten.chars().count() + 1;
        assert_eq!(original_column(t, 1, end), t.chars().count() + 1);
        assert_eq!(original_column(t, 1, 2), 2);
        assert_eq!(original_column(t, 2, 5), 5);
        assert_eq!(original_column(t, 0, 5), 5);
        assert_eq!(line_column("ab\ncé{{x", 6), (2, 3));
        assert_eq!(line_column("é", 1), (1, 1));
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/template.rs`, minimized, with that target's
    /// data): nested ranges whose innermost body splits and encodes a long string took seconds
    /// to exhaust a budget of 100,000 iterations; with 10,000 it fails in milliseconds.
    #[test]
    fn range_budget_bounds_expensive_bodies() {
        let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let env = pairs(&[
            ("VERSION", "1.2.3"),
            ("GITHUB_SHA", "abc123"),
            ("EMPTY", ""),
        ]);
        let extra = pairs(&[
            ("IMAGE_REPO", "gcr.io/proj"),
            ("IMAGE_NAME", "app"),
            ("IMAGE_TAG", "v1"),
        ]);
        let found = concat!(
            "{{- range (list. 1 2....3........3) }} {{range $}}js {{range $}}j..{{range $}} ",
            "{{range $}}j{co.}{{- range (list. 0 2 3) -}} {b/}}{{- range (list. 0 2 3) -}} ",
            "{{$}} {s,i)e{{split.Rupe \"\"\"\u{11}\0\0\u{6}\0",
            "MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM*****at *\" | toJson}}",
        );
        // The work budget (`budget.rs`) now stops it before the iteration budget does.
        let err = skaffold_expand(found, &env, &extra).unwrap_err();
        assert!(err.to_string().contains("work limit"), "{err}");
        let loop_of =
            |n: u64| skaffold_expand(&format!("{{{{range {n}}}}}{{{{end}}}}"), &env, &extra);
        assert!(loop_of(MAX_RANGE_ITERATIONS).is_ok());
        let err = loop_of(MAX_RANGE_ITERATIONS + 1).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "range iteration budget exhausted (kobuild allows 10000 iterations per \
                 template): {}",
                budget::ADVICE
            )),
            "{err}"
        );
    }
}
