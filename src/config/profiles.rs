//! Skaffold profiles (`pkg/skaffold/schema/profiles.go`): which profiles apply (named ones,
//! `-name` to drop an auto-activated one, activation by env/command/kube-context), the
//! overlay of a profile's pipeline onto the config, and JSON patches (krishicks/yaml-patch
//! semantics: each patch must apply to the config as it was before the profile's patches,
//! then all are applied in order).

use super::error::{ConfigErrorKind, Fault, Pos};
use super::yaml::{Entry, Fields, Kind, Node, index};
use crate::env::Env;

const PROFILE_FIELDS: &[&str] = &[
    "name",
    "activation",
    "requiresAllActivations",
    "patches",
    "build",
    "test",
    "manifests",
    "deploy",
    "portForward",
    "resourceSelector",
    "verify",
    "customActions",
];
const ACTIVATION_FIELDS: &[&str] = &["env", "kubeContext", "command"];
const PATCH_FIELDS: &[&str] = &["op", "path", "from", "value"];
const PATCH_OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test"];

/// Pipeline sections a profile may replace, besides `build` (handled field by field).
const LIST_SECTIONS: &[&str] = &["test", "portForward", "verify", "customActions"];
const STRUCT_SECTIONS: &[&str] = &["manifests", "deploy", "resourceSelector"];

/// One `activation` entry: the profile activates when all of its non-empty criteria match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activation {
    /// `KEY=pattern`; a leading `!` on the pattern negates it.
    pub env: String,
    pub kube_context: String,
    pub command: String,
}

/// A profile as declared (its content is applied to the configuration tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileInfo {
    pub name: String,
    pub activation: Vec<Activation>,
    pub requires_all_activations: bool,
    /// Index of the configuration (YAML document) declaring it.
    pub pipeline: usize,
    pub position: Pos,
    pub applied: bool,
}

/// What auto-activation compares against, as Skaffold's command line would supply it.
#[derive(Clone, Copy, Debug)]
pub struct ActivationContext<'a> {
    pub env: &'a Env,
    /// The Skaffold command kobuild stands in for, normally `build`.
    pub command: &'a str,
    /// The current kube-context; none in CI, which Skaffold treats as "".
    pub kube_context: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

#[derive(Clone, Debug)]
struct Patch {
    op: Op,
    path: String,
    from: String,
    value: Node,
    pos: Pos,
}

/// A parsed profile with the parts applied to the tree.
#[derive(Clone, Debug)]
pub(crate) struct Profile {
    pub info: ProfileInfo,
    sections: Vec<Entry>,
    patches: Vec<Patch>,
}

