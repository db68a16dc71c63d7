//! The engine's runner: brings hosts to their desired state (or only plans it). Per host: connect,
//! gather facts (one round trip), all packages in one apt transaction, every role's systemd unit
//! files and one daemon-reload; then the roles by ascending phase with a barrier between phases
//! across hosts (etcd everywhere before Patroni…). Hosts run in parallel up to a limit; a failed
//! step stops that host only. Every step reports an [`Event`] to one channel that the UI draws;
//! the result is a [`Report`]. The engine is also the door to the hosts: every SSH session to an
//! inventory host is opened through [`open`] (by name: [`connect`]), with the inventory's settings
//! turned into a `connect::Target` by [`target`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::connect::{CommandError, ConnectError, RemoteCommand, Session, Target};
use crate::error::{Error, Result};
use crate::facts::{self, Facts, PathState};
use crate::inventory::secrets::{Masker, Secrets};
use crate::inventory::{Host, Inventory};
use crate::ops::{self, Kind, Planned};
use crate::project::Project;
use crate::state::{DesiredState, HostState, ManagedFile};

/// Plan only (read facts, change nothing) or apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Plan,
    Apply,
}

/// What the caller can choose.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts worked on at the same time.
    pub parallel: usize,
    /// Only these hosts (inventory names); `None`: all.
    pub hosts: Option<Vec<String>>,
    /// Only these roles (e.g. `common`, `pgbouncer`); `None`: all.
    pub roles: Option<Vec<String>>,
    /// Where events go (the UI); `None`: nowhere.
    pub events: Option<UnboundedSender<Event>>,
    /// Connections already open (by an orchestration), reused instead of connecting again.
    pub sessions: BTreeMap<String, Session>,
    /// A deliberate password rotation (`rotate passwords`): hosts holding other passwords than
    /// the inventory are brought to it instead of refused (another CA still is).
    pub rotating_passwords: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            parallel: 32,
            hosts: None,
            roles: None,
            events: None,
            sessions: BTreeMap::new(),
            rotating_passwords: false,
        }
    }
}

/// Something that happened on a host, for the UI.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run starts with these hosts.
    Started {
        hosts: Vec<String>,
        mode: Mode,
    },
    /// A host moved to a new step (`connect`, `facts`, `packages`, `phase 50 pgbouncer`…).
    Step {
        host: String,
        step: String,
    },
    /// A remote command finished (display masked).
    Command {
        host: String,
        command: String,
        duration_ms: u64,
        ok: bool,
    },
    /// A change was planned (plan) or applied (apply).
    Change {
        host: String,
        kind: Kind,
        subject: String,
        summary: String,
    },
    Warning {
        host: String,
        message: String,
    },
    /// A stage of an orchestration on top of the engine (a health gate, a Patroni start…).
    Stage {
        message: String,
    },
    /// The host is done.
    Finished {
        host: String,
        status: HostStatus,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Nothing to change.
    Ok,
    /// Changes were applied (or would be, in a plan).
    Changed,
    /// A step failed; the host's later steps did not run.
    Failed,
    /// No SSH connection.
    Unreachable,
}

/// One change, planned or applied.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeRecord {
    /// `None` for the packages step (before every phase).
    pub phase: Option<u32>,
    pub role: Option<String>,
    pub kind: Kind,
    pub subject: String,
    pub summary: String,
    pub why: String,
    pub diff: Option<String>,
    /// The commands (masked), as shown with `-v`.
    pub commands: Vec<String>,
    pub applied: bool,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoopRecord {
    pub role: Option<String>,
    pub kind: Kind,
    pub subject: String,
    pub reason: String,
}

/// Why a host stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The step that failed (`connect`, `facts`, `packages`, `/etc/x`…).
    pub step: String,
    /// The command (masked), when a command failed.
    pub command: Option<String>,
    /// ssh's or the command's stderr (masked).
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub connect_ms: u64,
    pub facts_ms: u64,
    pub total_ms: u64,
    /// Remote commands run and their summed time.
    pub commands: u32,
    pub commands_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub address: String,
    pub status: HostStatus,
    pub changes: Vec<ChangeRecord>,
    pub noops: Vec<NoopRecord>,
    pub warnings: Vec<String>,
    /// Handlers fired (`reload pgbouncer`…).
    pub handlers: Vec<String>,
    pub failure: Option<Failure>,
    pub timings: Timings,
}

