//! Operations: pure functions of (desired state, facts) → a change (what, why, the commands) or
//! no change with its reason. Nothing here talks to a host; `exec` runs what these return.
//!
//! Primitives: packages (one apt transaction), directory, file (hash first, diff only when
//! different, secrets masked), sysctl, service, handlers, and a command with a guard.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::Digest;

use crate::connect::{shell_quote, write_file_command, RemoteCommand};
use crate::facts::{normalize_sysctl, Facts, PathState, ServiceStatus};
use crate::inventory::secrets::Masker;
use crate::state::{
    Directory, HandlerAction, HostState, ManagedFile, RoleState, Service, ServiceState,
};

/// Package lists older than this are refreshed before an install.
pub const APT_LISTS_MAX_AGE: u64 = 3600;

/// Where pgstrap persists the sysctls it sets.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-pgstrap.conf";

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Packages,
    Directory,
    File,
    Sysctl,
    Service,
    Handler,
    Command,
}

/// How applying a change alters the facts (so later steps of the same run plan on the truth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Packages were installed: gather the facts again.
    Regather,
    Path(String, PathState),
    Sysctl(String, String),
    Service(String, ServiceStatus),
    /// Run while no other host runs such a change (a quorum member's restart).
    OneHostAtATime,
}

/// Something to do on a host.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub kind: Kind,
    /// The path, unit, key or package list it is about.
    pub subject: String,
    /// What changes, in a few words (`create`, `content changed`, `start`…).
    pub summary: String,
    /// Why: what the host has now.
    pub why: String,
    /// A unified diff, secrets masked (files only; `None` when hidden or not a file).
    pub diff: Option<String>,
    pub commands: Vec<RemoteCommand>,
    #[serde(skip)]
    pub effect: Effect,
}

/// Nothing to do, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Noop {
    pub kind: Kind,
    pub subject: String,
    pub reason: String,
}

/// The result of planning one item.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Planned {
    Change(Change),
    Noop(Noop),
    /// Not done and not a failure (e.g. a sysctl a container cannot set).
    Warning {
        subject: String,
        message: String,
    },
}

impl Planned {
    fn noop(kind: Kind, subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Planned::Noop(Noop {
            kind,
            subject: subject.into(),
            reason: reason.into(),
        })
    }

