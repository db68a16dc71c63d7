//! pgstrap: one inventory file → a running, verified, highly available PostgreSQL cluster.
//!
//! Map of the codebase (to change X, start in Y):
//!
//! - `inventory/`: the YAML inventory. Raw serde structs (unknown keys rejected) are turned into a
//!   validated [`inventory::Inventory`]; every cross-check lives in `inventory/validate.rs`; the ONE
//!   variable-precedence function is [`inventory::vars::resolve`]; secrets in `inventory/secrets.rs`.
//! - `role/`: role manifests (`roles/<name>/role.yaml`, data, not code), their defaults, and the
//!   type of every setting (`role/types.rs`, declared beside each default, checked on load).
//! - `render/`: the template engine (minijinja, strict undefined), template lookup
//!   (inventory override dir → embedded), the template context, and [`render::desired_state`]:
//!   inventory → the desired state of every host; `render/output.rs` writes `render --out`
//!   without following links.
//! - `state.rs`: the desired-state types the engine consumes (packages, files, services…).
//! - `connect/`: SSH connections (system OpenSSH via the `openssh` crate) and the local shell.
//! - `facts/`: each fact is a command plus a pure parser tested on captured output.
//! - `ops/`: primitives: plan(desired, facts) → no change (with a reason) or a change.
//! - `exec/`: per-host runner, parallelism across hosts, ordered phases, events, health gates.
//! - `stack/`: the HA order and day-2 orchestrations built on the engine.
//! - `lab/`: `pgstrap lab`: real systemd hosts in systemd-nspawn containers on this machine.
//! - `tls/`: the inventory's CA and the certificates pgstrap issues (`tls/pki.rs`), and the one
//!   TLS client configuration pgstrap's own HTTP and PostgreSQL connections use.
//! - `text.rs`: the rule of what may go on one line of a configuration file (a leaf).
//! - `ui/`: the only code that prints to the terminal: progress, summaries, diffs.
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
