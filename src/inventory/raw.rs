//! The inventory as written: serde structs that mirror the YAML, with unknown keys rejected and
//! source locations kept (`Spanned`) for every value a later check may need to point at.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Free-form variables (role settings): a YAML mapping.
pub type RawVars = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub apt: RawApt,
    /// A directory (relative to the inventory) whose templates override the built-in ones.
    #[serde(default)]
    pub templates_dir: Option<String>,
    pub hosts: BTreeMap<String, Spanned<RawHost>>,
    pub clusters: BTreeMap<String, Spanned<RawCluster>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<RawSecret>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    /// Use `sudo -n` for remote commands (default: when `user` is not root).
    #[serde(rename = "become")]
    pub become_root: Option<bool>,
    /// Seconds to wait for a connection.
    pub connect_timeout: Option<u64>,
    /// Extra `ssh -o` options, e.g. `{ProxyJump: bastion}`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApt {
    /// An HTTP proxy for apt on every host (e.g. an apt-cacher-ng), for caching or air-gapped sites.
    pub proxy: Option<Spanned<String>>,
    /// A Debian mirror to use instead of the hosts' configured one.
    pub mirror: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub address: Spanned<String>,
    #[serde(default)]
    pub datacenter: Option<Spanned<String>>,
    /// SSH port of this host when it differs from `ssh.port`.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub vars: RawVars,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(default)]
    pub datacenter: Option<Spanned<String>>,
    #[serde(default)]
    pub etcd: Vec<Spanned<String>>,
    #[serde(default)]
    pub postgres: Vec<Spanned<String>>,
    #[serde(default)]
    pub balancers: Vec<Spanned<String>>,
    #[serde(default)]
    pub vip: Option<Spanned<String>>,
    #[serde(default)]
    pub networks: Option<Vec<Spanned<String>>>,
    /// PostgreSQL parameters (shorthand for `vars: {postgresql: {parameters: …}}`).
    #[serde(default)]
    pub postgres_parameters: RawVars,
    /// Patroni settings (shorthand for `vars: {patroni: …}`).
    #[serde(default)]
    pub patroni: RawVars,
    #[serde(default)]
    pub vars: RawVars,
    /// This cluster is a disaster-recovery standby of the named cluster.
    #[serde(default)]
    pub standby_of: Option<Spanned<String>>,
    /// Accept an even number of etcd members (not recommended: no gain in fault tolerance).
    #[serde(default)]
    pub allow_even_etcd: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// Read the value from this environment variable.
    pub env: Option<String>,
    /// Read the value from this file (relative to the inventory).
    pub file: Option<String>,
    /// Generate the value once and keep it in the inventory's secrets file.
    pub generate: Option<bool>,
}
