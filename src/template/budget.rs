//! A deterministic bound on the work and memory of one template execution.
//!
//! Go's template language can double a value per step (`printf "%s%s" $x $x` in a
//! `range`, `list $x $x`, a `{{define}}` that calls another twice), so a template of a few
//! hundred bytes could allocate gigabytes or run for hours. Every execution gets a
//! [`Meter`] of [`MAX_WORK`] units (about a byte each), and everything that can cost more
//! than a constant draws from it:
//!
//! - every function, ours and gotmpl's string-producing builtins alike, is wrapped
//!   ([`metered`]): it pays for the call, for the data it reads, and for the value it
//!   produces, and refuses before allocating when the result could not fit in what is left
//!   (a `printf` of a huge value, a `replace` with an empty pattern);
//! - [`instrument`] makes the entry template, each `{{define}}` and each `{{range}}` body
//!   pay for its size whenever it runs, which bounds `{{template}}` fan-out as well as
//!   loops;
//! - the output goes through [`Output`], which pays for every byte written;
//! - values may nest at most [`MAX_DEPTH`] deep, so rendering or dropping them cannot
//!   overflow the stack.
//!
//! gotmpl itself caps `{{range}}` iterations (see `MAX_RANGE_ITERATIONS`), the nesting of
//! `{{template}}`/`{{if}}`/`{{range}}` (200 deep) and printf widths (65,535). Everything
//! else it does without calling a function (field access, variables, `and`/`or`, `len`,
//! `index`, `not`) takes constant time per node, which the node charges cover.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gotmpl::parse::{ActionNode, CommandNode, Expr, ListNode, Node, Number, PipeNode, SmolStr};
use gotmpl::{FuncMap, Template, Value, ValueFunc};

/// The units one execution may use: bytes produced or read plus a few per step. Real
/// configuration templates use a few thousand.
pub(super) const MAX_WORK: u64 = 16 << 20;

/// How deep values may nest (only `list` nests them; the data is three levels deep).
const MAX_DEPTH: usize = 64;

/// Paid by every function call. A call costs roughly a microsecond, so the whole budget
/// buys at most about half a million of them.
const CALL_COST: u64 = 32;

/// Paid per AST node each time the list holding it runs.
const NODE_COST: u64 = 4;

/// Sizes (see [`Meter::size`]): a number, bool or nil renders in at most 24 bytes; a
/// float (`1e-300` prints every digit) in a few hundred; each list element and map entry
/// also costs its slot and separators.
const SCALAR: u64 = 24;
const FLOAT: u64 = 400;
const ELEMENT: u64 = 24;
const ENTRY: u64 = 48;

/// The function [`instrument`] calls. The space keeps templates from naming it.
const STEP: &str = "kobuild step";

/// What to do when a limit is hit, after saying which one.
pub(super) const ADVICE: &str = "simplify the template, or compute the value before the build and pass it in an environment variable";

pub(super) fn work_limit_message() -> String {
    format!(
        "template exceeds kobuild's work limit ({} MiB of produced text and evaluation steps, \
         values nested at most {MAX_DEPTH} deep): {ADVICE}",
        MAX_WORK >> 20
    )
}

fn exceeded() -> gotmpl::TemplateError {
    gotmpl::TemplateError::Exec(work_limit_message())
}

/// The budget of one execution, shared by its functions and its output.
pub(super) struct Meter {
    remaining: AtomicU64,
    exceeded: AtomicBool,
}

impl Meter {
    pub(super) fn new(limit: u64) -> Arc<Meter> {
        Arc::new(Meter {
            remaining: AtomicU64::new(limit),
            exceeded: AtomicBool::new(false),
        })
    }

