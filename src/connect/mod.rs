//! SSH connections to hosts: the system OpenSSH through the `openssh` crate (one ControlMaster per
//! host, so the user's `~/.ssh/config`, agent and jump hosts work), remote commands as argument
//! lists with explicit quoting, `sudo -n` for non-root users, and uploads whose content travels on
//! stdin (never in argv, never in logs) into a temp file that is renamed into place.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssh::{KnownHosts, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;

/// Hides secrets in texts shown to the user (commands, stderr). Connect knows addresses and ssh
/// options only, not where the secrets come from: the engine hands in the inventory's masker.
pub trait Mask: Send + Sync {
    fn mask(&self, text: &str) -> String;
}

/// Where and how to reach one host: plain values (the engine fills them from the inventory,
/// `exec::target`).
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name of the host (for messages).
    pub host: String,
    pub address: String,
    pub user: String,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// Run commands through `sudo -n` (the user is not root).
    pub become_root: bool,
    pub connect_timeout: u64,
    /// Extra `ssh -o KEY=VALUE` options (the inventory's `ssh.options`).
    pub options: Vec<(String, String)>,
}

/// A host could not be reached: names the host, what ssh said and what to try.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectError {
    pub host: String,
    pub address: String,
    /// ssh's own words (its stderr).
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot connect to {} ({}): {}",
            self.host, self.address, self.message
        )
    }
}

/// The hint for an ssh connection failure, from ssh's stderr.
pub fn connect_hint(message: &str, target: &Target) -> Option<String> {
    let known_hosts = target.known_hosts.as_ref().map_or_else(
        || "~/.ssh/known_hosts".to_owned(),
        |p| p.display().to_string(),
    );
    let lower = message.to_lowercase();
    if lower.contains("remote host identification has changed")
        || lower.contains("host key verification failed") && lower.contains("offending")
    {
        Some(format!(
            "the host key of {} does not match the one in {known_hosts}; if the host was \
             reinstalled, check its new key and remove the old one with `ssh-keygen -R {} -f \
             {known_hosts}` (pgstrap never accepts a changed key)",
            target.address, target.address
        ))
    } else if lower.contains("host key verification failed")
        || lower.contains("no ") && lower.contains("host key is known")
    {
        Some(format!(
            "no known host key for {} in {known_hosts}: pgstrap checks host keys strictly; add \
             the host's key after checking its fingerprint (the lab writes its own known_hosts)",
            target.address
        ))
    } else if lower.contains("permission denied") {
        Some(format!(
            "ssh refused the login as `{}`: check `ssh.user` and `ssh.identity_file` in the \
             inventory, or the agent's keys",
            target.user
        ))
    } else if lower.contains("connection refused")
        || lower.contains("timed out")
        || lower.contains("no route to host")
        || lower.contains("network is unreachable")
        || lower.contains("connection closed")
        || lower.contains("connection reset")
    {
        Some(format!(
            "is the host up and sshd listening on port {}? (lab hosts: `pgstrap lab status`)",
            target.port
        ))
    } else if lower.contains("could not resolve") {
        Some("check the host's `address` in the inventory".to_owned())
    } else {
        None
    }
}

/// For tests of the scripts pgstrap sends to hosts: `script` parses as POSIX sh (`sh -n`).
#[cfg(test)]
pub fn assert_valid_sh(script: &str) {
    let output = std::process::Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .expect("run sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Quote one word for a POSIX shell: safe words as they are, anything else in single quotes.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Join an argument list into one command line for the remote shell, each word quoted.
pub fn shell_join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| shell_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command to run on a host: an argument list, optional stdin (may hold secrets: it is never
/// shown, logged or serialized), and the text shown to the user instead of the raw argv.
#[derive(Clone, serde::Serialize)]
pub struct RemoteCommand {
    pub argv: Vec<String>,
    #[serde(skip)]
    pub stdin: Option<Vec<u8>>,
    /// What the user sees (`-v`, failures). Masked again before display.
    pub display: String,
}

impl fmt::Debug for RemoteCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCommand")
            .field("display", &self.display)
            .field(
                "stdin",
                &self.stdin.as_ref().map(|s| format!("{} bytes", s.len())),
            )
            .finish()
    }
}

impl RemoteCommand {
    /// A plain command; it is shown as its quoted argv.
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Self {
        let argv: Vec<String> = argv.iter().map(|a| a.as_ref().to_owned()).collect();
        let display = shell_join(&argv);
        Self {
            argv,
            stdin: None,
            display,
        }
    }

    /// A shell script run with `sh -c SCRIPT sh ARGS…`, shown as `display`.
    pub fn script<S: AsRef<str>>(script: &str, args: &[S], display: impl Into<String>) -> Self {
        let mut argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            "sh".to_owned(),
        ];
        argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
        Self {
            argv,
            stdin: None,
            display: display.into(),
        }
    }

    /// A shell script sent on stdin to `sh -s` (not in argv: long scripts, paths, no limits).
    pub fn stdin_script(script: String, display: impl Into<String>) -> Self {
        Self {
            argv: vec!["sh".to_owned(), "-s".to_owned()],
            stdin: Some(script.into_bytes()),
            display: display.into(),
        }
    }

    pub fn with_stdin(mut self, stdin: Vec<u8>) -> Self {
        self.stdin = Some(stdin);
        self
    }
}

