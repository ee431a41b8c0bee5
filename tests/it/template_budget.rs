//! Templates come from semi-trusted configuration (skaffold.yaml, .ko.yaml, `-o`), and Go's
//! template language can double a value per step. Each of these would allocate gigabytes or
//! run for hours without kobuild's work budget; each must instead fail fast with one line
//! that names the limit and says what to do. Ordinary templates, large ones included, must
//! render as before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kobuild::template::{
    KoTemplateData, TemplateError, ko_expand, output_template, skaffold_expand,
};

/// Generous for unoptimized builds on a loaded machine; the bounded cases take milliseconds.
const QUICK: Duration = Duration::from_secs(10);

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("VERSION".to_string(), "1.2.3".to_string()),
        ("BIG".to_string(), "b".repeat(100_000)),
    ])
}

fn skaffold(template: &str) -> Result<String, TemplateError> {
    skaffold_expand(template, &env(), &BTreeMap::new())
}

/// `render` fails within [`QUICK`] with the work-limit line.
fn assert_over_limit(name: &str, render: impl FnOnce() -> Result<String, TemplateError>) {
    let start = Instant::now();
    let result = render();
    let elapsed = start.elapsed();
    let err = match result {
        Ok(out) => panic!("{name}: rendered {} bytes", out.len()),
        Err(e) => e.to_string(),
    };
    assert!(elapsed < QUICK, "{name}: took {elapsed:?}");
    assert!(
        err.contains("unable to execute template")
            && err.contains("template exceeds kobuild's work limit (16 MiB")
            && err.ends_with("pass it in an environment variable"),
        "{name}: {err}"
    );
    assert!(!err.contains('\n'), "{name}: more than one line: {err}");
}

