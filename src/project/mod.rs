//! The project: a validated inventory with everything needed to resolve its settings — the role
//! defaults, what differs per Debian release, `--set` values, and the [`Live`] state a command
//! gathered (the release of each host, what the running clusters impose) — and the secrets and
//! TLS policy that go with it. Rendering (`render`), the engine (`exec`) and every orchestration
//! read settings here.

pub mod checks;
pub mod live;
pub mod names;

pub use live::Live;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::inventory::secrets::{self, Secrets};
use crate::inventory::{Cluster, Host, Inventory};
use crate::role;
use crate::settings::vars::{self, Layer, Origin, Vars};

/// An inventory with everything needed to resolve settings: role defaults, what differs per
/// Debian release, `--set` values, and the live state a command gathered. Cheap to clone: what
/// was loaded is shared, so a command goes on with a new project when it learned something
/// ([`Project::with_live`]). Reads the loaded fields through `Deref` (`project.inventory`).
#[derive(Clone)]
pub struct Project {
    base: Arc<Base>,
    /// The release assumed for a host whose release is not known (yet): the built-in default or
    /// `--release`; what `check`, `render` and `vars` render for.
    pub default_release: String,
    live: Arc<Live>,
}

/// What a project loads: the inventory, role defaults and `--set` values (never changed after).
pub struct Base {
    pub inventory: Inventory,
    pub defaults: Vec<Layer>,
    /// `roles/<role>/debian-<release>.yaml` layers, by release.
    pub release_defaults: BTreeMap<String, Vec<Layer>>,
    pub command_line: Layer,
}

impl std::ops::Deref for Project {
    type Target = Base;

    fn deref(&self) -> &Base {
        &self.base
    }
}

/// Layers imposed from outside the inventory (see [`Project::layers`]).
#[derive(Default)]
struct Imposed<'a> {
    live: Option<&'a Layer>,
    primary_side: Option<Layer>,
    host: Option<&'a Layer>,
}

/// Load and validate an inventory together with the role defaults and `--set` values.
pub fn load(path: &Path, sets: &[String]) -> Result<Project> {
    let defaults = role::default_layers()?;
    let schema = role::schema()?;
    let mut command_line = Layer {
        origin: Origin::CommandLine,
        values: BTreeMap::new(),
    };
    for set in sets {
        let (key, value) = vars::parse_set(set).map_err(|m| Error::usage(m, None))?;
        if let Err(problem) = schema.check(&key, &value) {
            let (message, hint) = problem.describe(&key, &value);
            return Err(Error::usage(
                format!("--set {}: {message}", crate::settings::types::shown(set)),
                Some(hint),
            ));
        }
        command_line.values.insert(key, value);
    }
    let inventory = crate::inventory::load(path, schema)?;
    let mut release_defaults = BTreeMap::new();
    for id in role::releases().releases.keys() {
        release_defaults.insert(id.clone(), role::release_layers(id)?);
    }
    Ok(Project {
        base: Arc::new(Base {
            inventory,
            defaults,
            release_defaults,
            command_line,
        }),
        default_release: role::releases().default.clone(),
        live: Default::default(),
    })
}

impl Project {
    /// The live state this project carries (empty until a command gathered it).
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The same project with `live` (what a command gathered) in place of what it carried.
    pub fn with_live(&self, live: Live) -> Project {
        Project {
            base: Arc::clone(&self.base),
            default_release: self.default_release.clone(),
            live: Arc::new(live),
        }
    }

    /// The same project with the releases read from the hosts (`VERSION_ID` by host name) added.
    pub fn with_releases(&self, read: impl IntoIterator<Item = (String, String)>) -> Project {
        self.with_live(self.live().clone().with_releases(read))
    }

    /// The settings of `host` as a member of `cluster` (or outside any cluster, for `common`),
    /// by the one precedence rule in [`vars::resolve`].
    pub fn vars(&self, host: &Host, cluster: Option<&Cluster>) -> Vars {
        let imposed = self.imposed(cluster, Some(host));
        vars::resolve(self.layers(&self.release_of(&host.name), &imposed, cluster, Some(host)))
    }

    /// The settings of a cluster as a whole (no host layer).
    pub fn cluster_vars(&self, cluster: &Cluster) -> Vars {
        let imposed = self.imposed(Some(cluster), None);
        vars::resolve(self.layers(
            &self.cluster_release(cluster),
            &imposed,
            Some(cluster),
            None,
        ))
    }