    pub fn change(&self) -> Option<&Change> {
        match self {
            Planned::Change(change) => Some(change),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Packages

/// Installs packages with no service started during the install (a temporary policy-rc.d that
/// is removed on every exit path, and only when this script created it), refreshing the lists
/// first when asked, or once after a failed install.
pub const APT_SCRIPT: &str = r#"set -u
update=$1; shift
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ] || grep -q 'pgstrap: temporary' "$policy" 2>/dev/null; then
  printf '#!/bin/sh\n# pgstrap: temporary, no service starts during the install\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  created=1
fi
cleanup() { if [ "$created" = 1 ]; then rm -f "$policy"; fi; }
trap 'rc=$?; cleanup; exit $rc' EXIT
trap 'exit 130' INT TERM HUP
export DEBIAN_FRONTEND=noninteractive
opts="-q -y --no-install-recommends -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-unsafe-io -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
if [ "$update" = 1 ]; then
  apt-get -q -o DPkg::Lock::Timeout=120 update >/dev/null || exit
  apt-get install $opts "$@"
else
  if ! apt-get install $opts "$@"; then
    echo 'pgstrap: install failed; refreshing the package lists and trying once more' >&2
    apt-get -q -o DPkg::Lock::Timeout=120 update >/dev/null || exit
    apt-get install $opts "$@"
  fi
fi
"#;

/// All of a host's packages in ONE apt transaction.
pub fn plan_packages(packages: &[String], facts: &Facts) -> Planned {
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| {
            !facts
                .packages
                .get(p.as_str())
                .is_some_and(|s| s.installed())
        })
        .collect();
    if missing.is_empty() {
        return Planned::noop(
            Kind::Packages,
            "packages",
            format!("all {} packages are installed", packages.len()),
        );
    }
    let update = match facts.apt_lists_age {
        None => Some("no package lists yet".to_owned()),
        Some(age) if age > APT_LISTS_MAX_AGE => {
            Some(format!("package lists are {} min old", age / 60))
        }
        Some(_) => None,
    };
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    let mut args = vec![if update.is_some() { "1" } else { "0" }];
    args.extend(names.iter().copied());
    let display = format!(
        "{}apt-get install -y --no-install-recommends {}",
        if update.is_some() {
            "apt-get update && "
        } else {
            ""
        },
        names.join(" ")
    );
    Planned::Change(Change {
        kind: Kind::Packages,
        subject: "packages".into(),
        summary: format!("install {}", names.join(" ")),
        why: match update {
            Some(reason) => format!("{} not installed; {reason}", missing.len()),
            None => format!("{} not installed", missing.len()),
        },
        diff: None,
        commands: vec![RemoteCommand::script(APT_SCRIPT, &args, display)],
        effect: Effect::Regather,
    })
}

// ---------------------------------------------------------------------------------------------
// Directories

fn ownership_commands(path: &str, owner: &str, group: &str, mode: u32) -> RemoteCommand {
    let mode_text = format!("{mode:04o}");
    RemoteCommand::script(
        r#"set -e; chown -- "$2:$3" "$1"; chmod -- "$4" "$1""#,
        &[path, owner, group, mode_text.as_str()],
        format!(
            "chown {owner}:{group} {0} && chmod {mode_text} {0}",
            shell_quote(path)
        ),
    )
}

fn ownership_differences(
    owner: &str,
    group: &str,
    mode: u32,
    want: (&str, &str, u32),
) -> Vec<String> {
    let mut out = Vec::new();
    if owner != want.0 {
        out.push(format!("owner {owner} → {}", want.0));
    }
    if group != want.1 {
        out.push(format!("group {group} → {}", want.1));
    }
    if mode != want.2 {
        out.push(format!("mode {mode:04o} → {:04o}", want.2));
    }
    out
}

pub fn plan_directory(directory: &Directory, state: &PathState) -> Planned {
    let want = (
        directory.owner.as_str(),
        directory.group.as_str(),
        directory.mode,
    );
    let done = Effect::Path(
        directory.path.clone(),
        PathState::Directory {
            owner: directory.owner.clone(),
            group: directory.group.clone(),
            mode: directory.mode,
        },
    );
    match state {
        PathState::Directory { owner, group, mode } => {
            let differences = ownership_differences(owner, group, *mode, want);
            if differences.is_empty() {
                Planned::noop(
                    Kind::Directory,
                    &directory.path,
                    format!("exists, {owner}:{group} {mode:04o}"),
                )
            } else {
                Planned::Change(Change {
                    kind: Kind::Directory,
                    subject: directory.path.clone(),
                    summary: differences.join(", "),
                    why: "the directory exists with other ownership or mode".into(),
                    diff: None,
                    commands: vec![ownership_commands(&directory.path, want.0, want.1, want.2)],
                    effect: done,
                })
            }
        }
        other => {
            let mode_text = format!("{:04o}", directory.mode);
            Planned::Change(Change {
                kind: Kind::Directory,
                subject: directory.path.clone(),
                summary: format!("create ({}:{} {mode_text})", want.0, want.1),
                why: match other {
                    PathState::Missing => "does not exist".into(),
                    PathState::File { .. } => "a file is in the way (mkdir will fail)".into(),
                    PathState::Other { kind } => {
                        format!("a {kind} is in the way (mkdir will fail)")
                    }
                    PathState::Directory { .. } => unreachable!("matched above"),
                },
                diff: None,
                commands: vec![RemoteCommand::script(
                    r#"set -e; mkdir -p -- "$1"; chown -- "$2:$3" "$1"; chmod -- "$4" "$1""#,
                    &[directory.path.as_str(), want.0, want.1, mode_text.as_str()],
                    format!(
                        "mkdir -p {0} && chown {1}:{2} {0} && chmod {mode_text} {0}",
                        shell_quote(&directory.path),
                        want.0,
                        want.1
                    ),
                )],
                effect: done,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files

/// The sha256 of content, hex.
pub fn sha256_hex(content: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(content))
}

/// A unified diff of `old` → `new` for showing, secrets masked. `None` with a reason when it must
/// not or cannot be shown.
pub fn file_diff(
    path: &str,
    old: Option<&[u8]>,
    new: &str,
    sensitive: bool,
    masker: &Masker,
) -> Result<String, String> {
    let old_text = match old {
        None => String::new(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => return Err("content changed (the file on the host is not text)".into()),
        },
    };
    let (old_masked, new_masked) = if sensitive {
        sensitive_sides(&old_text, new, masker)?
    } else {
        let (old_masked, new_masked) = (masker.mask(&old_text), masker.mask(new));
        if old.is_some() && old_masked == new_masked {
            return Err("content changed (only secret values differ, diff hidden)".into());
        }
        (old_masked, new_masked)
    };
    let diff = similar::TextDiff::from_lines(&old_masked, &new_masked);
    let from = if old.is_some() {
        format!("{path} (on host)")
    } else {
        "/dev/null".into()
    };
    Ok(diff
        .unified_diff()
        .context_radius(3)
        .header(&from, &format!("{path} (pgstrap)"))
        .to_string())
}

/// Both sides of a file holding secrets, as a diff may show them: each secret as
/// `(sensitive)`, and on the new side `(sensitive, changed)` where the host's line of the same
/// shape holds another value. The host may hold values the masker does not know (a password a
/// rotation replaces): the values found at the secret lines' shapes on the host are masked
/// wherever they occur. A secret that spans lines (a private key) hides the whole diff.
fn sensitive_sides(old: &str, new: &str, masker: &Masker) -> Result<(String, String), String> {
    const HIDDEN: &str = "content changed (secret file, diff hidden)";
    if masker.has_multiline_secret_in(new) || [old, new].iter().any(|t| t.contains("PRIVATE KEY")) {
        return Err(HIDDEN.into());
    }
    let shapes: Vec<Vec<String>> = new
        .lines()
        .filter(|line| masker.contains_secret(line))
        .map(|line| masker.shape(line))
        .collect();
    let seen = old.lines().flat_map(|line| {
        shapes
            .iter()
            .filter_map(move |parts| crate::inventory::secrets::shape_values(line, parts))
            .flatten()
    });
    let old_masker = masker.with(seen.collect::<Vec<_>>());
    let old_masked: String = old
        .split_inclusive('\n')
        .map(|line| old_masker.mask_as(line, "(sensitive)"))
        .collect();
    let new_masked: String = new
        .split_inclusive('\n')
        .map(|line| {
            let line_text = line.trim_end_matches('\n');
            if !masker.contains_secret(line_text) {
                return line.to_owned();
            }
            let parts = masker.shape(line_text);
            let changed = !old.lines().any(|o| o == line_text)
                && old
                    .lines()
                    .any(|o| crate::inventory::secrets::shape_values(o, &parts).is_some());
            let marker = if changed {
                "(sensitive, changed)"
            } else {
                "(sensitive)"
            };
            masker.mask_as(line, marker)
        })
        .collect();
    // Whatever else the host's side holds of a known secret (it is a secret file).
    let old_masked = masker.mask_as(&old_masked, "(sensitive)");
    if old_masked == new_masked {
        return Err("content changed (only secret values differ, diff hidden)".into());
    }
    Ok((old_masked, new_masked))
}

/// A managed file. `current` is the content on the host, when it was read (only needed when
/// the hash differs, for the diff).
pub fn plan_file(
    file: &ManagedFile,
    state: &PathState,
    current: Option<&[u8]>,
    masker: &Masker,
) -> Planned {
    let want = (file.owner.as_str(), file.group.as_str(), file.mode);
    match state {
        PathState::File {
            owner,
            group,
            mode,
            sha256,
        } => plan_present_file(file, current, masker, owner, group, *mode, sha256),
        PathState::Missing => {
            let (diff, note) = diff_or_note(file, None, masker);
            Planned::Change(Change {
                kind: Kind::File,
                subject: file.path.clone(),
                summary: note.map_or_else(
                    || format!("create ({}:{} {:04o})", want.0, want.1, want.2),
                    |_| {
                        format!(
                            "create secret file ({}:{} {:04o}, content hidden)",
                            want.0, want.1, want.2
                        )
                    },
                ),
                why: "does not exist".into(),
                diff,
                commands: vec![write_file(file)],
                effect: file_done(file),
            })
        }
        PathState::Directory { .. } => Planned::Change(Change {
            kind: Kind::File,
            subject: file.path.clone(),
            summary: "replace a directory with a file (will fail: remove the directory first)"
                .into(),
            why: "a directory is in the way".into(),
            diff: None,
            commands: vec![write_file(file)],
            effect: file_done(file),
        }),
        PathState::Other { kind } => Planned::Change(Change {
            kind: Kind::File,
            subject: file.path.clone(),
            summary: format!("replace a {kind} with the rendered file"),
            why: format!("a {kind} is at the path"),
            diff: None,
            commands: vec![write_file(file)],
            effect: file_done(file),
        }),
    }
}

/// A managed file the host has (`owner`, `group`, `mode`, `sha256` there): nothing to do, its
/// ownership or mode fixed without rewriting it, or rewritten (with a diff).
fn plan_present_file(
    file: &ManagedFile,
    current: Option<&[u8]>,
    masker: &Masker,
    owner: &str,
    group: &str,
    mode: u32,
    sha256: &str,
) -> Planned {
    let want = (file.owner.as_str(), file.group.as_str(), file.mode);
    let differences = ownership_differences(owner, group, mode, want);
    if sha256 == file.sha256 {
        if differences.is_empty() {
            return Planned::noop(
                Kind::File,
                &file.path,
                format!(
                    "content matches (sha256 {}…), {owner}:{group} {mode:04o}",
                    &sha256[..12.min(sha256.len())]
                ),
            );
        }
        return Planned::Change(Change {
            kind: Kind::File,
            subject: file.path.clone(),
            summary: differences.join(", "),
            why: "content matches; ownership or mode differ (fixed without rewriting)".into(),
            diff: None,
            commands: vec![ownership_commands(&file.path, want.0, want.1, want.2)],
            effect: file_done(file),
        });
    }
    let (diff, note) = diff_or_note(file, current, masker);
    let mut summary = note.unwrap_or_else(|| "content changed".into());
    if !differences.is_empty() {
        summary.push_str(&format!("; {}", differences.join(", ")));
    }
    Planned::Change(Change {
        kind: Kind::File,
        subject: file.path.clone(),
        summary,
        why: format!(
            "sha256 on host {}… ≠ rendered {}…",
            &sha256[..12.min(sha256.len())],
            &file.sha256[..12.min(file.sha256.len())]
        ),
        diff,
        commands: vec![write_file(file)],
        effect: file_done(file),
    })
}

/// What the host has once the managed file is written.
fn file_done(file: &ManagedFile) -> Effect {
    Effect::Path(
        file.path.clone(),
        PathState::File {
            owner: file.owner.clone(),
            group: file.group.clone(),
            mode: file.mode,
            sha256: file.sha256.clone(),
        },
    )
}

/// The command that writes the managed file (content, owner, group, mode).
fn write_file(file: &ManagedFile) -> RemoteCommand {
    write_file_command(
        &file.path,
        file.content.as_bytes(),
        &file.owner,
        &file.group,
        file.mode,
    )
}

/// The diff from `old` (None: no file) to the managed file's content, or the note said instead
/// when it is hidden (a secret).
fn diff_or_note(
    file: &ManagedFile,
    old: Option<&[u8]>,
    masker: &Masker,
) -> (Option<String>, Option<String>) {
    match file_diff(&file.path, old, &file.content, file.sensitive, masker) {
        Ok(diff) => (Some(diff), None),
        Err(note) => (None, Some(note)),
    }
}

// ---------------------------------------------------------------------------------------------
// Sysctls

/// The persisted sysctl file of a host (every role's sysctls; a later role wins on the same key).
pub fn sysctl_file(host: &HostState) -> Option<ManagedFile> {
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    for role in &host.roles {
        for sysctl in &role.sysctls {
            values.insert(&sysctl.key, &sysctl.value);
        }
    }
    if values.is_empty() {
        return None;
    }
    let mut content = String::from(
        "# Generated by pgstrap: do not edit here; change the inventory and run `pgstrap apply`.\n",
    );
    for (key, value) in values {
        content.push_str(&format!("{key} = {value}\n"));
    }
    Some(ManagedFile {
        path: SYSCTL_FILE.into(),
        template: "(built in)".into(),
        template_origin: "pgstrap".into(),
        sha256: sha256_hex(content.as_bytes()),
        content,
        owner: "root".into(),
        group: "root".into(),
        mode: 0o644,
        sensitive: false,
        identity: None,
        notify: vec![],
    })
}

/// One runtime sysctl. In a container only `net.*` keys can be set: the others are a warning.
pub fn plan_sysctl(key: &str, value: &str, facts: &Facts) -> Planned {
    let want = normalize_sysctl(value);
    match facts.sysctls.get(key) {
        Some(Some(current)) if *current == want => {
            Planned::noop(Kind::Sysctl, key, format!("already {want}"))
        }
        current => {
            let now = match current {
                Some(Some(v)) => v.clone(),
                _ => "not present".into(),
            };
            if let Some(container) = &facts.container {
                if !key.starts_with("net.") {
                    return Planned::Warning {
                        subject: key.into(),
                        message: format!(
                            "{key} is {now}, wanted {want}: a {container} container cannot set it \
                             (only net.* are writable); persisted in {SYSCTL_FILE} for a real host"
                        ),
                    };
                }
            }
            let assignment = format!("{key}={want}");
            Planned::Change(Change {
                kind: Kind::Sysctl,
                subject: key.into(),
                summary: format!("{now} → {want}"),
                why: format!("the running kernel has {now}"),
                diff: None,
                commands: vec![RemoteCommand::new(&[
                    "sysctl",
                    "-q",
                    "-w",
                    assignment.as_str(),
                ])],
                effect: Effect::Sysctl(key.into(), want),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Services

/// How long a unit may stay `activating` before its start is reported as failed. etcd members
/// legitimately wait for their peers, which the engine starts at the same time (one phase, every
/// host in parallel): this leaves them time to find each other.
pub const SERVICE_START_TIMEOUT_SECS: u64 = 90;

/// Starts or restarts (`$2`) a unit (`$1`) and reports a failure within a second or so, not when
/// systemd's own start timeout runs out (a Type=notify unit that never becomes ready blocks
/// `systemctl start` for minutes): `systemctl` runs in the background while the unit's state is
/// polled every 0.25 s. Failed as soon as the unit is `failed` (seen twice in a row) or systemd is
/// restarting it (it crashed), or when it is not active after `$3` seconds; the message names the unit, its state
/// and its last journal lines (the engine masks secrets in it). A unit left `failed` by an
/// earlier run is reset first, so its old state is not taken for the new start's.
pub const SERVICE_START_SCRIPT: &str = r#"set -u
unit=$1; verb=$2; limit=$3
active=unknown; sub=unknown; result=unknown; restarts=0; job=
state() {
  text=$(systemctl show -p ActiveState -p SubState -p Result -p NRestarts -- "$unit") || return 1
  active=$(printf '%s\n' "$text" | sed -n 's/^ActiveState=//p')
  sub=$(printf '%s\n' "$text" | sed -n 's/^SubState=//p')
  result=$(printf '%s\n' "$text" | sed -n 's/^Result=//p')
  restarts=$(printf '%s\n' "$text" | sed -n 's/^NRestarts=//p')
  case $restarts in ''|*[!0-9]*) restarts=0 ;; esac
}
elapsed() { echo $(( $(date +%s) - started )); }
fail() {
  if [ -n "$job" ]; then kill "$job" 2>/dev/null; fi
  echo "$unit did not $verb: $1 (state $active/$sub, result $result, $restarts restart(s)); its last journal lines:" >&2
  journalctl -u "$unit" -n 20 --no-pager -o short-iso >&2 2>&1
  exit 1
}
state || exit 1
if [ "$active" = failed ]; then
  systemctl reset-failed -- "$unit" 2>/dev/null
  state || exit 1
fi
before=$restarts
started=$(date +%s)
systemctl "$verb" -- "$unit" &
job=$!
failed=0
while kill -0 "$job" 2>/dev/null; do
  state
  # Twice in a row: a restart may pass through `failed` for an instant on its way back up.
  if [ "$active" = failed ]; then failed=$((failed + 1)); else failed=0; fi
  if [ "$failed" -ge 2 ]; then fail "it failed after $(elapsed) s"; fi
  if [ "$sub" = auto-restart ] || [ "$restarts" -gt "$before" ]; then
    fail "it exited after $(elapsed) s and systemd is restarting it"
  fi
  if [ "$(elapsed)" -ge "$limit" ]; then fail "still $active after $limit s"; fi
  sleep 0.25
done
wait "$job"; code=$?
job=
state
if [ "$code" = 0 ] && [ "$active" = active ]; then exit 0; fi
fail "systemctl $verb exited with $code after $(elapsed) s"
"#;

/// `systemctl start|restart UNIT`, watched by [`SERVICE_START_SCRIPT`].
pub fn start_command(verb: &str, unit: &str) -> RemoteCommand {
    let limit = SERVICE_START_TIMEOUT_SECS.to_string();
    RemoteCommand::script(
        SERVICE_START_SCRIPT,
        &[unit, verb, limit.as_str()],
        format!("systemctl {verb} {}", shell_quote(unit)),
    )
}

/// A unit to the state the role asks. Orchestrated units are enabled only, never started here.
pub fn plan_service(service: &Service, status: Option<&ServiceStatus>) -> Planned {
    let unknown = ServiceStatus {
        enabled: "not-found".into(),
        active: "inactive".into(),
    };
    let status = status.unwrap_or(&unknown);
    let name = service.name.as_str();
    let (want_enabled, want_active) = match service.state {
        ServiceState::Started => (true, Some(true)),
        ServiceState::Stopped => (true, Some(false)),
        ServiceState::Disabled => (false, Some(false)),
        ServiceState::Orchestrated => (true, None),
    };
    let mut actions: Vec<&str> = Vec::new();
    let enabled_ok = status.is_enabled() == want_enabled
        // A static unit cannot be enabled or disabled: leave it.
        || status.enabled == "static";
    if !enabled_ok {
        actions.push(if want_enabled { "enable" } else { "disable" });
    }
    if let Some(active) = want_active {
        if status.is_active() != active {
            actions.push(if active { "start" } else { "stop" });
        }
    }
    if actions.is_empty() {
        let reason = match service.state {
            ServiceState::Orchestrated => format!(
                "{} and {} (started by an orchestration, not here)",
                status.enabled, status.active
            ),
            _ => format!("{} and {}", status.enabled, status.active),
        };
        return Planned::noop(Kind::Service, name, reason);
    }
    let commands = actions
        .iter()
        .map(|action| match *action {
            "start" => start_command("start", name),
            action => RemoteCommand::new(&["systemctl", action, name]),
        })
        .collect();
    let after = ServiceStatus {
        enabled: if want_enabled || status.enabled == "static" {
            if status.enabled == "static" {
                "static".into()
            } else {
                "enabled".into()
            }
        } else {
            "disabled".into()
        },
        active: match want_active {
            Some(true) => "active".into(),
            Some(false) => "inactive".into(),
            None => status.active.clone(),
        },
    };
    Planned::Change(Change {
        kind: Kind::Service,
        subject: name.into(),
        summary: actions.join(" + "),
        why: if status.exists() {
            format!("{} and {}", status.enabled, status.active)
        } else {
            "the unit is not installed yet".into()
        },
        diff: None,
        commands,
        effect: Effect::Service(name.into(), after),
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// A handler that fired, or why it did not.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HandlerFiring {
    pub name: String,
    pub action: HandlerAction,
    pub service: Option<String>,
}

/// The handlers of `role` to run, given the names notified by files that change in this run, the
/// services this run starts, and whether each service will be running. Deduplicated (one reload
/// per service even if several files notify it); returns daemon-reloads and the others apart,
/// because a daemon-reload must happen before any service is started or restarted.
pub fn plan_handlers(
    role: &RoleState,
    notified: &BTreeSet<String>,
    started_now: &BTreeSet<String>,
    running: &dyn Fn(&str) -> bool,
) -> (Vec<Planned>, Vec<Planned>) {
    let mut daemon_reloads = Vec::new();
    let mut others = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for handler in &role.handlers {
        if !notified.contains(&handler.name) {
            continue;
        }
        let key = (
            format!("{:?}", handler.action),
            handler.service.clone().unwrap_or_default(),
        );
        if !seen.insert(key) {
            continue;
        }
        match (handler.action, &handler.service) {
            (HandlerAction::DaemonReload, _) => {
                daemon_reloads.push(Planned::Change(daemon_reload(&handler.name)))
            }
            (action, Some(service)) => {
                let verb = if action == HandlerAction::Reload {
                    "reload"
                } else {
                    "restart"
                };
                if started_now.contains(service) {
                    others.push(Planned::noop(
                        Kind::Handler,
                        &handler.name,
                        format!("{service} is started by this run with the new configuration"),
                    ));
                } else if !running(service) {
                    others.push(Planned::noop(
                        Kind::Handler,
                        &handler.name,
                        format!("{service} is not running: it reads the new configuration when it starts"),
                    ));
                } else {
                    others.push(Planned::Change(Change {
                        kind: Kind::Handler,
                        subject: handler.name.clone(),
                        summary: format!("systemctl {verb} {service}"),
                        why: "a file it reads changed".into(),
                        diff: None,
                        commands: vec![match action {
                            HandlerAction::Restart => start_command("restart", service),
                            _ => RemoteCommand::new(&["systemctl", verb, service.as_str()]),
                        }],
                        effect: if handler.one_at_a_time {
                            Effect::OneHostAtATime
                        } else {
                            Effect::None
                        },
                    }));
                }
            }
            (_, None) => others.push(Planned::Warning {
                subject: handler.name.clone(),
                message: format!("handler `{}` names no service; not run", handler.name),
            }),
        }
    }
    (daemon_reloads, others)
}

/// `systemctl daemon-reload`, as the handler `name`.
fn daemon_reload(name: &str) -> Change {
    Change {
        kind: Kind::Handler,
        subject: name.to_owned(),
        summary: "systemctl daemon-reload".into(),
        why: "a unit file or drop-in changed".into(),
        diff: None,
        commands: vec![RemoteCommand::new(&["systemctl", "daemon-reload"])],
        effect: Effect::None,
    }
}

/// The name of the host's one daemon-reload (the roles' handlers share it).
pub const DAEMON_RELOAD: &str = "systemd daemon-reload";

/// True when `planned` (the plan of `file`) rewrites its content, not only ownership or mode:
/// what the file's handlers follow.
fn rewrites_content(file: &ManagedFile, facts: &Facts, planned: &Planned) -> bool {
    planned.change().is_some()
        && !matches!(facts.path(&file.path), PathState::File { sha256, .. } if *sha256 == file.sha256)
}

/// The systemd unit files and drop-ins of all of a host's roles (split off by
/// [`RoleState::split_unit_files`]), one plan per file in order, then ONE `systemctl
/// daemon-reload` when any content changes: a host reloads systemd once per run, however many of
/// its roles have units, and before any of its services starts.
pub fn plan_units(
    files: &[&ManagedFile],
    facts: &Facts,
    contents: &BTreeMap<String, Vec<u8>>,
    masker: &Masker,
) -> (Vec<Planned>, Option<Planned>) {
    let mut reload = false;
    let planned = files
        .iter()
        .map(|file| {
            let planned = plan_file(
                file,
                facts.path(&file.path),
                contents.get(&file.path).map(Vec::as_slice),
                masker,
            );
            reload |= rewrites_content(file, facts, &planned);
            planned
        })
        .collect();
    (
        planned,
        reload.then(|| Planned::Change(daemon_reload(DAEMON_RELOAD))),
    )
}

// ---------------------------------------------------------------------------------------------
// Command with a guard

/// A command run only when its guard says so: `unless` exits 0 → already done.
#[derive(Debug, Clone, Serialize)]
pub struct GuardedCommand {
    pub name: String,
    pub command: Vec<String>,
    /// Skip the command when this exits 0 (e.g. `test -e /var/lib/x/done`).
    pub unless: Option<Vec<String>>,
}

/// `guard_status`: the exit status of `unless` on the host (`None` when there is no guard).
pub fn plan_command(command: &GuardedCommand, guard_status: Option<i32>) -> Planned {
    if guard_status == Some(0) {
        let guard = command
            .unless
            .as_deref()
            .map(crate::connect::shell_join)
            .unwrap_or_default();
        return Planned::noop(
            Kind::Command,
            &command.name,
            format!("guard `{guard}` succeeded"),
        );
    }
    Planned::Change(Change {
        kind: Kind::Command,
        subject: command.name.clone(),
        summary: crate::connect::shell_join(&command.command),
        why: match guard_status {
            None => "no guard: always runs".into(),
            Some(code) => format!("guard exited {code}"),
        },
        diff: None,
        commands: vec![RemoteCommand::new(&command.command)],
        effect: Effect::None,
    })
}

// ---------------------------------------------------------------------------------------------
// A whole role

/// The ordered steps of one role on one host: directories → files → daemon-reload → sysctls →
/// services → reload/restart handlers. `sysctl_file` is the host's persisted sysctl file when
/// this role is the first one with sysctls.
pub fn plan_role(
    role: &RoleState,
    facts: &Facts,
    contents: &BTreeMap<String, Vec<u8>>,
    sysctl_file: Option<&ManagedFile>,
    masker: &Masker,
) -> Vec<Planned> {
    let mut steps = Vec::new();
    for directory in &role.directories {
        steps.push(plan_directory(directory, facts.path(&directory.path)));
    }
    let mut notified = BTreeSet::new();
    for file in &role.files {
        let planned = plan_file(
            file,
            facts.path(&file.path),
            contents.get(&file.path).map(Vec::as_slice),
            masker,
        );
        // Handlers follow content: a change of ownership or mode only fires none.
        if rewrites_content(file, facts, &planned) {
            notified.extend(file.notify.iter().cloned());
        }
        steps.push(planned);
    }
    let mut services_plan = Vec::new();
    let mut started_now = BTreeSet::new();
    let mut running_after: BTreeMap<String, bool> = BTreeMap::new();
    for service in &role.services {
        let status = facts.services.get(&service.name);
        let planned = plan_service(service, status);
        let was_active = status.is_some_and(ServiceStatus::is_active);
        let mut now_active = was_active;
        if let Planned::Change(change) = &planned {
            if let Effect::Service(_, after) = &change.effect {
                now_active = after.is_active();
                if now_active && !was_active {
                    started_now.insert(service.name.clone());
                }
            }
        }
        running_after.insert(service.name.clone(), now_active);
        services_plan.push(planned);
    }
    let running = |service: &str| {
        running_after.get(service).copied().unwrap_or_else(|| {
            facts
                .services
                .get(service)
                .is_some_and(ServiceStatus::is_active)
        })
    };
    let (daemon_reloads, handlers) = plan_handlers(role, &notified, &started_now, &running);
    steps.extend(daemon_reloads);
    if let Some(file) = sysctl_file {
        steps.push(plan_file(
            file,
            facts.path(&file.path),
            contents.get(&file.path).map(Vec::as_slice),
            masker,
        ));
    }
    for sysctl in &role.sysctls {
        steps.push(plan_sysctl(&sysctl.key, &sysctl.value, facts));
    }
    steps.extend(services_plan);
    steps.extend(handlers);
    steps
}

/// Apply a change's effect to the facts, after the change was applied.
pub fn record_effect(facts: &mut Facts, effect: &Effect) {
    match effect {
        Effect::None | Effect::Regather | Effect::OneHostAtATime => {}
        Effect::Path(path, state) => {
            facts.paths.insert(path.clone(), state.clone());
        }
        Effect::Sysctl(key, value) => {
            facts.sysctls.insert(key.clone(), Some(value.clone()));
        }
        Effect::Service(name, status) => {
            facts.services.insert(name.clone(), status.clone());
        }
    }
}

/// What to ask a host about for `host`'s desired state.
pub fn facts_request(host: &HostState) -> crate::facts::Request {
    let mut paths: Vec<String> = Vec::new();
    let mut services = Vec::new();
    let mut sysctls = Vec::new();
    for role in &host.roles {
        paths.extend(role.directories.iter().map(|d| d.path.clone()));
        paths.extend(role.files.iter().map(|f| f.path.clone()));
        services.extend(role.services.iter().map(|s| s.name.clone()));
        for handler in &role.handlers {
            if let Some(service) = &handler.service {
                services.push(service.clone());
            }
        }
        sysctls.extend(role.sysctls.iter().map(|s| s.key.clone()));
    }
    if !sysctls.is_empty() {
        paths.push(SYSCTL_FILE.into());
    }
    let dedup = |mut v: Vec<String>| {
        let mut seen = BTreeSet::new();
        v.retain(|x| seen.insert(x.clone()));
        v
    };
    crate::facts::Request {
        packages: host.packages(),
        paths: dedup(paths),
        services: dedup(services),
        sysctls: dedup(sysctls),
    }
}

#[cfg(test)]
mod tests;