pub(crate) fn parse_profile(node: &Node, path: &str, pipeline: usize) -> Result<Profile, Fault> {
    let f = Fields::strict(node, path, PROFILE_FIELDS)?;
    let name = f.string("name")?;
    if name.is_empty() {
        return Err(Fault::invalid(node.pos, path, "a profile needs a name"));
    }
    let activation = f
        .list("activation")?
        .into_iter()
        .map(|(p, n)| {
            let a = Fields::strict(n, &p, ACTIVATION_FIELDS)?;
            Ok(Activation {
                env: a.string("env")?,
                kube_context: a.string("kubeContext")?,
                command: a.string("command")?,
            })
        })
        .collect::<Result<_, Fault>>()?;
    let patches = f
        .list("patches")?
        .into_iter()
        .map(|(p, n)| {
            let a = Fields::strict(n, &p, PATCH_FIELDS)?;
            let op = match a.string("op")?.as_str() {
                "" | "replace" => Op::Replace,
                "add" => Op::Add,
                "remove" => Op::Remove,
                "move" => Op::Move,
                "copy" => Op::Copy,
                "test" => Op::Test,
                other => {
                    return Err(Fault::invalid(
                        a.get("op").map_or(n.pos, |o| o.pos),
                        &a.path("op"),
                        format!(
                            "unknown op {other:?} (expected one of: {})",
                            PATCH_OPS.join(", ")
                        ),
                    ));
                }
            };
            let path = a.string("path")?;
            if path.is_empty() {
                return Err(Fault::invalid(n.pos, &p, "a patch needs a path"));
            }
            Ok(Patch {
                op,
                path,
                from: a.string("from")?,
                value: n
                    .get("value")
                    .cloned()
                    .unwrap_or_else(|| Node::new(Kind::Null, n.pos)),
                pos: n.pos,
            })
        })
        .collect::<Result<_, Fault>>()?;
    let sections = match &node.kind {
        Kind::Map(entries) => entries
            .iter()
            .filter(|e| {
                e.key == "build"
                    || LIST_SECTIONS.contains(&e.key.as_str())
                    || STRUCT_SECTIONS.contains(&e.key.as_str())
            })
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    Ok(Profile {
        info: ProfileInfo {
            name,
            activation,
            requires_all_activations: f.bool("requiresAllActivations")?,
            pipeline,
            position: node.pos,
            applied: false,
        },
        sections,
        patches,
    })
}

/// The profiles to apply to one configuration, in Skaffold's order: auto-activated ones (in
/// declaration order), then the named ones; `-name` removes a profile.
pub(crate) fn select(
    profiles: &[Profile],
    named: &[String],
    context: Option<&ActivationContext>,
    warnings: &mut Vec<String>,
) -> Result<Vec<usize>, (usize, String)> {
    let mut selected: Vec<usize> = Vec::new();
    if let Some(ctx) = context {
        for (i, p) in profiles.iter().enumerate() {
            if is_activated(&p.info, ctx, warnings).map_err(|e| (i, e))? {
                selected.push(i);
            }
        }
    }
    for name in named {
        if let Some(dropped) = name.strip_prefix('-') {
            selected.retain(|&i| profiles[i].info.name != dropped);
        } else if let Some(i) = profiles.iter().position(|p| &p.info.name == name)
            && !selected.contains(&i)
        {
            selected.push(i);
        }
    }
    Ok(selected)
}

fn is_activated(
    p: &ProfileInfo,
    ctx: &ActivationContext,
    warnings: &mut Vec<String>,
) -> Result<bool, String> {
    let mut results = Vec::new();
    for a in &p.activation {
        results.push(activation_matches(&p.name, a, ctx, warnings)?);
    }
    Ok(if p.requires_all_activations {
        !results.is_empty() && results.iter().all(|&r| r)
    } else {
        results.iter().any(|&r| r)
    })
}

fn activation_matches(
    profile: &str,
    a: &Activation,
    ctx: &ActivationContext,
    warnings: &mut Vec<String>,
) -> Result<bool, String> {
    let mut check = |pattern: &str, actual: &str| match regex_equal(pattern, actual) {
        Some(m) => m,
        None => {
            warnings.push(format!(
                "profile {profile:?}: activation pattern {pattern:?} is a regular expression, which kobuild does not evaluate; the condition counts as not met"
            ));
            false
        }
    };
    let env = if a.env.is_empty() {
        true
    } else {
        let Some((key, value)) = a.env.split_once('=') else {
            return Err(format!(
                "invalid env variable format: {}, should be KEY=VALUE",
                a.env
            ));
        };
        let actual = ctx.env.get(key).unwrap_or_default();
        // Skaffold: an empty pattern only matches an unset or empty variable.
        if value.is_empty() {
            actual.is_empty()
        } else {
            check(value, &actual)
        }
    };
    let command = a.command.is_empty() || check(&a.command, ctx.command);
    let kube =
        a.kube_context.is_empty() || check(&a.kube_context, ctx.kube_context.unwrap_or_default());
    Ok(env && command && kube)
}

/// Skaffold's `util.RegexEqual`: equal, or the pattern found in the value (`!` negates).
/// Patterns made of literal text, `.`, `^` and `$` are evaluated; `None` for other regular
/// expressions.
pub(crate) fn regex_equal(pattern: &str, actual: &str) -> Option<bool> {
    match pattern.strip_prefix('!') {
        Some(rest) => regex_found(rest, actual).map(|m| !m),
        None => regex_found(pattern, actual),
    }
}

fn regex_found(pattern: &str, actual: &str) -> Option<bool> {
    if pattern == actual {
        return Some(true);
    }
    let (start, body) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let (end, body) = match body.strip_suffix('$') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    if body.contains(|c| "\\+*?()|[]{}^$".contains(c)) {
        return None;
    }
    let pat: Vec<char> = body.chars().collect();
    let text: Vec<char> = actual.chars().collect();
    let matches_at = |i: usize| {
        text.len() >= i + pat.len()
            && (!end || text.len() == i + pat.len())
            && pat
                .iter()
                .zip(&text[i..])
                .all(|(p, t)| *p == *t || (*p == '.' && *t != '\n'))
    };
    let last = if start { 0 } else { text.len() };
    Some((0..=last).any(matches_at))
}

fn set(entries: &mut Vec<Entry>, key: &str, value: Node, key_pos: Pos) {
    match entries.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value,
        None => entries.push(Entry {
            key: key.to_string(),
            key_pos,
            value,
        }),
    }
}