    /// Whether the execution failed for want of budget (whatever error gotmpl reports).
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed)
    }

    fn fail(&self) -> gotmpl::TemplateError {
        self.exceeded.store(true, Ordering::Relaxed);
        self.remaining.store(0, Ordering::Relaxed);
        exceeded()
    }

    fn charge(&self, units: u64) -> gotmpl::Result<()> {
        self.remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(units)
            })
            .map(|_| ())
            .map_err(|_| self.fail())
    }

    /// Fail unless `units` are left, without using them: checked before an allocation of
    /// at most that size.
    fn ensure(&self, units: u64) -> gotmpl::Result<()> {
        if units > self.remaining() {
            return Err(self.fail());
        }
        Ok(())
    }

    /// An upper bound on the bytes `v` renders to (`%v`, JSON, Sprig's `toString`) and
    /// holds in memory, walked no further than the budget left, so values that share
    /// parts (`list $x $x`) are counted in full without walking them forever.
    fn size(&self, v: &Value) -> gotmpl::Result<u64> {
        let cap = self.remaining();
        let mut total: u64 = 0;
        let mut stack = vec![(v, 0usize)];
        while let Some((v, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(self.fail());
            }
            let own = match v {
                Value::String(s) => units(s.len()),
                Value::Float(_) => FLOAT,
                Value::List(items) => 2 + units(items.len()).saturating_mul(ELEMENT),
                Value::Map(map) => 2 + units(map.len()).saturating_mul(ENTRY),
                _ => SCALAR,
            };
            total = total.saturating_add(own);
            if total > cap {
                return Err(self.fail());
            }
            match v {
                Value::List(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
                Value::Map(map) => {
                    for (k, item) in map.iter() {
                        total = total.saturating_add(units(k.len()));
                        stack.push((item, depth + 1));
                    }
                }
                _ => {}
            }
        }
        if total > cap {
            return Err(self.fail());
        }
        Ok(total)
    }

    fn sizes(&self, args: &[Value]) -> gotmpl::Result<Vec<u64>> {
        let mut sizes = Vec::with_capacity(args.len());
        let mut sum: u64 = 0;
        for a in args {
            let s = self.size(a)?;
            sum = sum.saturating_add(s);
            if sum > self.remaining() {
                return Err(self.fail());
            }
            sizes.push(s);
        }
        Ok(sizes)
    }
}

/// A length in budget units.
fn units(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The output of one execution: every byte written is paid for.
pub(super) struct Output<'a> {
    pub(super) text: String,
    meter: &'a Meter,
}

impl<'a> Output<'a> {
    pub(super) fn new(meter: &'a Meter) -> Self {
        Output {
            text: String::new(),
            meter,
        }
    }
}

impl std::fmt::Write for Output<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.meter
            .charge(units(s.len()))
            .map_err(|_| std::fmt::Error)?;
        self.text.push_str(s);
        Ok(())
    }
}

/// How a function's work and result grow with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cost {
    /// Returns an argument or a small constant, reading nothing in full.
    Select,
    /// Reads its string arguments once, allocating nothing (comparisons, `contains`).
    Scan,
    /// Renders its arguments into a string at most this many times their size, plus a
    /// little per argument.
    Render(u64),
    /// Go's `fmt.Sprintf`: widths and precisions pad, `[n]` reuses an argument.
    Printf,
    /// `replace OLD NEW SRC`: NEW once per occurrence of OLD (per character if empty).
    Replace,
    /// `repeat COUNT S`.
    Repeat,
    /// `join`: the separator once per element.
    Join,
    /// `split`/`splitList SEP S`: one element per piece.
    Split,
    /// `list`: shares its arguments, but what it builds must be paid for in full.
    List,
    /// `slice`: copies part of a string or list.
    Slice,
}

/// The cost of each function kobuild's templates can call. A function missing here is
/// treated as rendering its arguments eight times over.
fn cost(name: &str) -> Cost {
    match name {
        "default" | "empty" | "coalesce" | "ternary" | "index" | "now" | "unixEpoch" | "cmd" => {
            Cost::Select
        }
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "contains" | "hasPrefix" | "hasSuffix" => {
            Cost::Scan
        }
        "trim" | "nospace" | "b64dec" | "sha256sum" | "trimAll" | "trimPrefix" | "trimSuffix"
        | "substr" | "trunc" | "cat" | "squote" | "toString" | "env" | "print" | "println" => {
            Cost::Render(1)
        }
        "b64enc" => Cost::Render(2),
        "upper" | "lower" | "title" | "urlquery" => Cost::Render(3),
        "quote" | "date" => Cost::Render(4),
        "json" | "toJson" | "html" | "js" => Cost::Render(6),
        "printf" => Cost::Printf,
        "replace" => Cost::Replace,
        "repeat" => Cost::Repeat,
        "join" => Cost::Join,
        "split" | "splitList" => Cost::Split,
        "list" => Cost::List,
        "slice" => Cost::Slice,
        _ => Cost::Render(8),
    }
}

