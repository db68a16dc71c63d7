//! Running this machine's tools (ip, nft, mount, debootstrap…) as argument lists, with errors that
//! name the command, its exit status and its stderr.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// One command to run: a program, its arguments, extra environment and optional standard input.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    input: Option<String>,
}

impl Cmd {
    pub fn new(program: &str) -> Self {
        Self {
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            input: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(arg.as_ref().to_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn input(mut self, text: impl Into<String>) -> Self {
        self.input = Some(text.into());
        self
    }

    /// The program and its arguments, quoted for a shell (for messages and generated scripts).
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Like [`Cmd::display`], with the environment assignments in front.
    pub fn display_with_env(&self) -> String {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        parts.push(self.display());
        parts.join(" ")
    }

    /// Run to completion; on success return stdout, otherwise an error naming the command, its
    /// exit status and stderr, with `hint`.
    pub fn run(&self, hint: &str) -> Result<String> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if self.input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        tracing::debug!("running {}", self.display());
        let mut child = command.spawn().map_err(|error| {
            Error::failure(
                format!("could not run `{}`: {error}", self.display()),
                Some(format!(
                    "is `{}` installed and on PATH? {hint}",
                    self.program
                )),
            )
        })?;
        if let Some(text) = &self.input {
            if let Some(mut stdin) = child.stdin.take() {
                // A program that exits early closes its stdin; its exit status tells the story.
                let _ = stdin.write_all(text.as_bytes());
            }
        }
        let output = child.wait_with_output().map_err(|error| {
            Error::failure(
                format!("could not wait for `{}`: {error}", self.display()),
                Some(hint.to_string()),
            )
        })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let detail = last_lines(
            if stderr.trim().is_empty() {
                &stdout
            } else {
                &stderr
            },
            15,
        );
        let status = match output.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_string(),
        };
        Err(Error::failure(
            format!("`{}` failed ({status}): {detail}", self.display()),
            Some(hint.to_string()),
        ))
    }

    /// Run to completion and return whether it succeeded with its stdout and stderr, for
    /// commands whose output matters even when they fail (`systemctl is-system-running`).
    pub fn capture(&self) -> Result<(bool, String, String)> {
        tracing::debug!("running {}", self.display());
        let output = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                Error::failure(
                    format!("could not run `{}`: {error}", self.display()),
                    Some(format!("is `{}` installed and on PATH?", self.program)),
                )
            })?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Run and report only whether it succeeded: for clean-up steps whose subject may already be
    /// gone (deleting a netns that does not exist is not a problem).
    pub fn succeeds(&self) -> bool {
        tracing::debug!("running {}", self.display());
        Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    }
}

/// The last `count` non-empty lines of some output, joined for a one-paragraph message.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}

/// Quote one argument for a POSIX shell; plain words stay as they are.
pub fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(quote("10.77.0.11/24"), "10.77.0.11/24");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn failed_command_names_itself_and_its_stderr() {
        let error = Cmd::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .run("try again")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("sh -c"), "{error}");
        assert!(error.contains("exit status 3"), "{error}");
        assert!(error.contains("boom"), "{error}");
    }

    #[test]
    fn input_reaches_stdin() {
        let out = Cmd::new("cat").input("hello").run("").ok();
        assert_eq!(out.as_deref(), Some("hello"));
    }
}
