//! The part of a Go source file that decides which files and packages a build reads:
//! everything up to the end of its imports (build constraints, package clause, imports,
//! a cgo preamble) and its `//go:embed` lines. An edit that leaves this alone (a function
//! body, a constant) cannot change what `go list -deps` names, so the files a record
//! lists still are the build's inputs.

use crate::digest::Digest;

/// The file's shape, or `None` when its header is not plain enough to be sure where the
/// imports end (then any edit counts as a new shape).
pub fn shape(src: &[u8]) -> Option<Digest> {
    let header = &src[..header_end(src)?];
    let mut text = Vec::with_capacity(header.len() + 64);
    text.extend_from_slice(header);
    text.push(0);
    // Every line naming the directive, wherever it is: more than Go reads, never less.
    for line in src.split(|b| *b == b'\n') {
        if line.windows(EMBED.len()).any(|w| w == EMBED) {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
    }
    Some(Digest::of(&text))
}

const EMBED: &[u8] = b"//go:embed";

/// Where the package clause and the imports end.
fn header_end(src: &[u8]) -> Option<usize> {
    let mut lx = Lexer { src, pos: 0 };
    if lx.token()? != Token::Ident(b"package") || !matches!(lx.token()?, Token::Ident(_)) {
        return None;
    }
    loop {
        let end = lx.pos;
        match lx.token()? {
            Token::Semicolon => {}
            Token::Ident(b"import") => {
                if lx.peek()? == Token::Open {
                    lx.token()?;
                    loop {
                        match lx.token()? {
                            Token::Close => break,
                            Token::Open | Token::Eof => return None,
                            _ => {}
                        }
                    }
                } else {
                    import_spec(&mut lx)?;
                }
            }
            _ => return Some(end),
        }
    }
}

/// `"path"`, `name "path"`, `. "path"` or `_ "path"` (outside parentheses).
fn import_spec(lx: &mut Lexer) -> Option<()> {
    match lx.token()? {
        Token::Str => Some(()),
        Token::Ident(_) | Token::Dot => (lx.token()? == Token::Str).then_some(()),
        _ => None,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a [u8]),
    Str,
    Dot,
    Semicolon,
    Open,
    Close,
    Eof,
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// Skips white space and comments.
    fn skip_space(&mut self) {
        loop {
            let rest = &self.src[self.pos..];
            if rest.first().is_some_and(|b| b.is_ascii_whitespace()) {
                self.pos += 1;
            } else if rest.starts_with(b"//") {
                self.pos += rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            } else if rest.starts_with(b"/*") {
                match rest[2..].windows(2).position(|w| w == b"*/") {
                    Some(end) => self.pos += end + 4,
                    // Unterminated: Go refuses the file, nothing more to read.
                    None => self.pos = self.src.len(),
                }
            } else {
                return;
            }
        }
    }

    fn peek(&mut self) -> Option<Token<'a>> {
        let at = self.pos;
        let t = self.token();
        self.pos = at;
        t
    }

    /// The next token; `None` for anything an import header cannot hold.
    fn token(&mut self) -> Option<Token<'a>> {
        self.skip_space();
        let rest = &self.src[self.pos..];
        let Some(&first) = rest.first() else {
            return Some(Token::Eof);
        };
        let ident = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b >= 0x80;
        let (token, len) = match first {
            b';' => (Token::Semicolon, 1),
            b'.' => (Token::Dot, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            b'"' => {
                let mut i = 1;
                loop {
                    match rest.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        b'\n' => return None,
                        _ => i += 1,
                    }
                }
                (Token::Str, i + 1)
            }
            b'`' => (Token::Str, rest[1..].iter().position(|b| *b == b'`')? + 2),
            b if ident(&b) => {
                let len = rest.iter().position(|b| !ident(b)).unwrap_or(rest.len());
                (Token::Ident(&rest[..len]), len)
            }
            _ => return None,
        };
        self.pos += len;
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"//go:build linux

// Package main does things.
package main

/*
#include <stdio.h>
*/
import "C"

import (
	"fmt" // printing
	_ "embed"
	. "strings"
	str "strconv"
)

import "os"

//go:embed static/page.html
var page string

func main() { fmt.Println(page, os.Args, str.Itoa(1), ToUpper("x")) }
"#;

    fn shape_of(s: &str) -> Option<Digest> {
        shape(s.as_bytes())
    }

    #[test]
    fn the_header_ends_at_the_first_declaration() {
        let end = header_end(FILE.as_bytes()).unwrap();
        assert!(FILE[..end].ends_with("import \"os\""), "{}", &FILE[..end]);
        let flat = "package p\nimport \"a\"; import (\"b\"; \"c\"); var x = 1";
        assert_eq!(header_end(flat.as_bytes()), flat.find(" var"));
        assert_eq!(header_end(b"package p // end\n"), Some(9));
    }

    #[test]
    fn bodies_and_values_do_not_change_the_shape_anything_else_does() {
        let base = shape_of(FILE).unwrap();
        let same = [
            FILE.replace("str.Itoa(1)", "str.Itoa(2)"),
            FILE.replace("var page string", "var page string\n\nconst x = 1"),
            format!("{FILE}\nfunc more() {{}}\n"),
        ];
        for s in &same {
            assert_eq!(shape_of(s), Some(base.clone()), "{s}");
        }
        let different = [
            FILE.replace("\"os\"", "\"os/exec\""),
            FILE.replace(")\n\nimport", "\t\"net\"\n)\n\nimport"),
            FILE.replace("linux", "linux && amd64"),
            FILE.replace("package main", "package other"),
            FILE.replace("#include <stdio.h>", "#cgo LDFLAGS: -lm"),
            FILE.replace("static/page.html", "static/*.html"),
            format!("{FILE}\n//go:embed more.txt\nvar more string\n"),
        ];
        for s in &different {
            assert_ne!(shape_of(s), Some(base.clone()), "{s}");
        }
    }

    #[test]
    fn an_unusual_header_has_no_shape() {
        for src in [
            "\u{feff}package main\n",
            "package main\nimport 'x'\n",
            "package main\nimport (\"a\"\n",
            "package main\nimport \"unterminated\n\"\n",
            "func main() {}\n",
        ] {
            assert_eq!(shape_of(src), None, "{src:?}");
        }
        assert!(shape_of("package main\n").is_some());
    }
}