/// gotmpl's builtins that read or build values in proportion to their arguments. The
/// others (`and`, `or`, `not`, `len`, `index`, `call`) take constant time.
const METERED_BUILTINS: [&str; 13] = [
    "eq", "ne", "lt", "le", "gt", "ge", "html", "js", "urlquery", "print", "println", "printf",
    "slice",
];

/// `funcs` and the string-producing builtins, each paying into `meter`, plus the step
/// function [`instrument`] calls.
pub(super) fn metered(funcs: FuncMap, meter: &Arc<Meter>) -> FuncMap {
    let mut m = FuncMap::new();
    for name in METERED_BUILTINS {
        let call: ValueFunc = Arc::new(move |args: &[Value]| call_builtin(name, args));
        m.insert(name.to_string(), wrap(cost(name), call, meter));
    }
    for (name, f) in funcs {
        let wrapped = wrap(cost(&name), f, meter);
        m.insert(name, wrapped);
    }
    let meter = Arc::clone(meter);
    m.insert(
        STEP.to_string(),
        Arc::new(move |args: &[Value]| {
            let nodes = match args.first() {
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            };
            meter.charge(nodes.max(1).saturating_mul(NODE_COST))?;
            Ok(Value::String(Arc::from("")))
        }),
    );
    m
}

fn wrap(cost: Cost, f: ValueFunc, meter: &Arc<Meter>) -> ValueFunc {
    let meter = Arc::clone(meter);
    Arc::new(move |args: &[Value]| {
        meter.charge(CALL_COST)?;
        match cost {
            Cost::Select => f(args),
            Cost::Scan => {
                meter.charge(args.iter().fold(0, |n, a| n.saturating_add(shallow(a))))?;
                f(args)
            }
            Cost::List => {
                let out = f(args)?;
                meter.charge(meter.size(&out)?)?;
                Ok(out)
            }
            Cost::Slice => {
                meter.charge(args.first().map_or(0, shallow))?;
                let out = f(args)?;
                meter.charge(shallow(&out))?;
                Ok(out)
            }
            _ => {
                let sizes = meter.sizes(args)?;
                let input = sizes.iter().fold(0, |n: u64, s| n.saturating_add(*s));
                meter.charge(input)?;
                meter.ensure(bound(cost, args, &sizes, input))?;
                let out = f(args)?;
                meter.charge(meter.size(&out)?)?;
                Ok(out)
            }
        }
    })
}

/// The bytes a string, or the slots a list or map, hold at the top level.
fn shallow(v: &Value) -> u64 {
    match v {
        Value::String(s) => units(s.len()),
        Value::List(items) => units(items.len()).saturating_mul(ELEMENT),
        Value::Map(map) => units(map.len()).saturating_mul(ENTRY),
        _ => 1,
    }
}

fn str_arg(args: &[Value], i: usize) -> u64 {
    match args.get(i) {
        Some(Value::String(s)) => units(s.len()),
        _ => 0,
    }
}