const TAGGERS: &[&str] = &[
    "gitCommit",
    "sha256",
    "envTemplate",
    "dateTime",
    "customTemplate",
    "inputDigest",
];
const BUILD_TYPES: &[&str] = &["local", "googleCloudBuild", "cluster"];

/// `overlayProfileField` on `build`: lists replace when non-empty; `tagPolicy` and the build
/// type (`local`/`googleCloudBuild`/`cluster`) are one-of structs, replaced as a whole when
/// the profile sets any of their members.
fn overlay_build(base: Option<&Node>, profile: &Node, pos: Pos) -> Node {
    let mut entries = match base.map(|b| &b.kind) {
        Some(Kind::Map(e)) => e.clone(),
        _ => Vec::new(),
    };
    let Kind::Map(over) = &profile.kind else {
        return Node::new(Kind::Map(entries), base.map_or(pos, |b| b.pos));
    };
    let get = |key: &str| over.iter().find(|e| e.key == key);
    for key in ["artifacts", "insecureRegistries", "platforms"] {
        if let Some(e) = get(key).filter(|e| matches!(&e.value.kind, Kind::Seq(v) if !v.is_empty()))
        {
            set(&mut entries, key, e.value.clone(), e.key_pos);
        }
    }
    if let Some(e) = get("tagPolicy")
        && TAGGERS
            .iter()
            .any(|t| e.value.get(t).is_some_and(|n| !n.is_null()))
    {
        set(&mut entries, "tagPolicy", e.value.clone(), e.key_pos);
    }
    let chosen: Vec<&Entry> = BUILD_TYPES
        .iter()
        .filter_map(|t| get(t))
        .filter(|e| !e.value.is_null())
        .collect();
    if let Some(first) = chosen.first() {
        entries.retain(|e| !BUILD_TYPES.contains(&e.key.as_str()));
        entries.push((*first).clone());
    }
    Node::new(Kind::Map(entries), base.map_or(pos, |b| b.pos))
}

/// Apply one profile to a configuration document (without its `profiles`).
pub(crate) fn apply(doc: &mut Node, profile: &Profile) -> Result<(), Fault> {
    let name = &profile.info.name;
    let Kind::Map(entries) = &mut doc.kind else {
        return Ok(());
    };
    for section in &profile.sections {
        let key = section.key.as_str();
        let base = entries.iter().find(|e| e.key == key).map(|e| &e.value);
        let merged = if key == "build" {
            if section.value.is_null() {
                continue;
            }
            overlay_build(base, &section.value, section.key_pos)
        } else if LIST_SECTIONS.contains(&key) {
            if !section.value.non_empty() {
                continue;
            }
            section.value.clone()
        } else {
            // Struct sections: their fields (mostly pointers and lists) replace when set.
            let mut merged = match base.map(|b| &b.kind) {
                Some(Kind::Map(e)) => e.clone(),
                _ => Vec::new(),
            };
            let Kind::Map(over) = &section.value.kind else {
                continue;
            };
            for e in over.iter().filter(|e| e.value.non_empty()) {
                set(&mut merged, &e.key, e.value.clone(), e.key_pos);
            }
            Node::new(Kind::Map(merged), section.value.pos)
        };
        set(entries, key, merged, section.key_pos);
    }

    let fail = |i: usize, p: &Patch, reason: String| {
        Fault::at(
            p.pos,
            ConfigErrorKind::Profile {
                profile: name.clone(),
                message: format!("{}: {reason}", index("patches", i)),
            },
        )
    };
    for (i, p) in profile.patches.iter().enumerate() {
        let mut scratch = doc.clone();
        patch(&mut scratch, p).map_err(|reason| fail(i, p, reason))?;
    }
    for (i, p) in profile.patches.iter().enumerate() {
        patch(doc, p).map_err(|reason| fail(i, p, reason))?;
    }
    Ok(())
}

/// RFC 6901 pointer tokens (`~1` is `/`, `~0` is `~`).
fn pointer(path: &str) -> Result<Vec<String>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("invalid path {path:?}: it must start with /"));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn seq_index(token: &str, len: usize) -> Option<usize> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok().filter(|&i| i < len)
}

