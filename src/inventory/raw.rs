//! The inventory as written: serde structs that mirror the YAML, with unknown keys rejected and
//! source locations kept (`Spanned`) for every value a later check may need to point at.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Role settings as written: a YAML mapping whose every value keeps where it is in the file, so
/// a value of the wrong type is reported at its own line and column.
pub type RawVars = BTreeMap<String, Spanned<RawValue>>;

/// A settings value as written: a scalar, or a list or mapping of located values.
#[derive(Debug, Clone)]
pub enum RawValue {
    Scalar(serde_json::Value),
    List(Vec<Spanned<RawValue>>),
    Map(BTreeMap<String, Spanned<RawValue>>),
}

impl RawValue {
    /// The value without locations.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            RawValue::Scalar(v) => v.clone(),
            RawValue::List(items) => items.iter().map(|i| i.value.to_json()).collect(),
            RawValue::Map(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Settings as one JSON mapping (for [`crate::settings::vars::Layer::from_nested`]).
pub fn vars_to_json(vars: &RawVars) -> serde_json::Map<String, serde_json::Value> {
    vars.iter()
        .map(|(k, v)| (k.clone(), v.value.to_json()))
        .collect()
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawValue;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a setting value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(
                    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
                ))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(v.into()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(v.into()))
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(serde_json::Value::Null))
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(serde_json::Value::Null))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
                RawValue::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
                    items.push(item);
                }
                Ok(RawValue::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawValue, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, Spanned<RawValue>>()? {
                    out.insert(key, value);
                }
                Ok(RawValue::Map(out))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

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
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub identity_file: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
    /// Use `sudo -n` for remote commands (default: when `user` is not root).
    #[serde(rename = "become")]
    pub become_root: Option<bool>,
    /// Seconds to wait for a connection.
    pub connect_timeout: Option<Spanned<u64>>,
    /// Extra `ssh -o` options, e.g. `{ProxyJump: bastion}`.
    #[serde(default)]
    pub options: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApt {
    /// An HTTP proxy for apt on every host (e.g. an apt-cacher-ng), for caching or air-gapped sites.
    pub proxy: Option<Spanned<String>>,
    /// Refused with a hint (pgstrap does not rewrite the hosts' apt sources): read so the
    /// error can say so rather than "unknown field".
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
    /// Backups with pgBackRest: `repository: [host]` and its settings (shorthand for
    /// `vars: {pgbackrest: …}`). A cluster without it has no backups and no WAL archive.
    #[serde(default)]
    pub backup: Option<Spanned<RawVars>>,
    #[serde(default)]
    pub vars: RawVars,
    /// This cluster is a disaster-recovery standby of the named cluster.
    #[serde(default)]
    pub standby_of: Option<Spanned<String>>,
    /// This cluster is created from the named cluster's backups (`pgstrap restore --into`), not
    /// by initdb: `apply` prepares its hosts and waits for the restore.
    #[serde(default)]
    pub restore_of: Option<Spanned<String>>,
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
