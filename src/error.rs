//! The error type every command returns, and what decides the exit code: bad input (2) or a
//! failure while doing the work (1). Messages are `miette` diagnostics: `error:`, causes, `hint:`.

use std::fmt;

/// What the exit code says about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input (inventory, flags, templates) is wrong; nothing was touched. Exit 2.
    BadInput,
    /// The work failed (a host, a step, a health gate). Exit 1.
    Failed,
}

/// An error for the user: a kind (exit code) and a diagnostic report, or several for inventory
/// validation, where every problem is reported at once.
pub struct Error {
    pub kind: ErrorKind,
    pub reports: Vec<miette::Report>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_input(report: impl Into<miette::Report>) -> Self {
        Self {
            kind: ErrorKind::BadInput,
            reports: vec![report.into()],
        }
    }

    pub fn failed(report: impl Into<miette::Report>) -> Self {
        Self {
            kind: ErrorKind::Failed,
            reports: vec![report.into()],
        }
    }

    /// A bad-input error with a message and a hint, for problems that point at no file.
    pub fn usage(message: impl fmt::Display, hint: Option<String>) -> Self {
        Self::bad_input(Plain::new(message, hint))
    }

    /// A failure with a message and an optional hint.
    pub fn failure(message: impl fmt::Display, hint: Option<String>) -> Self {
        Self::failed(Plain::new(message, hint))
    }

    /// The same error with every secret value replaced by `***` in its messages and hints (for
    /// errors whose text may quote rendered content: templates, rendered manifests).
    pub fn masked(self, masker: &crate::secret::Masker) -> Self {
        let reports = self
            .reports
            .into_iter()
            .map(|report| {
                let message = report.to_string();
                let help = report.help().map(|h| h.to_string());
                let leaks = masker.contains_secret(&message)
                    || help.as_deref().is_some_and(|h| masker.contains_secret(h));
                if leaks {
                    miette::Report::new(Plain::new(
                        masker.mask(&message),
                        help.map(|h| masker.mask(&h)),
                    ))
                } else {
                    report
                }
            })
            .collect();
        Self {
            kind: self.kind,
            reports,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::BadInput => 2,
            ErrorKind::Failed => 1,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for report in &self.reports {
            writeln!(f, "{report:?}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<String> = self.reports.iter().map(|r| r.to_string()).collect();
        f.write_str(&messages.join("; "))
    }
}

/// A diagnostic that is only a message and maybe a hint.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Plain {
    message: String,
    help: Option<String>,
}

impl Plain {
    pub fn new(message: impl fmt::Display, help: Option<String>) -> Self {
        Self {
            message: message.to_string(),
            help,
        }
    }
}

impl miette::Diagnostic for Plain {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}
