//! The desired state of each host: what the engine (plan → apply) brings a host to. Built from the
//! inventory and the role manifests by [`crate::render::desired_state`]; consumed by `ops`/`exec`.
//! Pure data: nothing here talks to a host.

use serde::Serialize;

use crate::secret::Masker;

/// Everything pgstrap manages on one host, role by role, in phase order.
#[derive(Debug, Clone, Serialize)]
pub struct HostState {
    /// The inventory name of the host.
    pub host: String,
    /// The address pgstrap connects to.
    pub address: String,
    /// The roles on this host, in the order the stack needs them (common first).
    pub roles: Vec<RoleState>,
}

/// One role applied to one host for one cluster (a host may carry the same role for two
/// clusters only when their ports differ).
#[derive(Debug, Clone, Serialize)]
pub struct RoleState {
    /// Role name (`common`, `etcd`, `postgresql`, `patroni`, `pgbouncer`, `haproxy`, `keepalived`).
    pub role: String,
    /// The cluster this instance belongs to (`None` for `common`).
    pub cluster: Option<String>,
    /// The phase this role is applied in: lower phases are applied first on every host.
    pub phase: u32,
    pub packages: Vec<String>,
    pub directories: Vec<Directory>,
    pub files: Vec<ManagedFile>,
    pub sysctls: Vec<Sysctl>,
    pub services: Vec<Service>,
    pub handlers: Vec<Handler>,
    pub checks: Vec<HealthCheck>,
    /// Ports the role listens on, by name.
    pub ports: Vec<(String, u64)>,
    /// Paths of directories and files written before the package transaction (package-manager
    /// configuration: an apt proxy, "no default PostgreSQL cluster"), by `before_packages: true`.
    pub before_packages: Vec<String>,
}

impl RoleState {
    /// Split into what goes before the package transaction (only directories and files) and the
    /// rest; `None` when nothing goes before.
    pub fn split_before_packages(&self) -> (Option<RoleState>, RoleState) {
        if self.before_packages.is_empty() {
            return (None, self.clone());
        }
        let early = |path: &String| self.before_packages.contains(path);
        let mut before = self.clone();
        before.packages.clear();
        before.directories.retain(|d| early(&d.path));
        before.files.retain(|f| early(&f.path));
        before.sysctls.clear();
        before.services.clear();
        before.handlers.clear();
        before.checks.clear();
        let mut after = self.clone();
        after.directories.retain(|d| !early(&d.path));
        after.files.retain(|f| !early(&f.path));
        (Some(before), after)
    }

    /// Split off the role's systemd unit files and drop-ins: the files that notify only
    /// daemon-reload handlers. The engine writes those of every role right after the packages and
    /// reloads systemd once for the host (`ops::plan_units`), so every service starts with its
    /// unit as configured and a host is daemon-reloaded once per run, not once per role. A file
    /// that notifies other handlers too stays with its role (and its own daemon-reload).
    pub fn split_unit_files(&self) -> (Vec<ManagedFile>, RoleState) {
        let reloads: Vec<&str> = self
            .handlers
            .iter()
            .filter(|h| h.action == HandlerAction::DaemonReload)
            .map(|h| h.name.as_str())
            .collect();
        let is_unit = |file: &ManagedFile| {
            !file.notify.is_empty() && file.notify.iter().all(|n| reloads.contains(&n.as_str()))
        };
        let units = self.files.iter().filter(|f| is_unit(f)).cloned().collect();
        let mut rest = self.clone();
        rest.files.retain(|f| !is_unit(f));
        (units, rest)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Directory {
    pub path: String,
    pub owner: String,
    pub group: String,
    /// Octal mode, e.g. `0750`.
    pub mode: u32,
}

/// A file rendered from a template.
#[derive(Clone, Serialize)]
pub struct ManagedFile {
    /// Absolute path on the host.
    pub path: String,
    /// The template it came from (e.g. `patroni/config.yml.j2`) and where that was found.
    pub template: String,
    pub template_origin: String,
    #[serde(skip)]
    pub content: String,
    /// sha256 of `content`, hex.
    pub sha256: String,
    pub owner: String,
    pub group: String,
    /// Octal mode, e.g. `0640`.
    pub mode: u32,
    /// The file holds secrets: diffs of it are masked and its mode must not be world-readable.
    pub sensitive: bool,
    /// The file carries the cluster's identity (see [`Identity`]).
    pub identity: Option<Identity>,
    /// Handlers (by name, in this role) to run when this file changes.
    pub notify: Vec<String>,
}

impl std::fmt::Debug for ManagedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedFile")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("owner", &self.owner)
            .field("group", &self.group)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("sensitive", &self.sensitive)
            .finish_non_exhaustive()
    }
}

/// What identity a file carries. A host holding another one than the inventory would write is
/// a running cluster the inventory lost its material for: the write is refused, never made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// The CA certificate the host trusts (the whole file).
    Ca,
    /// The cluster's passwords (the lines holding a secret value).
    Secrets,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
}

/// How the engine treats a service.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Enabled and running after the role is applied.
    Started,
    /// Enabled and stopped.
    Stopped,
    /// Disabled and stopped.
    Disabled,
    /// Enabled, but started by an orchestration (e.g. Patroni: leader first, then replicas).
    Orchestrated,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub state: ServiceState,
}

/// What a handler does to a service when a file that notifies it has changed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerAction {
    Reload,
    Restart,
    /// `systemctl daemon-reload` (for unit files and drop-ins).
    DaemonReload,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub service: Option<String>,
    pub action: HandlerAction,
    /// One host at a time across the run (see the role manifest's `one_at_a_time`).
    pub one_at_a_time: bool,
}

/// A health check the engine can poll after applying a role.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HealthCheck {
    pub name: String,
    pub kind: HealthCheckKind,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// An HTTP GET from pgstrap's side; healthy when the status is `expect`.
    Http { url: String, expect: u16 },
    /// A TCP connect from pgstrap's side.
    Tcp { address: String, port: u16 },
    /// A command run on the host (argument list); healthy when it exits 0.
    Command { argv: Vec<String> },
}

impl HostState {
    /// All packages this host needs, in role order, without duplicates.
    pub fn packages(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.roles
            .iter()
            .flat_map(|r| r.packages.iter())
            .filter(|p| seen.insert(p.as_str().to_owned()))
            .cloned()
            .collect()
    }

    /// All managed files on this host.
    pub fn files(&self) -> impl Iterator<Item = &ManagedFile> {
        self.roles.iter().flat_map(|r| r.files.iter())
    }
}

/// The desired state of every host plus what is needed to show it safely.
pub struct DesiredState {
    pub hosts: Vec<HostState>,
    /// Replaces every secret value with `***` in anything shown to the user.
    pub masker: Masker,
}

impl DesiredState {
    /// Each host's services its roles manage (in any state), by host name.
    pub fn service_names(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        self.hosts
            .iter()
            .map(|host| {
                let names = host
                    .roles
                    .iter()
                    .flat_map(|role| role.services.iter().map(|s| s.name.clone()))
                    .collect();
                (host.host.clone(), names)
            })
            .collect()
    }
}