#[test]
fn printf_doubling_in_a_range_fails() {
    assert_over_limit("printf", || {
        skaffold(r#"{{$x := "ab"}}{{range 40}}{{$x = printf "%s%s" $x $x}}{{end}}{{len $x}}"#)
    });
}

#[test]
fn printf_doubling_in_nested_withs_fails() {
    let mut t = String::from(r#"{{with "ab"}}"#);
    for _ in 0..40 {
        t.push_str(r#"{{with printf "%s%s" . .}}"#);
    }
    t.push_str("{{len .}}");
    t.push_str(&"{{end}}".repeat(41));
    assert_over_limit("with chain", || skaffold(&t));
}

#[test]
fn variables_reassigned_in_ranges_fail() {
    let cases = [
        (
            "print",
            r#"{{$x := "ab"}}{{range 40}}{{$x = print $x $x}}{{end}}"#,
        ),
        (
            "println",
            r#"{{$x := "ab"}}{{range 40}}{{$x = println $x $x}}{{end}}"#,
        ),
        (
            "cat",
            r#"{{$x := "ab"}}{{range 40}}{{$x = cat $x $x}}{{end}}"#,
        ),
        (
            "html",
            r#"{{$x := "<>"}}{{range 40}}{{$x = html (print $x $x)}}{{end}}"#,
        ),
        ("js", r#"{{$x := "<>"}}{{range 40}}{{$x = js $x}}{{end}}"#),
        (
            "urlquery",
            r#"{{$x := "+"}}{{range 40}}{{$x = urlquery (print $x $x)}}{{end}}"#,
        ),
        (
            "quote",
            r#"{{$x := "\\"}}{{range 40}}{{$x = quote $x}}{{end}}"#,
        ),
        (
            "toJson",
            r#"{{$x := "\""}}{{range 40}}{{$x = toJson $x}}{{end}}"#,
        ),
        (
            "b64enc",
            r#"{{$x := "ab"}}{{range 80}}{{$x = b64enc $x}}{{end}}"#,
        ),
        (
            "join",
            r#"{{$x := "ab"}}{{range 40}}{{$x = join $x (list $x $x)}}{{end}}"#,
        ),
        (
            "replace",
            r#"{{$x := "ab"}}{{range 40}}{{$x = replace "" $x $x}}{{end}}"#,
        ),
        // Shares its parts, so it is small in memory until rendered.
        (
            "list",
            r#"{{$x := list 1}}{{range 60}}{{$x = list $x $x}}{{end}}{{toJson $x}}"#,
        ),
        (
            "splitList",
            r#"{{$x := "ab"}}{{range 40}}{{$x = join "" (splitList "" (cat $x $x))}}{{end}}"#,
        ),
    ];
    for (name, t) in cases {
        assert_over_limit(name, || skaffold(t));
    }
}

#[test]
fn large_results_repeated_fail() {
    let cases = [
        // A megabyte written ten thousand times.
        (
            "output",
            r#"{{$x := repeat 1000000 "a"}}{{range 10000}}{{$x}}{{end}}"#,
        ),
        ("padding", r#"{{range 10000}}{{printf "%65535d" 1}}{{end}}"#),
        ("directives", r#"{{printf (repeat 100000 "%[1]s") .BIG}}"#),
        (
            "comparison",
            r#"{{range 10000}}{{if eq $.BIG $.BIG}}{{end}}{{end}}"#,
        ),
        ("hashing", r#"{{range 10000}}{{sha256sum $.BIG}}{{end}}"#),
        (
            "slicing",
            r#"{{range 10000}}{{$_ := slice $.BIG 1}}{{end}}"#,
        ),
        (
            "splitting",
            r#"{{range 10000}}{{$_ := splitList "" $.BIG}}{{end}}"#,
        ),
    ];
    for (name, t) in cases {
        assert_over_limit(name, || skaffold(t));
    }
}

#[test]
fn template_fan_out_fails() {
    // 2^40 calls, each of an empty template: no loop, no function, no output.
    let mut t = String::new();
    for i in 0..40 {
        t.push_str(&format!(
            r#"{{{{define "t{i}"}}}}{{{{template "t{n}" .}}}}{{{{template "t{n}" .}}}}{{{{end}}}}"#,
            n = i + 1
        ));
    }
    t.push_str(r#"{{define "t40"}}{{end}}{{template "t0" .}}"#);
    assert_over_limit("defines", || skaffold(&t));
    // The same through recursion that shortens a string.
    let recursive = concat!(
        r#"{{define "r"}}{{if .}}{{template "r" (slice . 1)}}{{template "r" (slice . 1)}}"#,
        r#"{{end}}{{end}}{{template "r" "0123456789012345678901234567890123456789"}}"#,
    );
    assert_over_limit("recursion", || skaffold(recursive));
}

#[test]
fn deeply_nested_values_fail_without_overflowing_the_stack() {
    assert_over_limit("nesting", || {
        skaffold(r#"{{$x := list}}{{range 10000}}{{$x = list $x}}{{end}}{{toJson $x}}"#)
    });
}

#[test]
fn ko_and_output_templates_are_bounded_too() {
    let doubling = r#"{{$x := "ab"}}{{range 40}}{{$x = printf "%s%s" $x $x}}{{end}}{{$x}}"#;
    assert_over_limit("ko", || ko_expand(doubling, &KoTemplateData::default()));
    let builds = [("app".to_string(), "gcr.io/p/app:v1".to_string())];
    assert_over_limit("output", || output_template(doubling, Some(&builds)));
}

#[test]
fn large_ordinary_templates_still_render() {
    // A hundred -X flags, a loop over fifty values and a 100 KB variable used twice.
    let mut t = String::new();
    let mut want = String::new();
    for i in 0..100 {
        t.push_str(&format!(
            r#"-X main.v{i}={{{{printf "%s-%d" .VERSION {i} | upper}}}} "#
        ));
        want.push_str(&format!("-X main.v{i}=1.2.3-{i} "));
    }
    t.push_str(r#"{{range $i, $s := splitList "," (repeat 50 "a,")}}{{$i}}{{$s}}{{end}}"#);
    for i in 0..51 {
        want.push_str(&format!("{i}{}", if i < 50 { "a" } else { "" }));
    }
    t.push_str(
        r#" {{len .BIG}} {{.BIG | trunc 3}}{{printf "%.2s" .BIG}} {{sha256sum .BIG | len}}"#,
    );
    want.push_str(" 100000 bbbbb 64");
    let start = Instant::now();
    assert_eq!(skaffold(&t).unwrap(), want);
    assert!(start.elapsed() < QUICK);

    // Output as large as the variable, a thousand times over, is refused...
    assert!(skaffold(&"{{.BIG}}".repeat(1000)).is_err());
    // ...but a hundred times (10 MB) is not.
    assert_eq!(skaffold(&"{{.BIG}}".repeat(100)).unwrap().len(), 10_000_000);

    let builds: Vec<(String, String)> = (0..200)
        .map(|i| (format!("app{i}"), format!("gcr.io/p/app{i}:v1")))
        .collect();
    let out = output_template(
        "{{range .Builds}}{{.ImageName}} -> {{.Tag}}\n{{end}}{{json .}}",
        Some(&builds),
    )
    .unwrap();
    assert!(
        out.starts_with("app0 -> gcr.io/p/app0:v1\napp1 -> "),
        "{out}"
    );
    assert!(out.ends_with(r#""tag":"gcr.io/p/app199:v1"}]}"#), "{out}");
}
