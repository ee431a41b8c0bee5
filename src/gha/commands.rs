//! Workflow commands (`::name key=value::message`), which the runner reads from the step's
//! output. Values are escaped so that a newline or `::` in a message cannot end the command
//! early or inject another one.

use std::io::Write;

use super::GhaError;

/// Where an annotation points; all parts optional, as the runner allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// Relative to the workspace, so the annotation links to the file.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub col: Option<u32>,
}

pub struct Commands<W: Write> {
    out: W,
}

impl<W: Write> Commands<W> {
    pub fn new(out: W) -> Self {
        Commands { out }
    }

    pub fn group(&mut self, title: &str) -> Result<(), GhaError> {
        self.command("group", &[], title)
    }

    pub fn endgroup(&mut self) -> Result<(), GhaError> {
        self.command("endgroup", &[], "")
    }

    pub fn error(&mut self, at: &Location, message: &str) -> Result<(), GhaError> {
        self.annotation("error", at, message)
    }

    pub fn warning(&mut self, at: &Location, message: &str) -> Result<(), GhaError> {
        self.annotation("warning", at, message)
    }

    /// From here on the runner replaces `secret` with `***` in the log.
    pub fn add_mask(&mut self, secret: &str) -> Result<(), GhaError> {
        self.command("add-mask", &[], secret)
    }

    fn annotation(&mut self, name: &str, at: &Location, message: &str) -> Result<(), GhaError> {
        let line = at.line.map(|n| n.to_string());
        let col = at.col.map(|n| n.to_string());
        let props: Vec<(&str, &str)> = [
            ("file", at.file.as_deref()),
            ("line", line.as_deref()),
            ("col", col.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
        self.command(name, &props, message)
    }

    fn command(
        &mut self,
        name: &str,
        props: &[(&str, &str)],
        message: &str,
    ) -> Result<(), GhaError> {
        let mut line = format!("::{name}");
        for (i, (k, v)) in props.iter().enumerate() {
            line.push(if i == 0 { ' ' } else { ',' });
            line.push_str(k);
            line.push('=');
            line.push_str(&escape_property(v));
        }
        line.push_str("::");
        line.push_str(&escape_data(message));
        line.push('\n');
        // Flushed at once: the runner interleaves stdout with the logs on stderr by arrival.
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(GhaError::Stdout)
    }
}

/// Makes `text`, bound for stderr, inert to the runner, which executes a workflow command on
/// any output line, stderr included: a line that starts with `::` after blanks (the runner
/// trims them) is prefixed with `> `, and the legacy `##[` form, honoured anywhere in a line,
/// becomes `# #[`. Lines end at `\n` or `\r`, as the runner splits them.
pub fn defuse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive(['\n', '\r']) {
        if line.trim_start().starts_with("::") {
            out.push_str("> ");
        }
        out.push_str(&line.replace("##[", "# #["));
    }
    out
}

/// Stderr through [`defuse`]: every write is taken to start a line, as each `error:` line
/// and each log event does. Nothing kobuild means the runner to execute goes to stderr.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = defuse(&String::from_utf8_lossy(buf));
        crate::progress::around_write(|| std::io::stderr().lock().write_all(text.as_bytes()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().lock().flush()
    }
}

pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(f: impl FnOnce(&mut Commands<&mut Vec<u8>>) -> Result<(), GhaError>) -> String {
        let mut buf = Vec::new();
        f(&mut Commands::new(&mut buf)).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn defuses_commands_on_any_line() {
        assert_eq!(
            defuse("error: -f \"x\n::warning::pwned\": gone\n"),
            "error: -f \"x\n> ::warning::pwned\": gone\n"
        );
        assert_eq!(defuse("a\r  ::set-output::x"), "a\r>   ::set-output::x");
        assert_eq!(defuse("note ##[warning]x"), "note # #[warning]x");
        assert_eq!(defuse("plain: a::b\n"), "plain: a::b\n");
    }

    #[test]
    fn escapes_data_and_properties() {
        assert_eq!(escape_data("100%\r\nnext::x"), "100%25%0D%0Anext::x");
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn prints_each_command() {
        assert_eq!(
            printed(|c| {
                c.group("Build 2 images")?;
                c.endgroup()?;
                c.add_mask("p%ss\nword")
            }),
            "::group::Build 2 images\n::endgroup::\n::add-mask::p%25ss%0Aword\n"
        );
        let at = Location {
            file: Some("cmd/a,b:c.go".into()),
            line: Some(6),
            col: Some(2),
        };
        assert_eq!(
            printed(|c| c.error(&at, "undefined: nope\n::add-mask::x")),
            "::error file=cmd/a%2Cb%3Ac.go,line=6,col=2::undefined: nope%0A::add-mask::x\n"
        );
        assert_eq!(
            printed(|c| c.warning(&Location::default(), "careful")),
            "::warning::careful\n"
        );
    }
}
