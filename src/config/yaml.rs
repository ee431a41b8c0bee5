//! YAML documents as a tree that keeps every node's position, so configuration errors can
//! name `FILE:LINE:COL` and the field path, and profile patches can edit any section.
//!
//! Built from the granit parser's events (re-exported by serde-saphyr). Scalars keep their
//! source text and whether they were plain, because the schema decides their type, as Go's
//! yaml.v3 does when decoding into typed fields. Anchors, aliases and `<<` merge keys are
//! resolved; duplicate keys are errors (as in yaml.v3). Nesting and alias expansion are
//! bounded, so hostile input fails cleanly.

use std::collections::{BTreeMap, HashMap};

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle};

use super::error::{ConfigErrorKind, Fault, Pos};

/// Deeper nesting than any configuration needs, shallow enough for recursive walks.
const MAX_DEPTH: usize = 128;
/// Caps nodes, counting every alias expansion, against "billion laughs" documents.
const MAX_NODES: usize = 200_000;

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Null,
    /// `plain`: written without quotes, block style or a `!!str` tag, so it may be read
    /// as a boolean or a number.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    pub fn new(kind: Kind, pos: Pos) -> Node {
        Node { kind, pos }
    }

    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// Whether it holds anything: not null, an empty list, mapping or string.
    pub fn non_empty(&self) -> bool {
        match &self.kind {
            Kind::Null => false,
            Kind::Seq(items) => !items.is_empty(),
            Kind::Map(entries) => !entries.is_empty(),
            Kind::Scalar { text, .. } => !text.is_empty(),
        }
    }

    /// The entry for `key` when this is a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The value of `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// Structural equality, ignoring positions and quoting (JSON patch `test`).
    pub fn same(&self, other: &Node) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Null, Kind::Null) => true,
            (Kind::Scalar { text: a, .. }, Kind::Scalar { text: b, .. }) => a == b,
            (Kind::Seq(a), Kind::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Kind::Map(a), Kind::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|e| b.iter().any(|f| f.key == e.key && f.value.same(&e.value)))
            }
            _ => false,
        }
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        depth: usize,
        size: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        /// Key -> its index in `entries`: the duplicate check stays linear in the keys.
        seen: HashMap<String, usize>,
        key: Option<(String, Pos, bool)>,
        merges: Vec<Node>,
        depth: usize,
        size: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize, usize)>,
    nodes: usize,
    documents: Vec<Node>,
}

fn syntax(pos: Pos, message: impl Into<String>) -> Fault {
    Fault::at(pos, ConfigErrorKind::Syntax(message.into()))
}

