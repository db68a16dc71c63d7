//! The inventory: one YAML file describing hosts, the clusters built from them, and settings.
//! [`load`] reads it, rejects unknown keys, runs every cross-check (`validate.rs`) and returns the
//! validated model, or every problem found, each with file:line:column and a hint.

pub mod diag;
pub mod raw;
pub mod secrets;
mod validate;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_saphyr::Location;

use crate::error::{Error, Result};
pub use crate::secret::read_user_file;
use crate::settings::vars::Layer;
use diag::{InventoryError, Source};
use secrets::SecretSource;

/// A validated inventory.
#[derive(Debug)]
pub struct Inventory {
    /// The inventory file as given.
    pub path: PathBuf,
    /// Its directory: relative paths in the inventory start here.
    pub dir: PathBuf,
    pub source_name: String,
    pub ssh: Ssh,
    pub apt: Apt,
    /// Where the user's template overrides are (`templates/` next to the inventory by default).
    pub templates_dir: PathBuf,
    pub hosts: BTreeMap<String, Host>,
    pub clusters: BTreeMap<String, Cluster>,
    pub secret_sources: BTreeMap<String, SecretSource>,
    /// Problems that do not stop the run (e.g. a single etcd member).
    pub warnings: Vec<InventoryError>,
    #[doc(hidden)]
    pub(crate) source: Source,
}

#[derive(Debug, Clone)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub become_root: bool,
    pub connect_timeout: u64,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct Apt {
    pub proxy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: IpAddr,
    pub datacenter: String,
    pub ssh_port: Option<u16>,
    pub vars: Layer,
    /// Where each of its settings is written (dotted key → the value's place), for diagnostics.
    pub setting_locations: BTreeMap<String, Location>,
    /// Where the host is defined, for diagnostics.
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub datacenter: String,
    pub etcd: Vec<String>,
    pub postgres: Vec<String>,
    pub balancers: Vec<String>,
    /// The pgBackRest repository host of the cluster's backups and WAL archive (`backup:
    /// {repository: [host]}`); empty: no backups.
    pub backup: Vec<String>,
    pub vip: Option<IpNet>,
    /// Networks allowed to connect (pg_hba); the hosts' own /32s when not given.
    pub networks: Vec<IpNet>,
    /// The cluster's settings (`vars`, `postgres_parameters`, `patroni`) as one layer.
    pub vars: Layer,
    /// Where each of its settings is written (dotted key → the value's place), for diagnostics.
    pub setting_locations: BTreeMap<String, Location>,
    pub standby_of: Option<String>,
    /// Created from this cluster's backups (`pgstrap restore --into`), not by initdb.
    pub restore_of: Option<String>,
    pub location: Location,
}

impl Host {
    /// Where this host sets `key` in the inventory, else where the host is.
    pub fn location_of(&self, key: &str) -> Location {
        self.setting_locations
            .get(key)
            .copied()
            .unwrap_or(self.location)
    }
}

impl Cluster {
    /// Where this cluster sets `key` in the inventory, if it does.
    pub fn sets(&self, key: &str) -> Option<Location> {
        self.setting_locations.get(key).copied()
    }

    /// Where this cluster sets `key` in the inventory, else where the cluster is.
    pub fn location_of(&self, key: &str) -> Location {
        self.sets(key).unwrap_or(self.location)
    }

    /// Every host of the cluster, DB hosts first, then etcd, then balancers, then the backup
    /// repository (a host in two groups comes twice).
    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.postgres
            .iter()
            .chain(&self.etcd)
            .chain(&self.balancers)
            .chain(&self.backup)
    }

    /// The pgBackRest repository host, when the cluster has backups.
    pub fn repository(&self) -> Option<&str> {
        self.backup.first().map(String::as_str)
    }
}

impl Inventory {
    /// The clusters that are standbys of `name`.
    pub fn standbys_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Cluster> + 'a {
        self.clusters
            .values()
            .filter(move |c| c.standby_of.as_deref() == Some(name))
    }

    /// A diagnostic pointing into the inventory.
    pub fn error_at(
        &self,
        location: Option<Location>,
        message: impl std::fmt::Display,
        label: impl std::fmt::Display,
    ) -> InventoryError {
        InventoryError::at(&self.source, location, message, label)
    }

    /// Where generated secrets are kept for this inventory.
    pub fn secrets_store(&self) -> PathBuf {
        secrets::store_path(&self.path)
    }

    /// Resolve a path written in the inventory (relative to its directory, `~` for home).
    pub fn resolve_path(&self, text: &str) -> PathBuf {
        resolve_path(&self.dir, text)
    }
}

pub(crate) fn resolve_path(dir: &Path, text: &str) -> PathBuf {
    if let Some(rest) = text.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = PathBuf::from(text);
    if path.is_absolute() {
        path
    } else {
        dir.join(path)
    }
}

/// Read, parse and validate an inventory. `schema` declares every setting and its type (unknown
/// settings and values of the wrong type are refused). Errors are bad input (exit 2) and list
/// every problem found.
pub fn load(path: &Path, schema: &crate::settings::types::Schema) -> Result<Inventory> {
    let text = read_user_file(path).map_err(|e| {
        Error::usage(
            format!("cannot read inventory `{}`: {e}", path.display()),
            Some("pass the inventory file with -i FILE (e.g. inventories/single-dc.yaml)".into()),
        )
    })?;
    let source = Source::new(&path.display().to_string(), text);
    let raw: raw::RawInventory =
        serde_saphyr::from_str_with_options(&source.text, crate::settings::yaml_options())
            .map_err(|e| Error::bad_input(parse_error(&source, &e)))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    validate::validate(raw, source, path.to_path_buf(), dir, schema)
}