/// What a finished remote command produced.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A remote command that could not be run or that failed. Its texts are already masked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandError {
    pub host: String,
    /// The command as shown to the user (masked).
    pub command: String,
    pub status: Option<i32>,
    /// The command's stderr (masked, trimmed).
    pub stderr: String,
    pub hint: Option<String>,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(code) => write!(f, "{}: `{}` exited with {code}", self.host, self.command)?,
            None => write!(f, "{}: `{}` did not finish", self.host, self.command)?,
        }
        if !self.stderr.is_empty() {
            write!(f, ": {}", self.stderr)?;
        }
        Ok(())
    }
}

/// A hint for a failed remote command, from its stderr.
pub fn command_hint(stderr: &str, target: &Target) -> Option<String> {
    if stderr.contains("sudo: a password is required")
        || stderr.contains("sudo: a terminal is required")
    {
        Some(format!(
            "`{}` needs passwordless sudo on {} (pgstrap runs `sudo -n`), or set `ssh.user: root`",
            target.user, target.host
        ))
    } else if stderr.contains("Could not get lock") || stderr.contains("dpkg was interrupted") {
        Some("another apt/dpkg run holds the lock or was interrupted: run `dpkg --configure -a` on the host".into())
    } else if stderr.contains("Temporary failure resolving") || stderr.contains("Failed to fetch") {
        Some("the host cannot reach its apt mirror: check its network or `apt.proxy` in the inventory".into())
    } else {
        None
    }
}

/// One open connection to a host (a ControlMaster; commands are multiplexed over it).
#[derive(Clone)]
pub struct Session {
    pub target: Target,
    inner: Arc<openssh::Session>,
    masker: Arc<dyn Mask>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.target.host)
            .finish()
    }
}

/// The directory holding the ControlMaster sockets (short path: socket names are limited).
fn control_directory() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pgstrap-ssh-{}", whoami_uid()));
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

fn whoami_uid() -> String {
    std::env::var("USER").unwrap_or_else(|_| "user".into())
}