fn lookup<'a>(node: &'a mut Node, tokens: &[String]) -> Option<&'a mut Node> {
    let mut node = node;
    for token in tokens {
        node = match &mut node.kind {
            Kind::Map(entries) => &mut entries.iter_mut().find(|e| &e.key == token)?.value,
            Kind::Seq(items) => {
                let i = seq_index(token, items.len())?;
                &mut items[i]
            }
            _ => return None,
        };
    }
    Some(node)
}

fn add(doc: &mut Node, path: &str, value: Node) -> Result<(), String> {
    let tokens = pointer(path)?;
    let missing = || format!("invalid path {path:?}: no such element");
    let (last, parent) = tokens.split_last().ok_or_else(missing)?;
    let parent = lookup(doc, parent).ok_or_else(missing)?;
    match &mut parent.kind {
        Kind::Map(entries) => set(entries, last, value.clone(), value.pos),
        Kind::Seq(items) if last == "-" => items.push(value),
        Kind::Seq(items) => {
            let i = seq_index(last, items.len() + 1).ok_or_else(missing)?;
            items.insert(i, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Node, path: &str) -> Result<Node, String> {
    let tokens = pointer(path)?;
    let missing = || format!("invalid path {path:?}: no such element");
    let (last, parent) = tokens.split_last().ok_or_else(missing)?;
    let parent = lookup(doc, parent).ok_or_else(missing)?;
    match &mut parent.kind {
        Kind::Map(entries) => {
            let i = entries
                .iter()
                .position(|e| &e.key == last)
                .ok_or_else(missing)?;
            Ok(entries.remove(i).value)
        }
        Kind::Seq(items) => {
            let i = seq_index(last, items.len()).ok_or_else(missing)?;
            Ok(items.remove(i))
        }
        _ => Err(missing()),
    }
}

fn get(doc: &mut Node, path: &str) -> Result<Node, String> {
    let tokens = pointer(path)?;
    lookup(doc, &tokens)
        .map(|n| n.clone())
        .ok_or_else(|| format!("invalid path {path:?}: no such element"))
}

fn patch(doc: &mut Node, p: &Patch) -> Result<(), String> {
    match p.op {
        Op::Add => add(doc, &p.path, p.value.clone()),
        Op::Remove => remove(doc, &p.path).map(drop),
        Op::Replace => {
            let tokens = pointer(&p.path)?;
            let target = lookup(doc, &tokens)
                .ok_or_else(|| format!("invalid path {:?}: no such element", p.path))?;
            *target = p.value.clone();
            Ok(())
        }
        Op::Move => {
            let value = remove(doc, &p.from)?;
            add(doc, &p.path, value)
        }
        Op::Copy => {
            let value = get(doc, &p.from)?;
            add(doc, &p.path, value)
        }
        Op::Test => {
            if get(doc, &p.path)?.same(&p.value) {
                Ok(())
            } else {
                Err(format!(
                    "test failed: {:?} does not hold the given value",
                    p.path
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse_documents;

    fn doc(text: &str) -> Node {
        parse_documents(text).unwrap().remove(0)
    }

    #[test]
    fn regex_subset() {
        let cases = [
            ("production", "production", Some(true)),
            ("prod", "production", Some(true)),
            ("!prod", "production", Some(false)),
            ("^prod$", "production", Some(false)),
            ("^prod", "production", Some(true)),
            ("ion$", "production", Some(true)),
            ("1.2", "1x2", Some(true)),
            ("true", "untrue", Some(true)),
            ("!minikube", "", Some(true)),
            ("dev|prod", "dev", None),
            ("a+", "aa", None),
        ];
        for (pattern, actual, want) in cases {
            assert_eq!(regex_equal(pattern, actual), want, "{pattern} ~ {actual}");
        }
    }

    #[test]
    fn json_patch_ops() {
        let mut d = doc("a: {b: [1, 2]}\nc: x\n");
        let v = doc("9");
        add(&mut d, "/a/b/-", v.clone()).unwrap();
        add(&mut d, "/a/b/0", v.clone()).unwrap();
        assert!(add(&mut d, "/a/b/9", v.clone()).is_err());
        add(&mut d, "/a/n~1m", v.clone()).unwrap();
        assert!(d.get("a").unwrap().get("n/m").is_some());
        assert_eq!(remove(&mut d, "/c").unwrap().pos.line, 2);
        assert!(remove(&mut d, "/c").is_err());
        assert!(add(&mut d, "/missing/x", v.clone()).is_err());
        assert!(pointer("a/b").is_err());
        let b = d.get("a").unwrap().get("b").unwrap();
        assert!(matches!(&b.kind, Kind::Seq(items) if items.len() == 4));
    }
}