impl Builder {
    fn count(&mut self, n: usize, pos: Pos) -> Result<(), Fault> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(syntax(
                pos,
                format!("document too large (more than {MAX_NODES} nodes after expanding aliases)"),
            ));
        }
        Ok(())
    }

    /// Attach a finished node (of the given depth and size) to the open collection.
    fn attach(
        &mut self,
        node: Node,
        anchor: usize,
        depth: usize,
        size: usize,
    ) -> Result<(), Fault> {
        if self.stack.len() + depth > MAX_DEPTH {
            return Err(syntax(
                node.pos,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), depth, size));
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq {
                items,
                depth: d,
                size: s,
                ..
            }) => {
                *d = (*d).max(depth + 1);
                *s += size;
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                seen,
                key,
                merges,
                depth: d,
                size: s,
                ..
            }) => {
                *d = (*d).max(depth + 1);
                *s += size;
                match key.take() {
                    None => {
                        let (text, plain) = match node.kind {
                            Kind::Scalar { text, plain } => (text, plain),
                            // A null key (`~:` or a bare `?`) reads as the empty key.
                            Kind::Null => (String::new(), true),
                            _ => return Err(syntax(node.pos, "mapping keys must be scalars")),
                        };
                        *key = Some((text, node.pos, plain));
                    }
                    Some((k, key_pos, plain)) => {
                        if plain && k == "<<" {
                            merges.push(node);
                        } else if let Some(&first) = seen.get(&k) {
                            return Err(syntax(
                                key_pos,
                                format!(
                                    "mapping key {k:?} already defined at line {}",
                                    entries[first].key_pos.line
                                ),
                            ));
                        } else {
                            seen.insert(k.clone(), entries.len());
                            entries.push(Entry {
                                key: k,
                                key_pos,
                                value: node,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), Fault> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let (node, anchor, depth, size) = match frame {
            Frame::Seq {
                pos,
                anchor,
                items,
                depth,
                size,
            } => (Node::new(Kind::Seq(items), pos), anchor, depth, size),
            Frame::Map {
                pos,
                anchor,
                mut entries,
                mut seen,
                merges,
                depth,
                size,
                ..
            } => {
                // Explicit keys win over merged ones; earlier merge sources over later ones.
                for merge in merges {
                    let sources = match merge.kind {
                        Kind::Seq(items) => items,
                        _ => vec![merge],
                    };
                    for source in sources {
                        let Kind::Map(merged) = source.kind else {
                            return Err(syntax(
                                source.pos,
                                "a merge key (<<) needs a mapping or a list of mappings",
                            ));
                        };
                        for entry in merged {
                            if !seen.contains_key(&entry.key) {
                                seen.insert(entry.key.clone(), entries.len());
                                entries.push(entry);
                            }
                        }
                    }
                }
                (Node::new(Kind::Map(entries), pos), anchor, depth, size)
            }
        };
        self.attach(node, anchor, depth, size)
    }
}

fn scalar(text: &str, style: ScalarStyle, tagged_str: bool, tagged_null: bool, pos: Pos) -> Node {
    let plain = style == ScalarStyle::Plain && !tagged_str;
    if tagged_null || (plain && matches!(text, "" | "~" | "null" | "Null" | "NULL")) {
        Node::new(Kind::Null, pos)
    } else {
        Node::new(
            Kind::Scalar {
                text: text.to_string(),
                plain,
            },
            pos,
        )
    }
}

/// Parse every document of a YAML stream. Empty documents are left out.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, Fault> {
    let mut options = Options::default();
    options.set_emit_comments(false);
    let parser = Parser::new_from_str_with_options(text, options);
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        documents: Vec::new(),
    };
    for event in parser {
        let (event, span) = event.map_err(|e| {
            let pos = Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            };
            syntax(pos, e.info())
        })?;
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                b.count(1, pos)?;
                let (tagged_str, tagged_null) = tag.as_ref().map_or((false, false), |t| {
                    (
                        t.is_yaml_core_schema_tag("str"),
                        t.is_yaml_core_schema_tag("null"),
                    )
                });
                let node = scalar(&text, style, tagged_str, tagged_null, pos);
                b.attach(node, anchor, 1, 1)?;
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                b.count(1, pos)?;
                if b.stack.len() >= MAX_DEPTH {
                    return Err(syntax(
                        pos,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                    ));
                }
                b.stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                        depth: 1,
                        size: 1,
                    }
                } else {
                    Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        seen: HashMap::new(),
                        key: None,
                        merges: Vec::new(),
                        depth: 1,
                        size: 1,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => b.close()?,
            Event::Alias(id) => {
                let Some((node, depth, size)) = b.anchors.get(&id).cloned() else {
                    return Err(syntax(pos, "alias to an anchor that is not complete here"));
                };
                b.count(size, pos)?;
                b.attach(node, 0, depth, size)?;
            }
            _ => {}
        }
    }
    Ok(b.documents)
}

/// `(key, position)` → field-path helpers for the typed readers below.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn type_error(node: &Node, path: &str, expected: &'static str) -> Fault {
    Fault::at(
        node.pos,
        ConfigErrorKind::Type {
            path: path.to_string(),
            expected,
            found: node.describe(),
        },
    )
}

/// A mapping whose keys must all be known (Skaffold decodes strictly).
pub(crate) struct Fields<'a> {
    node: &'a Node,
    path: String,
}