fn parse_error(source: &Source, error: &serde_saphyr::Error) -> InventoryError {
    let full = error.to_string();
    // The library's message carries its own location and snippet; keep the first line only.
    let message = full
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_owned();
    let message = strip_location_suffix(&message);
    let (message, hint) = parse_message(&message);
    let mut diagnostic = InventoryError::at(source, error.location(), &message, "here");
    if let Some(hint) = hint {
        diagnostic = diagnostic.hint(hint);
    }
    let line = error.location().map_or(0, |l| l.line());
    if in_secrets_section(&source.text, line) {
        // The line may hold a secret written inline: where, never what.
        diagnostic = diagnostic.without_snippet().hint(
            "the line is not shown: it may hold a secret. A secret is given as `{env: NAME}`, \
             `{file: PATH}` or `{generate: true}`, never inline",
        );
    }
    diagnostic
}

/// The YAML reader's message in the inventory's words (never a Rust type or function), and a
/// hint.
fn parse_message(message: &str) -> (String, Option<&'static str>) {
    let hint = if message.contains("unknown field") {
        Some("check the spelling; the inventory format is in README.md (unknown keys are rejected so typos are not ignored)")
    } else if message.contains("duplicate") {
        Some("every key may appear once: rename or remove the second one")
    } else if message.contains("missing field") {
        Some("add the missing key")
    } else if message.contains("invalid boolean") {
        Some("write true or false: pgstrap reads YAML 1.2, where yes, no, on and off are strings, not booleans")
    } else if message.contains("while parsing") || message.contains("while scanning") {
        Some("check the brackets, quotes and indentation on this line and the one before")
    } else {
        None
    };
    if message.starts_with("multiple YAML documents") {
        return (
            "the inventory holds more than one YAML document (a `---` line)".into(),
            Some("keep one document: merge what follows the `---` into it, or remove it"),
        );
    }
    if message.starts_with("budget breached") {
        return (
            "the inventory is too large to read (over the YAML reader's limit of 250000 nodes, a guard against hostile input)".into(),
            Some("an inventory of a few thousand hosts stays far below it: look for a runaway generator or alias expansion"),
        );
    }
    if message.starts_with("cannot deserialize null") {
        return (
            "a value is missing here (empty, or `~`)".into(),
            Some("write the value, or remove the key"),
        );
    }
    if let Some(expected) = message.strip_prefix("expected ") {
        let what = match expected {
            e if e.starts_with("mapping") => "a mapping (`key: value` lines or `{…}`)",
            e if e.starts_with("sequence") => "a list (`- item` lines or `[…]`)",
            e if e.contains("scalar") => "a single value (not a list or a mapping)",
            _ => "another kind of value",
        };
        return (
            format!("{what} is expected here"),
            Some("see the inventory format in README.md"),
        );
    }
    // Whatever else the reader says, without advice meant for Rust programmers ("; use …").
    let message = message
        .split_once("; use ")
        .map_or(message, |(before, _)| before);
    (message.to_owned(), hint)
}

/// Whether 1-based `line` of the inventory lies in its top-level `secrets:` section (where a
/// line may hold a secret written inline by mistake).
fn in_secrets_section(text: &str, line: u64) -> bool {
    let mut inside = false;
    for (index, text) in text.lines().enumerate() {
        let top_level = !text.starts_with([' ', '\t', '#']) && !text.trim().is_empty();
        if top_level {
            inside = text.starts_with("secrets:");
        }
        if index as u64 + 1 == line {
            return inside;
        }
    }
    false
}

/// The library's message carries its own location (`error: line 5 column 3: …`, `… at line 3
/// column 5`) and advice about its API; the diagnostic shows the place, and the hint the fix.
fn strip_location_suffix(message: &str) -> String {
    let mut text = message.trim_start_matches("error: ");
    if let Some(rest) = text.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            text = after;
        }
    }
    let text = match text.find(" at line ") {
        Some(i) => &text[..i],
        None => text,
    };
    let text = match text.find(", set DuplicateKeyPolicy") {
        Some(i) => &text[..i],
        None => text,
    };
    text.to_owned()
}

/// The replication slot a primary-side cluster keeps for its standby cluster `standby`.
pub fn standby_slot(standby: &str) -> String {
    let name: String = standby
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("standby_{name}")
}

/// The host groups of `cluster` that `host` is in (`etcd`, `postgres`, `balancers`, `backup`).
pub fn groups_of(cluster: &Cluster, host: &str) -> Vec<&'static str> {
    let mut groups = Vec::new();
    let name = host.to_owned();
    if cluster.etcd.contains(&name) {
        groups.push("etcd");
    }
    if cluster.postgres.contains(&name) {
        groups.push("postgres");
    }
    if cluster.balancers.contains(&name) {
        groups.push("balancers");
    }
    if cluster.backup.contains(&name) {
        groups.push("backup");
    }
    groups
}
