//! Variables and their precedence. Every setting a template reads lives under `vars`, named by
//! role (`patroni.ttl`, `postgresql.parameters.max_connections`…). [`resolve`] is the ONE place
//! that decides which value wins.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// Where a value came from, in increasing precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Origin {
    /// `roles/<role>/defaults.yaml`.
    RoleDefault(String),
    /// `roles/<role>/debian-<release>.yaml`: what differs on the host's Debian release.
    Release(String),
    /// What the running cluster imposes (e.g. the etcd keyspace its Patroni state lives in).
    Live(String),
    /// The cluster's `vars`, `postgres_parameters` or `patroni` settings.
    Cluster(String),
    /// The host's `vars`.
    Host(String),
    /// `--set key=value` on the command line.
    CommandLine,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::RoleDefault(role) => write!(f, "role default ({role})"),
            Origin::Release(what) => write!(f, "release default ({what})"),
            Origin::Live(cluster) => write!(f, "running cluster {cluster}"),
            Origin::Cluster(name) => write!(f, "cluster {name}"),
            Origin::Host(name) => write!(f, "host {name}"),
            Origin::CommandLine => f.write_str("--set"),
        }
    }
}

/// One layer of settings: flattened dotted keys (`patroni.ttl`) to values, all from one origin.
#[derive(Debug, Clone)]
pub struct Layer {
    pub origin: Origin,
    pub values: BTreeMap<String, Value>,
}

impl Layer {
    /// A layer from a nested mapping; nested maps become dotted keys, anything else is a leaf.
    pub fn from_nested(origin: Origin, nested: &Map<String, Value>) -> Self {
        let mut values = BTreeMap::new();
        flatten("", nested, &mut values);
        Self { origin, values }
    }
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut BTreeMap<String, Value>) {
    for (key, value) in map {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(&path, inner, out),
            other => {
                out.insert(path, other.clone());
            }
        }
    }
}

/// The resolved variables of one host in one cluster: each value and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub entries: BTreeMap<String, (Value, Origin)>,
}

/// Resolve variables: **role defaults < release defaults < cluster settings < host settings <
/// `--set`**.
///
/// `layers` must be given in that order (lowest first); a later layer's value replaces an earlier
/// one key by key, where keys are dotted paths, so `postgres_parameters: {max_connections: 200}`
/// on a cluster replaces only that parameter and keeps every other default. A value that is a list
/// replaces the whole list. Setting a key to a mapping replaces every key below it.
pub fn resolve<'a>(layers: impl IntoIterator<Item = &'a Layer>) -> Vars {
    let mut entries: BTreeMap<String, (Value, Origin)> = BTreeMap::new();
    for layer in layers {
        for (key, value) in &layer.values {
            // A value set at `a.b` replaces whatever an earlier layer had below `a.b.`, and a
            // leaf above it (`a`) stops being a leaf. Both are found by key, not by a scan of
            // every entry, so resolving stays linear in the number of settings.
            remove_below(&mut entries, key);
            for (i, _) in key.match_indices('.') {
                entries.remove(&key[..i]);
            }
            entries.insert(key.clone(), (value.clone(), layer.origin.clone()));
        }
    }
    Vars { entries }
}

/// Remove every entry whose key starts with `key.`: the keys from `key.` up to `key/` (`/` is
/// the character after `.`).
fn remove_below<V>(entries: &mut BTreeMap<String, V>, key: &str) {
    let start = format!("{key}.");
    let end = format!("{key}/");
    let below: Vec<String> = entries
        .range::<str, _>((
            std::ops::Bound::Included(start.as_str()),
            std::ops::Bound::Excluded(end.as_str()),
        ))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        entries.remove(&k);
    }
}

impl Vars {
    /// The variables as one nested mapping, for templates.
    pub fn to_nested(&self) -> Value {
        let mut root = Map::new();
        for (key, (value, _)) in &self.entries {
            let mut node = &mut root;
            let mut parts = key.split('.').peekable();
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    node.insert(part.to_owned(), value.clone());
                } else {
                    let entry = node
                        .entry(part.to_owned())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    node = entry.as_object_mut().expect("just made an object");
                }
            }
        }
        Value::Object(root)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key).map(|(v, _)| v)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
    }

    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
    }
}

/// Parse `key=value` from `--set`; the value is read as YAML (`20` is a number, `on` a string).
pub fn parse_set(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`--set {text}`: expected KEY=VALUE, e.g. patroni.ttl=20"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!(
            "`--set {text}`: the key must be a dotted name like patroni.ttl"
        ));
    }
    let value: Value = if value.is_empty() {
        Value::String(String::new())
    } else {
        serde_saphyr::from_str_with_options(value, crate::settings::yaml_options())
            .unwrap_or_else(|_| Value::String(value.to_owned()))
    };
    Ok((key.to_owned(), value))
}

/// The declared key closest to `key`, for a "did you mean" hint.
pub fn closest<'a>(defaults: &'a Layer, key: &str) -> Option<&'a str> {
    defaults
        .values
        .keys()
        .map(|k| (edit_distance(k, key), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(row[j + 1])
            };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(origin: Origin, v: Value) -> Layer {
        Layer::from_nested(origin, v.as_object().unwrap())
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let vars = resolve(&[
            layer(
                Origin::RoleDefault("patroni".into()),
                json!({"patroni": {"ttl": 30, "loop_wait": 10}}),
            ),
            layer(
                Origin::Cluster("main".into()),
                json!({"patroni": {"ttl": 20}}),
            ),
            layer(
                Origin::Host("pg1".into()),
                json!({"patroni": {"loop_wait": 5}}),
            ),
        ]);
        assert_eq!(
            vars.entries["patroni.ttl"],
            (json!(20), Origin::Cluster("main".into()))
        );
        assert_eq!(
            vars.entries["patroni.loop_wait"],
            (json!(5), Origin::Host("pg1".into()))
        );
        assert_eq!(
            vars.to_nested(),
            json!({"patroni": {"ttl": 20, "loop_wait": 5}})
        );
    }

    #[test]
    fn command_line_beats_host() {
        let (key, value) = parse_set("patroni.ttl=25").unwrap();
        let mut cli = Layer {
            origin: Origin::CommandLine,
            values: BTreeMap::new(),
        };
        cli.values.insert(key, value);
        let vars = resolve(&[
            layer(Origin::Host("pg1".into()), json!({"patroni": {"ttl": 20}})),
            cli,
        ]);
        assert_eq!(
            vars.entries["patroni.ttl"],
            (json!(25), Origin::CommandLine)
        );
    }

    #[test]
    fn a_mapping_replaces_what_was_below_it() {
        let vars = resolve(&[
            layer(
                Origin::RoleDefault("x".into()),
                json!({"a": {"b": 1, "c": 2}}),
            ),
            layer(Origin::Cluster("m".into()), json!({"a": {"b": {"d": 3}}})),
        ]);
        assert_eq!(vars.to_nested(), json!({"a": {"b": {"d": 3}, "c": 2}}));
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let defaults = layer(
            Origin::RoleDefault("patroni".into()),
            json!({"patroni": {"ttl": 30}, "postgresql": {"parameters": {"max_connections": 100}}}),
        );
        assert_eq!(closest(&defaults, "patroni.tll"), Some("patroni.ttl"));
    }
}
