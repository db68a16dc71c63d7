//! Diagnostics that point into the inventory file: `file:line:column`, the source line, a hint.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde_saphyr::Location;

/// The inventory text and its name, shared by every diagnostic that points into it.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: Arc<String>,
}

impl Source {
    /// The byte offset of a 1-based line and column (columns count characters).
    pub fn offset(&self, line: u64, column: u64) -> usize {
        let mut offset = 0;
        for (index, text) in self.text.split_inclusive('\n').enumerate() {
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
        self.text.len()
    }
}

/// An inventory problem: a message, where it is, and what to do about it.
#[derive(Debug)]
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
            message: message.to_string(),
            file: source.name.clone(),
            line,
            column,
            label: label.to_string(),
            help: None,
            warning: false,
            source: NamedSource::new(source.name.clone(), source.text.clone()),
            offset,
        }
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