impl HostReport {
    /// What was changed (or would be) on the host; the handlers those changes fired (a reload,
    /// a restart) are not counted: they are listed beside.
    pub fn change_count(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.kind != Kind::Handler)
            .count()
    }

    /// The time this host itself took: its connection, its facts and its remote commands (the
    /// rest of a run's time it waits for the other hosts of a phase).
    pub fn own_ms(&self) -> u64 {
        self.timings.connect_ms + self.timings.facts_ms + self.timings.commands_ms
    }

    /// A host not worked on yet: ok, nothing done.
    pub fn new(host: &str, address: &str) -> Self {
        Self {
            host: host.to_owned(),
            address: address.to_owned(),
            status: HostStatus::Ok,
            changes: vec![],
            noops: vec![],
            warnings: vec![],
            handlers: vec![],
            failure: None,
            timings: Timings::default(),
        }
    }
}

/// The result of a plan or an apply.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub hosts: Vec<HostReport>,
    pub duration_ms: u64,
}

impl Report {
    /// 0 when every host is ok or changed, 1 when any failed or was unreachable.
    pub fn exit_code(&self) -> i32 {
        if self
            .hosts
            .iter()
            .any(|h| matches!(h.status, HostStatus::Failed | HostStatus::Unreachable))
        {
            1
        } else {
            0
        }
    }

    pub fn total_changes(&self) -> usize {
        self.hosts.iter().map(HostReport::change_count).sum()
    }

    pub fn host(&self, name: &str) -> Option<&HostReport> {
        self.hosts.iter().find(|h| h.host == name)
    }
}

/// Plan: what `apply` would change on each host of the project (reads facts only; writes nothing,
/// not even locally: secrets or certificates it would make up stay in memory).
pub async fn plan(project: &Project, options: Options) -> Result<Report> {
    Ok(plan_with_releases(project, options).await?.0)
}

/// [`plan`], with the project that carries the releases read from the hosts, for what the
/// command renders next (`pgstrap plan`'s cluster steps).
pub async fn plan_with_releases(project: &Project, options: Options) -> Result<(Report, Project)> {
    let secrets = project.secrets(true)?;
    let prepared = prepare(project, &secrets, &options).await?;
    let project = prepared.project.clone();
    Ok((prepared.run(Mode::Plan, options).await, project))
}

/// Apply: bring each host of the project to its desired state.
pub async fn apply(project: &Project, options: Options) -> Result<Report> {
    let secrets = project.secrets(true)?;
    let prepared = prepare(project, &secrets, &options).await?;
    project.persist(&secrets)?;
    Ok(prepared.run(Mode::Apply, options).await)
}

/// What an engine run needs: each selected host's desired state, rendered for the Debian release
/// the host runs, and the connections opened to learn that release (the run reuses them).
pub struct Prepared {
    /// The project with the releases read from the hosts: what the command goes on with.
    pub project: Project,
    pub desired: DesiredState,
    pub targets: Vec<Target>,
    /// Open connections by host; a host missing here could not be reached.
    pub sessions: BTreeMap<String, Session>,
    /// Hosts that could not be reached, with the error and its hint.
    pub unreachable: Vec<(String, ConnectError)>,
}

impl Prepared {
    /// Run the engine over the prepared state, reusing the open connections.
    pub async fn run(self, mode: Mode, mut options: Options) -> Report {
        options.sessions.extend(self.sessions);
        run(self.desired, self.targets, mode, options).await
    }
}

/// Run `step`, saying at debug level (`-vv`) how long it took: where a command's time goes.
pub async fn timed<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = step.await;
    tracing::debug!("{what}: {} ms", started.elapsed().as_millis());
    out
}

