//! Diagnostics that point into the inventory file: `file:line:column`, the source line, a hint.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde_saphyr::Location;

/// The inventory text and its name, shared by every diagnostic that points into it.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    /// The text as read (what is parsed).
    pub text: Arc<String>,
    /// The text as diagnostics show it: a lone carriage return is a line break (as for the YAML
    /// parser, whose line numbers the diagnostics use), and every other control character but
    /// newline and tab is shown as U+FFFD, so a snippet never sends the terminal an escape
    /// sequence. Same lines, same characters per line as `text`.
    shown: Arc<String>,
}

impl Source {
    pub fn new(name: &str, text: String) -> Self {
        let mut shown = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            shown.push(match c {
                '\r' if chars.peek() == Some(&'\n') => '\r',
                '\r' => '\n',
                '\n' | '\t' => c,
                c if c.is_control() => '\u{FFFD}',
                c => c,
            });
        }
        Self {
            name: plain(name),
            text: Arc::new(text),
            shown: Arc::new(shown),
        }
    }

    /// The byte offset in the shown text of a 1-based line and column (columns count
    /// characters).
    pub fn offset(&self, line: u64, column: u64) -> usize {
        let mut offset = 0;
        for (index, text) in self.shown.split_inclusive('\n').enumerate() {
            if index as u64 + 1 == line {
                let chars = column.saturating_sub(1) as usize;
                return offset
                    + text
                        .char_indices()
                        .nth(chars)
                        .map_or(text.trim_end_matches('\n').len(), |(i, _)| i);
            }
            offset += text.len();
        }
        self.shown.len()
    }
}

/// `text` with its control characters written as escapes (`\u{1b}`, `\n`): a name or value from
/// the inventory in a message can neither colour the terminal nor forge a line.
pub fn plain(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// An inventory problem: a message, where it is, and what to do about it.
#[derive(Debug, Clone)]
pub struct InventoryError {
    pub message: String,
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub label: String,
    pub help: Option<String>,
    pub warning: bool,
    source: NamedSource<Arc<String>>,
    offset: Option<usize>,
}

impl InventoryError {
    /// A problem at a location (unknown locations point at the file as a whole).
    pub fn at(
        source: &Source,
        location: Option<Location>,
        message: impl fmt::Display,
        label: impl fmt::Display,
    ) -> Self {
        let (line, column) = location
            .filter(|l| l.line() > 0)
            .map_or((0, 0), |l| (l.line(), l.column()));
        let offset = (line > 0).then(|| source.offset(line, column));
        Self {
            message: plain(&message.to_string()),
            file: source.name.clone(),
            line,
            column,
            label: plain(&label.to_string()),
            help: None,
            warning: false,
            source: NamedSource::new(source.name.clone(), source.shown.clone()),
            offset,
        }
    }

    /// Say where, but show no line of the file (the line may hold a secret).
    pub fn without_snippet(mut self) -> Self {
        self.offset = None;
        self
    }

    pub fn hint(mut self, help: impl fmt::Display) -> Self {
        self.help = Some(help.to_string());
        self
    }

    pub fn warning(mut self) -> Self {
        self.warning = true;
        self
    }

    /// `file:line:column` (or just the file when the place is unknown).
    pub fn position(&self) -> String {
        if self.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position(), self.message)
    }
}

impl std::error::Error for InventoryError {}

impl Diagnostic for InventoryError {
    fn severity(&self) -> Option<miette::Severity> {
        Some(if self.warning {
            miette::Severity::Warning
        } else {
            miette::Severity::Error
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.offset.map(|_| &self.source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let offset = self.offset?;
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some(self.label.clone()),
            offset,
            0,
        ))))
    }
}