/// An upper bound on the size of what a [`Cost::Render`]-like function returns, given the
/// sizes of its arguments and their sum.
fn bound(cost: Cost, args: &[Value], sizes: &[u64], input: u64) -> u64 {
    let per_arg = 8 * units(args.len()) + 64;
    match cost {
        Cost::Render(factor) => input.saturating_mul(factor).saturating_add(per_arg),
        Cost::Printf => match args.first() {
            Some(Value::String(format)) => printf_bound(format, &sizes[1..]),
            _ => per_arg,
        },
        Cost::Replace => {
            let (old, new, src) = (str_arg(args, 0), str_arg(args, 1), str_arg(args, 2));
            let pieces = src / old.max(1) + 1;
            src.saturating_add(pieces.saturating_mul(new))
        }
        Cost::Repeat => match args.first() {
            Some(Value::Int(n)) => u64::try_from(*n)
                .unwrap_or(0)
                .saturating_mul(str_arg(args, 1)),
            _ => per_arg,
        },
        Cost::Join => {
            let elements: u64 = args
                .iter()
                .map(|a| match a {
                    Value::List(items) => units(items.len()),
                    _ => 0,
                })
                .sum();
            let separator: u64 = (0..args.len()).map(|i| str_arg(args, i)).sum();
            input
                .saturating_add(elements.saturating_mul(separator))
                .saturating_add(per_arg)
        }
        Cost::Split => {
            let (separator, s) = (str_arg(args, 0), str_arg(args, 1));
            let pieces = s.checked_div(separator).unwrap_or(s) + 1;
            s.saturating_add(pieces.saturating_mul(ENTRY + 8))
        }
        Cost::Select | Cost::Scan | Cost::List | Cost::Slice => input,
    }
}

/// An upper bound on `fmt.Sprintf(format, args...)` as gotmpl implements it: the format's
/// text; per directive a constant (error markers such as `%!d(MISSING)`, number digits),
/// its width and precision (digits as written, or the 65,535 gotmpl clamps `*` to) and at
/// most four times its argument (`%q` of control characters); and the unused arguments
/// (`%!(EXTRA ...)`). With `[n]` indexes one argument may serve every directive.
fn printf_bound(format: &str, arg_sizes: &[u64]) -> u64 {
    const MAX_WIDTH: u64 = u16::MAX as u64;
    let bytes = format.as_bytes();
    let mut directives: u64 = 0;
    let mut padding: u64 = 0;
    for (i, _) in format.match_indices('%') {
        directives += 1;
        let mut number: u64 = 0;
        for &b in bytes[i + 1..]
            .iter()
            .take_while(|b| b"-+ #0123456789.*[]".contains(b))
        {
            match b {
                b'0'..=b'9' => number = (number * 10 + u64::from(b - b'0')).min(MAX_WIDTH),
                b'*' => padding = padding.saturating_add(MAX_WIDTH),
                _ => {
                    padding = padding.saturating_add(number);
                    number = 0;
                }
            }
        }
        padding = padding.saturating_add(number);
    }
    let total: u64 = arg_sizes.iter().fold(0, |a, s| a.saturating_add(*s));
    let largest = arg_sizes.iter().copied().max().unwrap_or(0);
    let rendered = if format.contains('[') {
        directives.saturating_mul(largest.saturating_mul(4))
    } else {
        total.saturating_mul(4)
    };
    units(format.len())
        .saturating_add(directives.saturating_mul(400))
        .saturating_add(padding)
        .saturating_add(rendered)
        .saturating_add(total)
        .saturating_add(32 * units(arg_sizes.len()))
}