impl<'a> Fields<'a> {
    pub fn strict(
        node: &'a Node,
        path: &str,
        allowed: &[&'static str],
    ) -> Result<Fields<'a>, Fault> {
        match &node.kind {
            Kind::Null => {}
            Kind::Map(entries) => {
                if let Some(e) = entries.iter().find(|e| !allowed.contains(&e.key.as_str())) {
                    return Err(Fault::at(
                        e.key_pos,
                        ConfigErrorKind::UnknownField {
                            field: e.key.clone(),
                            path: path.to_string(),
                            expected: allowed.to_vec(),
                        },
                    ));
                }
            }
            _ => return Err(type_error(node, path, "a mapping")),
        }
        Ok(Fields {
            node,
            path: path.to_string(),
        })
    }

    /// The value of `key`, unless absent or null (yaml.v3 leaves such fields unset).
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.node.get(key).filter(|n| !n.is_null())
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn string(&self, key: &str) -> Result<String, Fault> {
        Ok(self.opt_string(key)?.unwrap_or_default())
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>, Fault> {
        self.get(key)
            .map(|n| string(n, &self.path(key)))
            .transpose()
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>, Fault> {
        Ok(self.opt_strings(key)?.unwrap_or_default())
    }

    pub fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>, Fault> {
        self.get(key)
            .map(|n| strings(n, &self.path(key)))
            .transpose()
    }

    pub fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, Fault> {
        match self.get(key) {
            None => Ok(BTreeMap::new()),
            Some(n) => string_map(n, &self.path(key)),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, Fault> {
        Ok(self.opt_bool(key)?.unwrap_or(false))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, Fault> {
        self.get(key)
            .map(|n| boolean(n, &self.path(key)))
            .transpose()
    }

    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, Fault> {
        self.get(key)
            .map(|n| integer(n, &self.path(key)))
            .transpose()
    }

    /// The elements of a list field, with their paths.
    pub fn list(&self, key: &str) -> Result<Vec<(String, &'a Node)>, Fault> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(n) => match &n.kind {
                Kind::Seq(items) => Ok(items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (index(&path, i), n))
                    .collect()),
                _ => Err(type_error(n, &path, "a list")),
            },
        }
    }
}

/// A string field: any scalar's text (yaml.v3 keeps `1.10` as written); null is "".
pub(crate) fn string(node: &Node, path: &str) -> Result<String, Fault> {
    match &node.kind {
        Kind::Null => Ok(String::new()),
        Kind::Scalar { text, .. } => Ok(text.clone()),
        _ => Err(type_error(node, path, "a string")),
    }
}

pub(crate) fn strings(node: &Node, path: &str) -> Result<Vec<String>, Fault> {
    match &node.kind {
        Kind::Null => Ok(Vec::new()),
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| string(n, &index(path, i)))
            .collect(),
        _ => Err(type_error(node, path, "a list of strings")),
    }
}

pub(crate) fn string_map(node: &Node, path: &str) -> Result<BTreeMap<String, String>, Fault> {
    match &node.kind {
        Kind::Null => Ok(BTreeMap::new()),
        Kind::Map(entries) => entries
            .iter()
            .map(|e| Ok((e.key.clone(), string(&e.value, &join(path, &e.key))?)))
            .collect(),
        _ => Err(type_error(node, path, "a mapping of strings")),
    }
}

/// yaml.v3 reads YAML 1.1 spellings (`yes`, `off`…) into typed booleans.
pub(crate) fn boolean(node: &Node, path: &str) -> Result<bool, Fault> {
    if let Kind::Scalar { text, plain: true } = &node.kind {
        match text.as_str() {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "y" | "Y" | "on" | "On" | "ON" => {
                return Ok(true);
            }
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "n" | "N" | "off" | "Off"
            | "OFF" => return Ok(false),
            _ => {}
        }
    }
    Err(type_error(node, path, "a boolean"))
}

pub(crate) fn integer(node: &Node, path: &str) -> Result<i64, Fault> {
    if let Kind::Scalar { text, plain: true } = &node.kind {
        let t = text.replace('_', "");
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(&t)),
        };
        let (radix, body) = if let Some(hex) = digits.strip_prefix("0x") {
            (16, hex)
        } else if let Some(oct) = digits.strip_prefix("0o") {
            (8, oct)
        } else {
            (10, digits)
        };
        if !body.is_empty()
            && body.chars().all(|c| c.is_digit(radix))
            && let Ok(n) = i64::from_str_radix(body, radix)
        {
            return Ok(if negative { -n } else { n });
        }
    }
    Err(type_error(node, path, "an integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        let mut docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    #[test]
    fn positions_scalars_and_nulls() {
        let d = doc("a: 1.10\nb: \"null\"\nc: ~\nd:\n  - x\n  - 'y'\n");
        let a = d.get("a").unwrap();
        assert!(matches!(&a.kind, Kind::Scalar { text, plain: true } if text == "1.10"));
        assert_eq!((a.pos.line, a.pos.column), (1, 4));
        assert!(matches!(
            &d.get("b").unwrap().kind,
            Kind::Scalar { plain: false, .. }
        ));
        assert!(d.get("c").unwrap().is_null());
        assert_eq!(strings(d.get("d").unwrap(), "d").unwrap(), ["x", "y"]);
        assert_eq!(d.get("d").unwrap().pos.line, 5);
    }

    #[test]
    fn anchors_merges_and_duplicates() {
        let d = doc("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nlist: [*b]\n");
        let used = d.get("use").unwrap();
        assert_eq!(string(used.get("x").unwrap(), "").unwrap(), "1");
        assert_eq!(string(used.get("y").unwrap(), "").unwrap(), "3");
        assert!(matches!(&d.get("list").unwrap().kind, Kind::Seq(v) if v.len() == 1));

        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.map(|p| p.line), Some(3));
        assert!(err.kind.to_string().contains("already defined at line 1"));
    }

    #[test]
    fn many_keys_parse_in_linear_time() {
        // 100k keys took minutes while each key was compared with every earlier one.
        let text: String = (0..100_000).map(|i| format!("k{i}: v\n")).collect();
        let start = std::time::Instant::now();
        let err = parse_documents(&text).unwrap_err();
        assert!(format!("{err:?}").contains("200000 nodes"), "{err:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn hostile_documents_fail_cleanly() {
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n\
            b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
            c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
            d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
            e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n\
            f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        assert!(parse_documents(laughs).is_err());
        assert!(parse_documents(&"[".repeat(10_000)).is_err());
        assert!(parse_documents("a: &a [*a]\n").is_err());
        assert!(parse_documents("? [a]\n: b\n").is_err());
        assert!(parse_documents("a: b: c\n").is_err());
        let mut nested = String::from("x: &x0 [1]\n");
        for i in 1..200 {
            nested.push_str(&format!("x{i}: &x{i} [[[*x{}]]]\n", i - 1));
        }
        assert!(parse_documents(&nested).is_err());
    }

    #[test]
    fn typed_readers() {
        let d = doc("t: yes\nf: 'true'\nn: 0x1F\nm: -12\nbad: 1.5\nmap: {a: 1}\n");
        assert!(boolean(d.get("t").unwrap(), "t").unwrap());
        assert!(boolean(d.get("f").unwrap(), "f").is_err());
        assert_eq!(integer(d.get("n").unwrap(), "n").unwrap(), 31);
        assert_eq!(integer(d.get("m").unwrap(), "m").unwrap(), -12);
        let err = integer(d.get("bad").unwrap(), "bad").unwrap_err();
        assert_eq!(
            err.kind.to_string(),
            "bad: expected an integer, found a scalar"
        );
        assert!(string(d.get("map").unwrap(), "map").is_err());
        assert_eq!(parse_documents("").unwrap().len(), 0);
        assert_eq!(parse_documents("a: 1\n---\nb: 2\n").unwrap().len(), 2);
    }
}
