//! pgstrap: one inventory file → a running, verified, highly available PostgreSQL cluster.
//!
//! Map of the codebase (to change X, start in Y), lowest layer first ([`LAYERS`]; a test checks
//! that no module uses one of its own layer or above):
//!
//! - `text.rs`: the rule of what may go on one line of a configuration file.
//! - `secret.rs`: secret values that never print, the masker, secret-holding file writes.
//! - `settings/`: the precedence layers and the ONE resolving function ([`settings::vars::resolve`]),
//!   the type of every setting (`types.rs`, declared beside each role default), how YAML is read.
//! - `error.rs`: errors a user can act on; `state.rs`: the desired-state types the engine consumes.
//! - `role/`: role manifests (`roles/<name>/role.yaml`, data, not code), embedded and found in
//!   phase order; their defaults and per-release layers.
//! - `tls/`: the inventory's CA and the certificates pgstrap issues, and pgstrap's TLS clients.
//! - `connect/`: SSH connections (system OpenSSH via the `openssh` crate): addresses and options,
//!   no inventory.
//! - `inventory/`: the YAML inventory, validated (`validate.rs`: every check of the inventory on
//!   its own); secrets' sources and store (`secrets.rs`).
//! - `facts/`: each fact is a command plus a pure parser tested on captured output; one facts
//!   script, one os-release reader.
//! - `project/`: an inventory with role defaults, releases, live state (`live.rs`, a value
//!   gathered once per command), secrets and TLS policy; names derived from settings
//!   (`names.rs`); the checks that need resolved settings (`checks.rs`); typed ports.
//! - `ops/`: primitives: plan(desired, facts) → no change (with a reason) or a change.
//! - `render/`: templates (override dir → embedded), the template context, and
//!   [`render::desired_state`]: project → the desired state of every host.
//! - `exec/`: the engine and the one door to the hosts: sessions, per-host runs in parallel,
//!   ordered phases, events, the identity guard.
//! - `clients/`: Patroni, etcd, PostgreSQL, HAProxy, SCRAM clients and the polling gate.
//! - `stack/`: the orchestrations (rollout, members, dr, drill, backup, ops, rotate…), each in its
//!   own folder; its `mod.rs` lists them.
//! - `ui/`: the only code that prints: progress, summaries, diffs, status tables.
//! - `lab/`: `pgstrap lab`: real systemd hosts in systemd-nspawn containers on this machine.
//! - `cli/`: one thin file per subcommand: parse, build options, call one library function.

pub mod cli;
pub mod clients;
pub mod connect;
pub mod error;
pub mod exec;
pub mod facts;
pub mod inventory;
pub mod lab;
#[cfg(test)]
mod layering;
pub mod ops;
pub mod project;
pub mod render;
pub mod role;
pub mod secret;
pub mod settings;
pub mod stack;
pub mod state;
pub mod text;
pub mod tls;
pub mod ui;

/// The layers of the house, lowest first. A module may use only modules of lower layers (a test,
/// `layering.rs`, checks every `crate::` path in `src/`): the model's floor (values, settings,
/// errors, desired-state types) knows no inventory; the inventory knows no rendering; rendering
/// knows no host; the engine (`exec`) is the one door to the hosts; orchestrations (`stack`) sit on
/// the engine and the clients; `ui` presents their results; `lab` and `cli` are at the top.
pub const LAYERS: &[&[&str]] = &[
    &["text"],
    &["secret", "settings"],
    &["error", "state"],
    &["role", "tls", "connect"],
    &["inventory", "facts"],
    &["project", "ops"],
    &["render"],
    &["exec"],
    &["clients"],
    &["stack"],
    &["ui"],
    &["lab"],
    &["cli"],
];