thread_local! {
    /// The value the last [`call_builtin`] produced.
    static RESULT: RefCell<Option<Value>> = const { RefCell::new(None) };
    /// One template per builtin and small argument count.
    static CALLERS: RefCell<HashMap<(&'static str, usize), Rc<Template>>> =
        RefCell::new(HashMap::new());
}

/// Call gotmpl's builtin `name`, which it does not export, through a template that
/// hands its result to a capturing function: `{{capture (NAME (index . 0) ...)}}` with the
/// arguments as dot, so it behaves exactly as a direct call.
fn call_builtin(name: &'static str, args: &[Value]) -> gotmpl::Result<Value> {
    const CAPTURE: &str = "kobuildCapture";
    let build = || -> gotmpl::Result<Rc<Template>> {
        let mut source = format!("{{{{{CAPTURE} ({name}");
        for i in 0..args.len() {
            source.push_str(&format!(" (index . {i})"));
        }
        source.push_str(")}}");
        let template = Template::new("")
            .func(CAPTURE, |captured: &[Value]| {
                RESULT.with(|r| *r.borrow_mut() = captured.first().cloned());
                Ok(Value::String(Arc::from("")))
            })
            .parse(&source)?;
        Ok(Rc::new(template))
    };
    let key = (name, args.len());
    let cached = CALLERS.with(|c| c.borrow().get(&key).cloned());
    let template = match cached {
        Some(t) => t,
        None => {
            let t = build()?;
            if args.len() <= 8 {
                CALLERS.with(|c| c.borrow_mut().insert(key, Rc::clone(&t)));
            }
            t
        }
    };
    RESULT.with(|r| r.borrow_mut().take());
    template.execute_fmt(&mut String::new(), &Value::List(Arc::from(args)))?;
    RESULT
        .with(|r| r.borrow_mut().take())
        .ok_or_else(|| gotmpl::TemplateError::Exec(format!("{name} returned no value")))
}

/// `template` with its entry tree and every `{{define}}` made to pay for their nodes each
/// time they run, and every `{{range}}` body each iteration. Returns whether the entry
/// tree is among the definitions (it is unless it holds only whitespace), in which case
/// execute it by the template's name.
pub(super) fn instrument(template: Template, name: &str) -> (Template, bool) {
    let trees: Vec<(String, ListNode)> = template
        .templates()
        .into_iter()
        .filter_map(|n| {
            template
                .lookup(n)
                .map(|tree| (n.to_string(), charged(tree)))
        })
        .collect();
    let entry = trees.iter().any(|(n, _)| n == name);
    let template = trees
        .into_iter()
        .fold(template, |t, (n, tree)| t.add_parse_tree(&n, tree));
    (template, entry)
}

/// `list` preceded by a call paying for its nodes, with its `{{range}}` bodies likewise.
fn charged(list: &ListNode) -> ListNode {
    let pos = list.pos;
    let nodes = i64::try_from(weight(list)).unwrap_or(i64::MAX);
    let step = Node::Action(ActionNode {
        pos,
        pipe: PipeNode {
            pos,
            decl: Vec::new(),
            commands: vec![CommandNode {
                pos,
                args: vec![
                    Expr::Identifier(pos, SmolStr::new_static(STEP)),
                    Expr::Number(pos, Number::Int(nodes)),
                ],
            }],
            is_assign: false,
        },
    });
    let mut out = ListNode {
        pos,
        nodes: Vec::with_capacity(list.nodes.len() + 1),
    };
    out.nodes.push(step);
    out.nodes.extend(list.nodes.iter().map(ranges_charged));
    out
}

fn ranges_charged(node: &Node) -> Node {
    let inner = |l: &ListNode| ListNode {
        pos: l.pos,
        nodes: l.nodes.iter().map(ranges_charged).collect(),
    };
    match node {
        Node::List(l) => Node::List(inner(l)),
        Node::Range(b) => {
            let mut b = b.clone();
            b.body = charged(&b.body);
            b.else_body = b.else_body.as_ref().map(inner);
            Node::Range(b)
        }
        Node::If(b) | Node::With(b) => {
            let mut b = b.clone();
            b.body = inner(&b.body);
            b.else_body = b.else_body.as_ref().map(inner);
            if matches!(node, Node::If(_)) {
                Node::If(b)
            } else {
                Node::With(b)
            }
        }
        other => other.clone(),
    }
}

/// The nodes and expressions in `list`, nested bodies included.
fn weight(list: &ListNode) -> u64 {
    fn pipe(p: &PipeNode) -> u64 {
        p.commands
            .iter()
            .map(|c| 1 + c.args.iter().map(expr).sum::<u64>())
            .sum()
    }
    fn expr(e: &Expr) -> u64 {
        match e {
            Expr::Pipe(_, p) => 1 + pipe(p),
            Expr::Chain(_, inner, fields) => 1 + expr(inner) + units(fields.len()),
            Expr::Field(_, fields) | Expr::Variable(_, _, fields) => 1 + units(fields.len()),
            _ => 1,
        }
    }
    list.nodes
        .iter()
        .map(|node| match node {
            Node::List(l) => weight(l),
            Node::Action(a) => 1 + pipe(&a.pipe),
            Node::If(b) | Node::With(b) | Node::Range(b) => {
                1 + pipe(&b.pipe) + weight(&b.body) + b.else_body.as_ref().map_or(0, weight)
            }
            Node::Template(t) => 1 + t.pipe.as_ref().map_or(0, pipe),
            Node::Define(_) => 0,
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Value {
        Value::String(Arc::from(s))
    }

    #[test]
    fn builtins_behave_as_when_called_directly() {
        let call = |name, args: &[Value]| call_builtin(name, args).map(|v| v.to_string());
        assert_eq!(
            call("printf", &[string("%s-%03d"), string("a"), Value::Int(7)]).unwrap(),
            "a-007"
        );
        assert_eq!(call("printf", &[string("%d")]).unwrap(), "%!d(MISSING)");
        assert_eq!(call("print", &[]).unwrap(), "");
        assert_eq!(
            call("println", &[Value::Int(1), Value::Nil]).unwrap(),
            "1 <nil>\n"
        );
        assert_eq!(call("eq", &[Value::Int(1), Value::Int(1)]).unwrap(), "true");
        assert!(call("eq", &[Value::Int(1)]).is_err());
        assert!(call("lt", &[Value::Int(1), string("a")]).is_err());
        assert_eq!(
            call("slice", &[string("abcd"), Value::Int(1), Value::Int(3)]).unwrap(),
            "bc"
        );
        let list = Value::List(Arc::from([Value::Int(1), Value::Int(2)]));
        assert!(matches!(
            call_builtin("slice", &[list, Value::Int(1)]).unwrap(),
            Value::List(l) if l.len() == 1
        ));
        assert_eq!(call("html", &[string("<a>")]).unwrap(), "&lt;a&gt;");
        assert_eq!(call("urlquery", &[string("a b")]).unwrap(), "a+b");
    }

    #[test]
    fn printf_bound_covers_what_printf_produces() {
        let cases: [(&str, Vec<Value>); 7] = [
            ("%s%s", vec![string("ab"), string("cd")]),
            ("%q", vec![string("\u{1}\u{2}\u{3}")]),
            ("%[1]s%[1]s%[1]s%[1]s", vec![string("abcdef")]),
            ("%*d", vec![Value::Int(60_000), Value::Int(1)]),
            ("%.*f", vec![Value::Int(1_000), Value::Float(1e300)]),
            ("%x %X", vec![string("abc"), string("xyz")]),
            ("%d", vec![Value::Int(1), string("extra"), Value::Nil]),
        ];
        let meter = Meter::new(MAX_WORK);
        for (format, args) in cases {
            let sizes = meter.sizes(&args).unwrap();
            let mut all = vec![string(format)];
            all.extend(args);
            let out = call_builtin("printf", &all).unwrap().to_string();
            assert!(
                units(out.len()) <= printf_bound(format, &sizes),
                "{format}: {} > {}",
                out.len(),
                printf_bound(format, &sizes)
            );
        }
    }

    #[test]
    fn every_function_has_a_cost() {
        let names = super::super::funcs::sprig(Arc::default())
            .into_keys()
            .chain(super::super::funcs::output().into_keys())
            .chain(METERED_BUILTINS.iter().map(|n| n.to_string()));
        for name in names {
            assert_ne!(cost(&name), Cost::Render(8), "{name} has no cost");
        }
    }

    #[test]
    fn sizes_stop_at_the_budget_and_depth() {
        let meter = Meter::new(1_000);
        let mut v = Value::List(Arc::from([string("x")]));
        for _ in 0..40 {
            v = Value::List(Arc::from([v.clone(), v]));
        }
        // 2^40 leaves, shared: the walk stops as soon as the budget is passed.
        assert!(meter.size(&v).is_err());
        assert!(meter.exceeded());
        let meter = Meter::new(MAX_WORK);
        let mut v = string("x");
        for _ in 0..=MAX_DEPTH {
            v = Value::List(Arc::from([v]));
        }
        assert!(meter.size(&v).is_err());
    }
}