    /// What the running clusters and the primary side impose on `host` in `cluster`: layers
    /// between the release defaults and the cluster's own settings.
    fn imposed<'a>(&'a self, cluster: Option<&Cluster>, host: Option<&Host>) -> Imposed<'a> {
        let Some(cluster) = cluster else {
            return Imposed::default();
        };
        Imposed {
            live: self.live_layer(cluster),
            primary_side: self.primary_side_parameters(cluster),
            host: host.and_then(|h| self.live_host_layer(cluster, h)),
        }
    }

    /// The layers that apply, lowest precedence first: role defaults, the release's, what the
    /// running cluster imposes, the primary side's parameters (a standby cluster), what the
    /// running cluster imposes on the host, the cluster's, the host's, `--set`. Borrowed, never
    /// copied.
    fn layers<'a>(
        &'a self,
        release: &str,
        imposed: &'a Imposed<'a>,
        cluster: Option<&'a Cluster>,
        host: Option<&'a Host>,
    ) -> Vec<&'a Layer> {
        self.defaults
            .iter()
            .chain(self.release_layers(release))
            .chain(imposed.live)
            .chain(imposed.primary_side.as_ref())
            .chain(imposed.host)
            .chain(cluster.map(|c| &c.vars))
            .chain(host.map(|h| &h.vars))
            .chain(std::iter::once(&self.command_line))
            .collect()
    }

    /// Whether `host` has settings of its own in `cluster` (its `vars`, or what the running
    /// cluster imposes on it): else it shares the cluster's.
    pub fn has_own_settings(&self, host: &Host, cluster: Option<&Cluster>) -> bool {
        !host.vars.values.is_empty()
            || cluster.is_some_and(|c| self.live_host_layer(c, host).is_some())
    }

    fn live_host_layer(&self, cluster: &Cluster, host: &Host) -> Option<&Layer> {
        self.live.host(&cluster.name, &host.name)
    }

    /// One setting of `host` in `cluster` (either may be absent), by the same precedence as
    /// [`Project::vars`] but without resolving every other setting. Settings are validated
    /// leaves (see `settings::types`), so the highest layer that sets the key wins.
    pub fn setting(
        &self,
        host: Option<&Host>,
        cluster: Option<&Cluster>,
        key: &str,
    ) -> Option<Value> {
        let release = match (host, cluster) {
            (Some(h), _) => self.release_of(&h.name),
            (None, Some(c)) => self.cluster_release(c),
            (None, None) => self.default_release.clone(),
        };
        let imposed = self.imposed(cluster, host);
        self.layers(&release, &imposed, cluster, host)
            .into_iter()
            .rev()
            .find_map(|layer| layer.values.get(key))
            .cloned()
    }

    /// A port of a cluster, as its settings resolve it (the default is the role's, in
    /// `roles/<role>/defaults.yaml`: every [`Port`] has one, typed `port`, checked by a test).
    pub fn port(&self, cluster: &Cluster, port: Port) -> u16 {
        self.setting(None, Some(cluster), port.key())
            .as_ref()
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            // Unreachable: the roles declare every port with the type `port` (1..=65535), and
            // every layer's value was checked against it on load.
            .unwrap_or_else(|| panic!("roles declare `{}` (type port)", port.key()))
    }

    /// The client URLs of a cluster's etcd members.
    pub fn etcd_endpoints(&self, cluster: &Cluster) -> Vec<String> {
        let port = self.port(cluster, Port::EtcdClient);
        cluster
            .etcd
            .iter()
            .map(|h| format!("{}://{}:{port}", self.etcd_scheme(), self.address(h)))
            .collect()
    }

    /// `https` when the inventory uses TLS (etcd's client and peer URLs), else `http`.
    pub fn etcd_scheme(&self) -> &'static str {
        if self.tls_enabled() {
            "https"
        } else {
            "http"
        }
    }

    /// The address of a host by name (empty when unknown; names are validated on load).
    pub fn address(&self, host: &str) -> String {
        self.inventory
            .hosts
            .get(host)
            .map(|h| h.address.to_string())
            .unwrap_or_default()
    }

    /// The PostgreSQL major version `host` runs as a member of `cluster` (`postgresql.version`,
    /// through the one precedence rule: release default, cluster, host, `--set`).
    pub fn postgres_version(&self, host: &Host, cluster: &Cluster) -> String {
        match self.setting(Some(host), Some(cluster), "postgresql.version") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    /// Render for `release` where a host's own release is not known (`--release`).
    pub fn assume_release(&mut self, release: Option<&str>) -> Result<()> {
        let Some(release) = release else {
            return Ok(());
        };
        let releases = role::releases();
        if releases.get(release).is_none() {
            return Err(Error::usage(
                format!("--release: Debian `{release}` is not supported"),
                Some(format!("supported releases: {}", releases.supported())),
            ));
        }
        self.default_release = release.to_owned();
        Ok(())
    }

    /// The release-specific layers of `release` (none for an unsupported release: preflight
    /// refuses those hosts).
    fn release_layers(&self, release: &str) -> &[Layer] {
        self.release_defaults
            .get(release)
            .map_or(&[], Vec::as_slice)
    }

    /// A DR standby cluster runs with its primary side's PostgreSQL parameters (it must carry
    /// the same load once promoted, and a standby needs some of them at least as high as its
    /// primary's): the primary cluster's `postgresql.parameters.*` settings, below the standby
    /// cluster's own.
    fn primary_side_parameters(&self, cluster: &Cluster) -> Option<Layer> {
        let primary = self.inventory.clusters.get(cluster.standby_of.as_ref()?)?;
        Some(Layer {
            origin: primary.vars.origin.clone(),
            values: primary
                .vars
                .values
                .iter()
                .filter(|(k, _)| k.starts_with("postgresql.parameters."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Whether the running cluster imposes `key`.
    pub fn is_live(&self, cluster: &Cluster, key: &str) -> bool {
        self.live_layer(cluster)
            .is_some_and(|layer| layer.values.contains_key(key))
    }

    /// The settings of a cluster from the defaults, its release and what the running cluster
    /// imposes, without the inventory's own values.
    pub fn cluster_vars_without_inventory(&self, cluster: &Cluster) -> Vars {
        let live = self.live_layer(cluster);
        vars::resolve(
            self.defaults
                .iter()
                .chain(self.release_layers(&self.cluster_release(cluster)))
                .chain(live),
        )
    }

    fn live_layer(&self, cluster: &Cluster) -> Option<&Layer> {
        self.live.cluster(&cluster.name)
    }

    /// The Debian release of `host`: read from the host (when the command did), else the default.
    pub fn release_of(&self, host: &str) -> String {
        self.live
            .release(host)
            .map_or_else(|| self.default_release.clone(), str::to_owned)
    }

    /// The release of a cluster: that of its first member (preflight refuses a cluster whose
    /// hosts run different releases).
    pub fn cluster_release(&self, cluster: &Cluster) -> String {
        cluster
            .hosts()
            .next()
            .map(|h| self.release_of(h))
            .unwrap_or_else(|| self.default_release.clone())
    }

    /// The clusters `host` belongs to, with the groups it is in.
    pub fn memberships<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = (&'a Cluster, Vec<&'static str>)> + 'a {
        self.inventory.clusters.values().filter_map(move |cluster| {
            let groups = crate::inventory::groups_of(cluster, host);
            (!groups.is_empty()).then_some((cluster, groups))
        })
    }

    /// Load the secrets; `generate` makes up missing generated ones. When the inventory uses TLS,
    /// also its CA and certificates (`generate`: created, issued or renewed as needed), and this
    /// run's clients are set up to use them. What was made up is only in memory (`pending`) until
    /// the caller persists it, once the hosts were checked (`exec::identity`).
    pub fn secrets(&self, generate: bool) -> Result<Secrets> {
        let mut secrets = secrets::load(
            &self.inventory.secret_sources,
            &self.inventory.secrets_store(),
            generate,
        )
        .map_err(|e| Error::usage(e.message, Some(e.hint)))?;
        if self.tls_enabled() {
            let pki = crate::tls::pki::load(
                &crate::tls::pki::store_dir(&self.inventory.path),
                &self.tls_wanted(),
                self.tls_policy(),
                generate,
            )
            .map_err(|e| Error::usage(e.message, Some(e.hint)))?;
            if let Some(mut pki) = pki {
                secrets.pending.append(&mut pki.pending);
                crate::tls::install(&pki).map_err(|e| Error::usage(e, None))?;
                secrets.tls = Some(std::sync::Arc::new(pki));
            }
        } else {
            crate::tls::clear();
        }
        Ok(secrets)
    }

    /// Write what `secrets` made up (generated secrets, a new CA, issued certificates): after the
    /// hosts were checked, before the first change.
    pub fn persist(&self, secrets: &Secrets) -> Result<()> {
        secrets
            .persist()
            .map_err(|e| Error::failure(e.message, Some(e.hint)))
    }

    /// Whether the inventory's clusters use TLS (`tls.enabled`, one value for the inventory:
    /// `check` refuses clusters that differ).
    pub fn tls_enabled(&self) -> bool {
        self.inventory_setting("tls.enabled")
            .and_then(|v| v.as_bool())
            .unwrap_or(true)
    }

    fn tls_policy(&self) -> crate::tls::Policy {
        let days = |key, default| {
            self.inventory_setting(key)
                .and_then(|v| v.as_i64())
                .unwrap_or(default)
        };
        crate::tls::Policy {
            days: days("tls.cert_days", 365),
            renew_before_days: days("tls.renew_before_days", 30),
        }
    }

    /// An inventory-wide setting: the first cluster's value (`check` makes sure all agree).
    fn inventory_setting(&self, key: &str) -> Option<Value> {
        self.setting(None, self.inventory.clusters.values().next(), key)
    }

    /// The certificates the inventory needs: one per host (its name, address and the VIPs of
    /// its clusters; localhost for PgBouncer's own connections), and pgstrap's client one.
    pub fn tls_wanted(&self) -> Vec<crate::tls::Wanted> {
        let mut wanted: Vec<crate::tls::Wanted> = self
            .inventory
            .hosts
            .values()
            .map(|host| {
                let mut ips = vec![host.address, std::net::IpAddr::from([127, 0, 0, 1])];
                for (cluster, _) in self.memberships(&host.name) {
                    if let Some(vip) = cluster.vip {
                        if !ips.contains(&vip.addr()) {
                            ips.push(vip.addr());
                        }
                    }
                }
                crate::tls::Wanted {
                    name: host.name.clone(),
                    dns: vec![host.name.clone(), "localhost".into()],
                    ips,
                    client_only: false,
                }
            })
            .collect();
        wanted.push(crate::tls::Wanted {
            name: crate::tls::CLIENT_NAME.into(),
            dns: vec![crate::tls::CLIENT_NAME.into()],
            ips: Vec::new(),
            client_only: true,
        });
        wanted
    }
}

/// The ports pgstrap's own clients use, each a setting declared (with its default) by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    EtcdClient,
    EtcdPeer,
    PostgreSQL,
    PatroniRestApi,
    PgBouncer,
    HaproxyWrite,
    HaproxyRead,
    HaproxyStats,
    PgBackRestTls,
}

impl Port {
    pub const ALL: [Port; 9] = [
        Port::EtcdClient,
        Port::EtcdPeer,
        Port::PostgreSQL,
        Port::PatroniRestApi,
        Port::PgBouncer,
        Port::HaproxyWrite,
        Port::HaproxyRead,
        Port::HaproxyStats,
        Port::PgBackRestTls,
    ];

    /// The setting that holds the port.
    pub fn key(self) -> &'static str {
        match self {
            Port::EtcdClient => "etcd.client_port",
            Port::EtcdPeer => "etcd.peer_port",
            Port::PostgreSQL => "postgresql.port",
            Port::PatroniRestApi => "patroni.restapi_port",
            Port::PgBouncer => "pgbouncer.port",
            Port::HaproxyWrite => "haproxy.write_port",
            Port::HaproxyRead => "haproxy.read_port",
            Port::HaproxyStats => "haproxy.stats_port",
            Port::PgBackRestTls => "pgbackrest.tls_port",
        }
    }
}

#[cfg(test)]
mod port_tests {
    use super::Port;

    #[test]
    fn every_port_has_a_role_default_typed_port() {
        let schema = crate::role::schema().unwrap();
        let defaults = crate::role::all_defaults(&crate::role::default_layers().unwrap());
        for port in Port::ALL {
            let value = defaults.values.get(port.key());
            assert!(
                value
                    .and_then(|v| v.as_u64())
                    .is_some_and(|p| (1..=65535).contains(&p)),
                "{}: no port default in roles/ ({value:?})",
                port.key()
            );
            assert!(
                schema.check(port.key(), &serde_json::json!(0)).is_err(),
                "{}",
                port.key()
            );
            assert!(
                schema.check(port.key(), &serde_json::json!(65535)).is_ok(),
                "{}",
                port.key()
            );
        }
    }
}