/// Check the options, connect to the selected hosts (in parallel, reusing connections in
/// `options.sessions`), learn each host's release from `/etc/os-release` (one short command),
/// render the desired state for those releases with `secrets` (the prepared project carries
/// them: the command goes on with it), and refuse when a host holds
/// another identity than it would write ([`identity`]). Before changing anything, the caller
/// persists what `secrets` made up (`Project::persist`).
///
/// Round trips per host before any change: the release read ([`releases`]), the identity read
/// (only on hosts whose roles mark identity files), then the run's facts (`HostRun::gather`).
/// The release is read apart from the facts on purpose: it decides the desired state, and the
/// desired state decides what the facts script asks (packages, paths, services, sysctls); the
/// identity read must refuse before anything changes on any host, and the facts are read when
/// the host's run starts (an orchestration may change hosts between `prepare` and the run, so
/// facts read here could be stale). The release read and the facts share one reader of
/// `/etc/os-release` (`facts::host_sections`).
pub async fn prepare(project: &Project, secrets: &Secrets, options: &Options) -> Result<Prepared> {
    if let Some(hosts) = &options.hosts {
        for name in hosts {
            if !project.inventory.hosts.contains_key(name) {
                let known: Vec<&str> = project.inventory.hosts.keys().map(String::as_str).collect();
                return Err(Error::usage(
                    format!("--host: no host `{name}` in the inventory"),
                    Some(format!("hosts are: {}", known.join(", "))),
                ));
            }
        }
    }
    if let Some(roles) = &options.roles {
        for name in roles {
            if !crate::role::names().contains(&name.as_str()) {
                return Err(Error::usage(
                    format!("--roles: no role `{name}`"),
                    Some(format!("roles are: {}", crate::role::names().join(", "))),
                ));
            }
        }
    }
    let targets = targets(project, options.hosts.as_deref());
    let (sessions, unreachable) = timed(
        "connect",
        connect_all(&targets, &options.sessions, &secrets.masker()),
    )
    .await;
    let project = project.with_releases(timed("releases", releases(&sessions)).await);
    let mut desired = crate::render::desired_state(&project, secrets, options.hosts.as_deref())?;
    let store = crate::exec::identity::Store::of(&project);
    timed(
        "identity",
        identity::check(
            &desired,
            &sessions,
            secrets,
            &store,
            options.rotating_passwords,
        ),
    )
    .await?;
    if let Some(roles) = &options.roles {
        for host in &mut desired.hosts {
            host.roles.retain(|r| roles.contains(&r.role));
        }
    }
    Ok(Prepared {
        project,
        desired,
        targets,
        sessions,
        unreachable,
    })
}

// The door to the hosts: every SSH session pgstrap opens to an inventory host is opened by the
// functions below (`connect` knows addresses and ssh options only; the inventory's settings are
// turned into a `Target` here), so how a host is reached is decided in one place.

/// The inventory's secrets mask what `connect` shows (commands, stderr).
impl crate::connect::Mask for Masker {
    fn mask(&self, text: &str) -> String {
        Masker::mask(self, text)
    }
}

/// How to reach `host`: the inventory's `ssh` settings (a host's `ssh_port` beats `ssh.port`).
pub fn target(inventory: &Inventory, host: &Host) -> Target {
    let ssh = &inventory.ssh;
    Target {
        host: host.name.clone(),
        address: host.address.to_string(),
        user: ssh.user.clone(),
        port: host.ssh_port.unwrap_or(ssh.port),
        identity_file: ssh.identity_file.clone(),
        known_hosts: ssh.known_hosts.clone(),
        become_root: ssh.become_root && ssh.user != "root",
        connect_timeout: ssh.connect_timeout,
        options: ssh
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The targets of the inventory's hosts in inventory order: all, or only those named.
pub fn targets(project: &Project, only: Option<&[String]>) -> Vec<Target> {
    project
        .inventory
        .hosts
        .values()
        .filter(|h| only.is_none_or(|only| only.contains(&h.name)))
        .map(|h| target(&project.inventory, h))
        .collect()
}

/// Open a session to `target` (host keys checked strictly; what it shows is masked).
pub async fn open(target: &Target, masker: &Masker) -> std::result::Result<Session, ConnectError> {
    Session::connect(target, masker.clone()).await
}

/// One session to the inventory host named `host`, for orchestrations outside an engine run
/// (commands masked with the inventory's secrets).
pub async fn connect(project: &Project, host: &str, secrets: &Secrets) -> Result<Session> {
    let inventory_host = project
        .inventory
        .hosts
        .get(host)
        .ok_or_else(|| Error::failure(format!("no host {host} in the inventory"), None))?;
    open(
        &target(&project.inventory, inventory_host),
        &secrets.masker(),
    )
    .await
    .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))
}