/// Extra options need `-o`, which the builder has no call for: write them into an ssh config file
/// that comes first (ssh takes the first value it reads) and then includes the user's and the
/// system's config, so those still apply.
fn options_config(target: &Target, dir: &std::path::Path) -> std::io::Result<Option<PathBuf>> {
    if target.options.is_empty() {
        return Ok(None);
    }
    let mut text = String::from("# written by pgstrap for the inventory's ssh.options\nHost *\n");
    for (key, value) in &target.options {
        if !key.chars().all(|c| c.is_ascii_alphanumeric()) || value.contains(['\n', '\r', '"']) {
            return Err(std::io::Error::other(format!(
                "ssh option `{key}` is not a plain `Key: value` ssh option"
            )));
        }
        text.push_str(&format!("    {key} \"{value}\"\n"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let user = PathBuf::from(home).join(".ssh/config");
        if user.exists() {
            text.push_str(&format!("    Include \"{}\"\n", user.display()));
        }
    }
    text.push_str("    Include /etc/ssh/ssh_config\n");
    let path = dir.join(format!("config-{}", target.host));
    std::fs::write(&path, text)?;
    Ok(Some(path))
}

/// The arguments of the system `ssh` that reaches `target` as pgstrap does (its user, port,
/// identity file, known_hosts with strict host-key checking, the inventory's options), for a
/// person's interactive session (`pgstrap ssh`). `remote`: a command to run instead of a shell.
pub fn ssh_args(target: &Target, remote: &[String]) -> std::io::Result<Vec<String>> {
    let mut args: Vec<String> = vec![
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("ConnectTimeout={}", target.connect_timeout.max(1)),
        "-p".into(),
        target.port.to_string(),
        "-l".into(),
        target.user.clone(),
    ];
    if let Some(identity) = &target.identity_file {
        args.extend(["-i".into(), identity.display().to_string()]);
    }
    if let Some(known_hosts) = &target.known_hosts {
        args.extend([
            "-o".into(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
        ]);
    }
    if let Some(config) = options_config(target, &control_directory()?)? {
        args.extend(["-F".into(), config.display().to_string()]);
    }
    // The address is never taken for an option, nor the command for ssh's own arguments.
    args.extend(["--".into(), target.address.clone()]);
    args.extend(remote.iter().cloned());
    Ok(args)
}

impl Session {
    /// Open the ControlMaster to `target`. Host keys are always checked strictly.
    pub async fn connect(
        target: &Target,
        masker: impl Mask + 'static,
    ) -> Result<Session, ConnectError> {
        let fail = |message: String| ConnectError {
            host: target.host.clone(),
            address: target.address.clone(),
            hint: connect_hint(&message, target),
            message,
        };
        let dir = control_directory()
            .map_err(|e| fail(format!("cannot create the ssh control directory: {e}")))?;
        let mut builder = SessionBuilder::default();
        builder
            .user(target.user.clone())
            .port(target.port)
            .known_hosts_check(KnownHosts::Strict)
            .connect_timeout(Duration::from_secs(target.connect_timeout.max(1)))
            .server_alive_interval(Duration::from_secs(15))
            .control_directory(&dir);
        if let Some(identity) = &target.identity_file {
            builder.keyfile(identity);
        }
        if let Some(known_hosts) = &target.known_hosts {
            builder.user_known_hosts_file(known_hosts);
        }
        if let Some(config) = options_config(target, &dir).map_err(|e| fail(e.to_string()))? {
            builder.config_file(config);
        }
        let session = builder
            .connect_mux(&target.address)
            .await
            .map_err(|e| fail(error_text(&e)))?;
        Ok(Session {
            target: target.clone(),
            inner: Arc::new(session),
            masker: Arc::new(masker),
        })
    }

    /// Run a command and return its output whatever its exit status; errors only when it could
    /// not be run at all (connection lost).
    pub async fn output(&self, command: &RemoteCommand) -> Result<CommandOutput, CommandError> {
        let started = Instant::now();
        let mut argv: Vec<&str> = Vec::new();
        if self.target.become_root {
            argv.extend(["sudo", "-n", "--"]);
        }
        argv.extend(command.argv.iter().map(String::as_str));
        let line = shell_join(&argv);
        let lost = |message: String| CommandError {
            host: self.target.host.clone(),
            command: self.masker.mask(&command.display),
            status: None,
            stderr: self.masker.mask(&message),
            hint: Some(format!(
                "the connection to {} was lost; is the host up?",
                self.target.host
            )),
        };
        let mut child = self
            .inner
            .raw_command(line)
            .stdin(if command.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| lost(error_text(&e)))?;
        let stdin = child.stdin().take();
        let write = async {
            if let (Some(mut pipe), Some(data)) = (stdin, command.stdin.as_ref()) {
                // A failed write shows up as the command's own failure (it read a short input).
                let _ = pipe.write_all(data).await;
                let _ = pipe.shutdown().await;
            }
        };
        let (_, output) = tokio::join!(write, child.wait_with_output());
        let output = output.map_err(|e| lost(error_text(&e)))?;
        Ok(CommandOutput {
            status: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
            duration: started.elapsed(),
        })
    }

    /// Run a command; a non-zero exit is an error carrying the (masked) command and stderr.
    pub async fn run(&self, command: &RemoteCommand) -> Result<CommandOutput, CommandError> {
        let output = self.output(command).await?;
        if output.success() {
            Ok(output)
        } else {
            Err(self.failure(command, &output))
        }
    }

    /// The error for a command that ran and failed.
    pub fn failure(&self, command: &RemoteCommand, output: &CommandOutput) -> CommandError {
        let stderr = output.stderr_text();
        let stderr = stderr.trim();
        // Keep the end of a long stderr: the cause is usually last. 30 lines: a service that did
        // not start says so in one line followed by its last 20 journal lines.
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        CommandError {
            host: self.target.host.clone(),
            command: self.masker.mask(&command.display),
            status: output.status,
            stderr: self.masker.mask(&tail.join("\n")),
            hint: command_hint(stderr, &self.target),
        }
    }

    /// Read a file; `None` when it does not exist.
    pub async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, CommandError> {
        let command = RemoteCommand::script(
            r#"if [ -e "$1" ]; then exec cat -- "$1"; else exit 3; fi"#,
            &[path],
            format!("cat {}", shell_quote(path)),
        );
        let output = self.output(&command).await?;
        match output.status {
            Some(0) => Ok(Some(output.stdout)),
            Some(3) => Ok(None),
            _ => Err(self.failure(&command, &output)),
        }
    }

    /// Write `content` to `path` atomically: a temp file in the same directory (mode 0600 from
    /// the start), owner and mode set, checked against its sha256, then renamed over `path`.
    pub async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        owner: &str,
        group: &str,
        mode: u32,
    ) -> Result<CommandOutput, CommandError> {
        self.run(&write_file_command(path, content, owner, group, mode))
            .await
    }

    /// Close the ControlMaster.
    pub async fn close(self) {
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let _ = inner.close().await;
        }
    }
}

/// The script behind [`Session::write_file`]: content arrives on stdin; no half-written file is
/// ever visible at `path`.
pub const WRITE_FILE_SCRIPT: &str = r#"set -eu
dest=$1; owner=$2; group=$3; mode=$4; sum=$5
dir=$(dirname -- "$dest")
[ -d "$dir" ] || mkdir -p -- "$dir"
tmp=$(mktemp -- "$dir/.pgstrap.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
printf '%s  %s\n' "$sum" "$tmp" | sha256sum --check --status -
chown -- "$owner:$group" "$tmp"
chmod -- "$mode" "$tmp"
mv -f -T -- "$tmp" "$dest"
trap - EXIT
"#;

/// The command that writes a file atomically (content on stdin).
pub fn write_file_command(
    path: &str,
    content: &[u8],
    owner: &str,
    group: &str,
    mode: u32,
) -> RemoteCommand {
    use sha2::Digest;
    let sum = hex::encode(sha2::Sha256::digest(content));
    let mode_text = format!("{mode:04o}");
    RemoteCommand::script(
        WRITE_FILE_SCRIPT,
        &[path, owner, group, mode_text.as_str(), sum.as_str()],
        format!(
            "write {} ({} bytes, {owner}:{group} {mode_text})",
            shell_quote(path),
            content.len()
        ),
    )
    .with_stdin(content.to_vec())
}

/// The words of an `openssh` error and its causes (ssh's stderr is in the innermost).
fn error_text(error: &openssh::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    // The innermost cause is ssh's own message; keep the outer ones only when it is empty.
    let inner = parts.last().cloned().unwrap_or_default();
    if inner.trim().is_empty() {
        parts.join(": ")
    } else {
        inner.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("systemctl"), "systemctl");
        assert_eq!(
            shell_quote("/etc/pgbouncer/pgbouncer.ini"),
            "/etc/pgbouncer/pgbouncer.ini"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(
            shell_join(&["sh", "-c", "echo $1", "sh", "x;y"]),
            "sh -c 'echo $1' sh 'x;y'"
        );
    }

    fn target() -> Target {
        Target {
            host: "pg1".into(),
            address: "10.77.0.11".into(),
            user: "root".into(),
            port: 22,
            identity_file: None,
            known_hosts: Some("/var/lib/pgstrap/lab/known_hosts".into()),
            become_root: false,
            connect_timeout: 5,
            options: vec![],
        }
    }

    #[test]
    fn connect_hints_name_the_cause() {
        let t = target();
        let refused = connect_hint(
            "ssh: connect to host 10.77.0.11 port 22: Connection refused",
            &t,
        );
        assert!(refused.unwrap().contains("lab status"));
        let changed = connect_hint(
            "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
            &t,
        )
        .unwrap();
        assert!(changed.contains("ssh-keygen -R 10.77.0.11"), "{changed}");
        let unknown = connect_hint(
            "No ED25519 host key is known for 10.77.0.11 and you have requested strict checking.\r\nHost key verification failed.",
            &t,
        )
        .unwrap();
        assert!(unknown.contains("no known host key"), "{unknown}");
        assert!(
            connect_hint("root@10.77.0.11: Permission denied (publickey).", &t)
                .unwrap()
                .contains("ssh.user")
        );
    }

    #[test]
    fn write_file_keeps_content_out_of_argv_and_display() {
        let secret = "poison-password-XYZ";
        let command =
            write_file_command("/etc/x", secret.as_bytes(), "postgres", "postgres", 0o640);
        assert!(command.argv.iter().all(|a| !a.contains(secret)));
        assert!(!command.display.contains(secret));
        assert!(!format!("{command:?}").contains(secret));
        assert!(!serde_json::to_string(&command).unwrap().contains(secret));
        assert_eq!(
            command.argv[4..6],
            ["/etc/x".to_owned(), "postgres".to_owned()]
        );
        assert_eq!(command.argv[7], "0640");
    }
}