/// Connect to every target at once; already open connections are reused.
pub async fn connect_all(
    targets: &[Target],
    already: &BTreeMap<String, Session>,
    masker: &Masker,
) -> (BTreeMap<String, Session>, Vec<(String, ConnectError)>) {
    let futures = targets.iter().map(|target| async move {
        let result = match already.get(&target.host) {
            Some(session) => Ok(session.clone()),
            None => open(target, masker).await,
        };
        (target.host.clone(), result)
    });
    let mut sessions = BTreeMap::new();
    let mut failed = Vec::new();
    for (host, result) in futures::future::join_all(futures).await {
        match result {
            Ok(session) => {
                sessions.insert(host, session);
            }
            Err(error) => failed.push((host, error)),
        }
    }
    (sessions, failed)
}

/// Each connected host's Debian release (`VERSION_ID` of `/etc/os-release`); a host whose release
/// cannot be read is left out (the default applies and preflight reports the host).
pub async fn releases(sessions: &BTreeMap<String, Session>) -> Vec<(String, String)> {
    let command = RemoteCommand::stdin_script(facts::release_script(), "read /etc/os-release");
    let reads = sessions.iter().map(|(host, session)| {
        let command = command.clone();
        async move {
            let output = session.run(&command).await.ok()?;
            let os = facts::os_release_of(&output.stdout_text());
            (os.id == "debian" && !os.version_id.is_empty()).then(|| (host.clone(), os.version_id))
        }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One host through the run.
struct HostRun {
    target: Target,
    state: HostState,
    session: Option<Session>,
    /// An open connection handed over by the caller.
    reuse: Option<Session>,
    facts: Facts,
    report: HostReport,
    done: bool,
    started: Instant,
    events: Option<UnboundedSender<Event>>,
    masker: Masker,
    /// Shared by every host of the run: held while a one-host-at-a-time change runs.
    one_at_a_time: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl HostRun {
    fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn step(&self, step: impl Into<String>) {
        self.emit(Event::Step {
            host: self.target.host.clone(),
            step: step.into(),
        });
    }

    fn fail(&mut self, step: impl Into<String>, error: CommandError) {
        self.report.failure = Some(Failure {
            step: step.into(),
            command: Some(error.command),
            message: error.stderr,
            hint: error.hint,
        });
        self.report.status = HostStatus::Failed;
        self.done = true;
    }

    /// Run one command on the host, reporting it.
    async fn command(
        &mut self,
        command: &RemoteCommand,
    ) -> std::result::Result<crate::connect::CommandOutput, CommandError> {
        let Some(session) = &self.session else {
            return Err(CommandError {
                host: self.target.host.clone(),
                command: command.display.clone(),
                status: None,
                stderr: "not connected".into(),
                hint: None,
            });
        };
        let result = session.run(command).await;
        let duration = match &result {
            Ok(output) => output.duration,
            Err(_) => Duration::ZERO,
        };
        self.report.timings.commands += 1;
        self.report.timings.commands_ms += duration.as_millis() as u64;
        self.emit(Event::Command {
            host: self.target.host.clone(),
            command: self.masker.mask(&command.display),
            duration_ms: duration.as_millis() as u64,
            ok: result.is_ok(),
        });
        result
    }

    async fn gather(&mut self) -> bool {
        self.step("facts");
        let started = Instant::now();
        let request = ops::facts_request(&self.state);
        let command = RemoteCommand::stdin_script(facts::script(&request), "gather facts (sh -s)");
        let result = self.command(&command).await;
        self.report.timings.facts_ms += started.elapsed().as_millis() as u64;
        match result.and_then(|output| {
            facts::parse(&output.stdout_text()).map_err(|e| CommandError {
                host: self.target.host.clone(),
                command: command.display.clone(),
                status: output.status,
                stderr: e.to_string(),
                hint: Some("is the host a Debian system with coreutils and systemd?".into()),
            })
        }) {
            Ok(facts) => {
                if facts.os.id != "debian" {
                    let message = format!(
                        "{} is {} {}, not Debian: pgstrap is made for Debian 12",
                        self.target.host, facts.os.id, facts.os.version_id
                    );
                    self.warn(message);
                }
                self.facts = facts;
                true
            }
            Err(error) => {
                self.fail("facts", error);
                false
            }
        }
    }

    fn warn(&mut self, message: String) {
        let message = self.masker.mask(&message);
        self.emit(Event::Warning {
            host: self.target.host.clone(),
            message: message.clone(),
        });
        if !self.report.warnings.contains(&message) {
            self.report.warnings.push(message);
        }
    }

    /// Record (plan) or perform (apply) one planned step. False when it failed.
    async fn perform(
        &mut self,
        planned: Planned,
        mode: Mode,
        phase: Option<u32>,
        role: Option<&str>,
    ) -> bool {
        match planned {
            Planned::Noop(noop) => {
                self.report.noops.push(NoopRecord {
                    role: role.map(str::to_owned),
                    kind: noop.kind,
                    subject: noop.subject,
                    reason: noop.reason,
                });
                true
            }
            Planned::Warning { subject, message } => {
                let _ = subject;
                self.warn(message);
                true
            }
            Planned::Change(change) => {
                let started = Instant::now();
                let mut applied = false;
                if mode == Mode::Apply {
                    self.step(match role {
                        Some(role) => format!("{role}: {}", change.subject),
                        None => change.subject.clone(),
                    });
                    // A quorum member restarts while no other one does (etcd's restart returns
                    // once the member is back in the cluster: Type=notify).
                    let one_at_a_time = self.one_at_a_time.clone();
                    let _turn = match change.effect {
                        ops::Effect::OneHostAtATime => Some(one_at_a_time.lock().await),
                        _ => None,
                    };
                    for command in &change.commands {
                        if let Err(error) = self.command(command).await {
                            self.fail(change.subject.clone(), error);
                            return false;
                        }
                    }
                    applied = true;
                    ops::record_effect(&mut self.facts, &change.effect);
                }
                // Shown once per host even when two roles fire the same handler.
                if change.kind == Kind::Handler && !self.report.handlers.contains(&change.subject) {
                    self.report.handlers.push(change.subject.clone());
                }
                self.emit(Event::Change {
                    host: self.target.host.clone(),
                    kind: change.kind,
                    subject: change.subject.clone(),
                    summary: self.masker.mask(&change.summary),
                });
                self.report.changes.push(ChangeRecord {
                    phase,
                    role: role.map(str::to_owned),
                    kind: change.kind,
                    subject: change.subject.clone(),
                    summary: self.masker.mask(&change.summary),
                    why: self.masker.mask(&change.why),
                    diff: change.diff.as_deref().map(|d| self.masker.mask(d)),
                    commands: change
                        .commands
                        .iter()
                        .map(|c| self.masker.mask(&c.display))
                        .collect(),
                    applied,
                    duration_ms: started.elapsed().as_millis() as u64,
                });
                if applied && change.effect == ops::Effect::Regather {
                    return self.gather().await;
                }
                true
            }
        }
    }

    /// Connect, gather facts, install packages.
    async fn prologue(mut self, mode: Mode) -> Self {
        self.step("connect");
        let started = Instant::now();
        let open = match self.reuse.take() {
            Some(session) => Ok(session),
            None => open(&self.target, &self.masker).await,
        };
        match open {
            Ok(session) => self.session = Some(session),
            Err(error) => {
                self.report.timings.connect_ms = started.elapsed().as_millis() as u64;
                self.report.status = HostStatus::Unreachable;
                self.report.failure = Some(Failure {
                    step: "connect".into(),
                    command: None,
                    message: self.masker.mask(&error.message),
                    hint: error.hint,
                });
                self.done = true;
                return self;
            }
        }
        self.report.timings.connect_ms = started.elapsed().as_millis() as u64;
        if !self.gather().await {
            return self;
        }
        // Package-manager configuration first (an apt proxy, no default PostgreSQL cluster).
        let early: Vec<_> = self
            .state
            .roles
            .iter()
            .filter_map(|r| r.split_before_packages().0)
            .collect();
        for role in early {
            self.step(format!("before packages: {}", role.role));
            let steps = ops::plan_role(&role, &self.facts, &BTreeMap::new(), None, &self.masker);
            for planned in steps {
                if !self
                    .perform(planned, mode, Some(role.phase), Some(&role.role))
                    .await
                {
                    return self;
                }
            }
        }
        self.step("packages");
        let planned = ops::plan_packages(&self.state.packages(), &self.facts);
        if self.perform(planned, mode, None, None).await {
            self.units(mode).await;
        }
        self
    }

    /// Every role's systemd unit files and drop-ins, then ONE daemon-reload for the host when any
    /// changed: before any phase starts a service, once per host and run (not once per role).
    async fn units(&mut self, mode: Mode) {
        let units: Vec<(String, u32, ManagedFile)> = self
            .state
            .roles
            .iter()
            .flat_map(|role| {
                let (files, _) = role.split_before_packages().1.split_unit_files();
                files
                    .into_iter()
                    .map(|file| (role.role.clone(), role.phase, file))
            })
            .collect();
        if units.is_empty() {
            return;
        }
        self.step("systemd units");
        let files: Vec<&ManagedFile> = units.iter().map(|(_, _, file)| file).collect();
        let Some(contents) = self.contents_for_diffs(&files).await else {
            return;
        };
        let (planned, reload) = ops::plan_units(&files, &self.facts, &contents, &self.masker);
        for ((role, phase, _), planned) in units.iter().zip(planned) {
            if !self.perform(planned, mode, Some(*phase), Some(role)).await {
                return;
            }
        }
        if let Some(reload) = reload {
            self.perform(reload, mode, None, None).await;
        }
    }

    /// The content on the host of those `files` whose hash differs from the rendered one: for
    /// diffs (a file holding secrets shows them masked; one holding a private key shows no diff,
    /// so it is not read). `None` when reading failed (the host has failed).
    async fn contents_for_diffs(
        &mut self,
        files: &[&ManagedFile],
    ) -> Option<BTreeMap<String, Vec<u8>>> {
        let wanted: Vec<String> = files
            .iter()
            .filter(|f| !(f.sensitive && f.content.contains("PRIVATE KEY")))
            .filter(|f| matches!(self.facts.path(&f.path), PathState::File { sha256, .. } if *sha256 != f.sha256))
            .map(|f| f.path.clone())
            .collect();
        if wanted.is_empty() {
            return Some(BTreeMap::new());
        }
        let Some(session) = self.session.as_ref() else {
            return Some(BTreeMap::new());
        };
        match facts::read_files(session, &wanted).await {
            Ok(read) => Some(read),
            Err(error) => {
                self.fail("read files for diffs", error);
                None
            }
        }
    }

    /// The roles of `phase` on this host.
    async fn phase(mut self, phase: u32, mode: Mode) -> Self {
        if self.done {
            return self;
        }
        // What went before the package transaction, and the unit files, are done already.
        let roles: Vec<_> = self
            .state
            .roles
            .iter()
            .filter(|r| r.phase == phase)
            .map(|r| r.split_before_packages().1.split_unit_files().1)
            .collect();
        if roles.is_empty() {
            return self;
        }
        let files: Vec<&ManagedFile> = roles.iter().flat_map(|r| r.files.iter()).collect();
        let Some(contents) = self.contents_for_diffs(&files).await else {
            return self;
        };
        let sysctl_file = ops::sysctl_file(&self.state);
        let first_sysctl_role = self
            .state
            .roles
            .iter()
            .find(|r| !r.sysctls.is_empty())
            .map(|r| (r.role.clone(), r.phase, r.cluster.clone()));
        for role in roles {
            self.step(format!("phase {phase}: {}", role.role));
            let persist = match (&first_sysctl_role, &sysctl_file) {
                (Some((name, p, cluster)), Some(file))
                    if *name == role.role && *p == role.phase && *cluster == role.cluster =>
                {
                    Some(file)
                }
                _ => None,
            };
            let steps = ops::plan_role(&role, &self.facts, &contents, persist, &self.masker);
            for planned in steps {
                if !self
                    .perform(planned, mode, Some(phase), Some(&role.role))
                    .await
                {
                    return self;
                }
            }
        }
        self
    }

    fn finish(mut self) -> HostReport {
        if self.report.failure.is_none() {
            self.report.status = if self.report.changes.is_empty() {
                HostStatus::Ok
            } else {
                HostStatus::Changed
            };
        }
        self.report.timings.total_ms = self.started.elapsed().as_millis() as u64;
        self.emit(Event::Finished {
            host: self.target.host.clone(),
            status: self.report.status,
        });
        self.report
    }
}

/// Run the engine over `desired` (the library entry for tests and orchestrations that build their
/// own desired state). `targets` must hold one entry per host of `desired`.
pub async fn run(
    desired: DesiredState,
    targets: Vec<Target>,
    mode: Mode,
    options: Options,
) -> Report {
    let started = Instant::now();
    let parallel = options.parallel.max(1);
    let masker = desired.masker.clone();
    let targets: BTreeMap<String, Target> =
        targets.into_iter().map(|t| (t.host.clone(), t)).collect();
    if let Some(events) = &options.events {
        let _ = events.send(Event::Started {
            hosts: desired.hosts.iter().map(|h| h.host.clone()).collect(),
            mode,
        });
    }
    let mut runs: Vec<HostRun> = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let one_at_a_time = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    for state in desired.hosts {
        let reuse = options.sessions.get(&state.host).cloned();
        let Some(target) = targets.get(&state.host).cloned() else {
            continue;
        };
        order.push(state.host.clone());
        runs.push(HostRun {
            report: HostReport::new(&state.host, &state.address),
            target,
            state,
            session: None,
            reuse,
            facts: Facts::default(),
            done: false,
            started: Instant::now(),
            events: options.events.clone(),
            masker: masker.clone(),
            one_at_a_time: one_at_a_time.clone(),
        });
    }
    let phases: BTreeSet<u32> = runs
        .iter()
        .flat_map(|r| r.state.roles.iter().map(|role| role.phase))
        .collect();

    runs = stream::iter(runs.into_iter().map(|run| run.prologue(mode)))
        .buffer_unordered(parallel)
        .collect()
        .await;
    // The barrier: every host finishes a phase before any host starts the next.
    for phase in phases {
        runs = stream::iter(runs.into_iter().map(|run| run.phase(phase, mode)))
            .buffer_unordered(parallel)
            .collect()
            .await;
    }
    let mut reports: Vec<HostReport> = Vec::new();
    for mut run in runs {
        if let Some(session) = run.session.take() {
            session.close().await;
        }
        reports.push(run.finish());
    }
    reports.sort_by_key(|r| order.iter().position(|h| *h == r.host));
    Report {
        mode,
        hosts: reports,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

pub mod identity;

#[cfg(test)]
mod tests {
    use super::*;

    fn host(status: HostStatus) -> HostReport {
        HostReport {
            status,
            ..HostReport::new("h", "a")
        }
    }

    #[test]
    fn exit_code_is_one_when_any_host_failed_or_was_unreachable() {
        let report = |statuses: Vec<HostStatus>| Report {
            mode: Mode::Apply,
            hosts: statuses.into_iter().map(host).collect(),
            duration_ms: 0,
        };
        assert_eq!(
            report(vec![HostStatus::Ok, HostStatus::Changed]).exit_code(),
            0
        );
        assert_eq!(
            report(vec![HostStatus::Ok, HostStatus::Failed]).exit_code(),
            1
        );
        assert_eq!(report(vec![HostStatus::Unreachable]).exit_code(), 1);
    }
}
