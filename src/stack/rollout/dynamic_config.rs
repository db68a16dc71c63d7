//! Patroni's dynamic configuration as the inventory wants it, against what the cluster runs:
//! what differs (a `PATCH /config`), the parameters pgstrap set before and the inventory dropped
//! (removed), those someone else set (left), and how a change reads: old → new, and whether
//! PostgreSQL takes it by a reload or needs a restart of the members.

use serde_json::{json, Value};

use crate::clients::patroni::Patroni;
use crate::error::{Error, Result};
use crate::inventory::Cluster;
use crate::project::Project;

/// Each setting `patch` changes, as `key: old → new` (the record of what pgstrap manages is not
/// one of the cluster's settings).
pub fn describe(patch: &Value, live: &Value) -> Vec<String> {
    fn show(value: &Value) -> String {
        match value {
            Value::Null => "(unset)".into(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    fn walk(path: &str, patch: &Value, live: &Value, out: &mut Vec<String>) {
        let Value::Object(map) = patch else {
            return;
        };
        for (key, new) in map {
            if path.is_empty() && key == MANAGED {
                continue;
            }
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let old = live.get(key).unwrap_or(&Value::Null);
            match new {
                Value::Object(_) if old.is_object() => walk(&at, new, old, out),
                Value::Null => out.push(format!(
                    "{at}: {} → (removed: back to its default)",
                    show(old)
                )),
                _ => out.push(format!("{at}: {} → {}", show(old), show(new))),
            }
        }
    }
    let mut out = Vec::new();
    walk("", patch, live, &mut out);
    if out.is_empty() {
        // Only the record of what pgstrap manages.
        out.push("the record of the parameters pgstrap manages".into());
    }
    out
}

/// The PostgreSQL parameters `patch` sets (or removes).
pub fn parameters(patch: &Value) -> Vec<String> {
    patch["postgresql"]["parameters"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Of the parameters `patch` sets, those PostgreSQL takes only when it starts
/// (`pg_settings.context` is `postmaster`), asked through the PgBouncer of `cluster`'s member at
/// `address`.
pub async fn restart_only(
    project: &Project,
    cluster: &Cluster,
    secrets: &crate::inventory::secrets::Secrets,
    address: &str,
    patch: &Value,
) -> std::result::Result<Vec<String>, String> {
    let names = parameters(patch);
    let port = project.port(cluster, crate::project::Port::PgBouncer);
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let quoted: Vec<String> = names
        .iter()
        .map(|n| crate::clients::postgres::quote_literal(n))
        .collect();
    let client = crate::stack::verify::connect(address, port, secrets).await?;
    let rows = crate::stack::verify::rows(
        &client,
        &format!(
            "SELECT name FROM pg_settings WHERE context = 'postmaster' AND name IN ({}) ORDER BY name",
            quoted.join(",")
        ),
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect())
}

/// One line for a change: every setting old → new, then what PostgreSQL needs to take them (a
/// reload, or a restart of `members` for those in `restart`).
pub fn summary(patch: &Value, live: &Value, restart: &[String], members: &[String]) -> String {
    let mut text = format!(
        "dynamic configuration: {}",
        describe(patch, live).join(", ")
    );
    if !restart.is_empty() {
        text.push_str(&format!(
            "; {} only at a restart of {} (pending after the change: `pgstrap restart --pending`, or `apply --rolling-restart`)",
            restart.join(", "),
            members.join(", ")
        ));
    } else if !parameters(patch).is_empty() {
        text.push_str("; PostgreSQL takes it by a reload");
    }
    text
}

/// The dynamic settings pgstrap manages, as the inventory wants them.
fn desired_dynamic(project: &Project, cluster: &Cluster) -> Value {
    let vars = project.cluster_vars(cluster);
    let nested = vars.to_nested();
    let patroni = &nested["patroni"];
    let mut parameters = nested["postgresql"]["parameters"].clone();
    if !parameters.is_object() {
        parameters = json!({});
    }
    let mut desired = json!({
        "ttl": patroni["ttl"],
        "loop_wait": patroni["loop_wait"],
        "retry_timeout": patroni["retry_timeout"],
        "failsafe_mode": patroni["failsafe_mode"],
        "maximum_lag_on_failover": patroni["maximum_lag_on_failover"],
        "synchronous_mode": patroni["synchronous_mode"],
        "synchronous_mode_strict": patroni["synchronous_mode_strict"],
        "postgresql": {
            "use_pg_rewind": patroni["use_pg_rewind"],
            "use_slots": patroni["use_slots"],
            "parameters": parameters,
        },
    });
    // A permanent slot on the primary side for each standby cluster.
    let slots: serde_json::Map<String, Value> = project
        .inventory
        .standbys_of(&cluster.name)
        .map(|s| {
            (
                crate::inventory::standby_slot(&s.name),
                json!({"type": "physical"}),
            )
        })
        .collect();
    if !slots.is_empty() {
        desired["slots"] = Value::Object(slots);
    }
    if let Value::Object(map) = &mut desired {
        map.retain(|_, v| !v.is_null());
    }
    desired
}

/// Compare two JSON values loosely: `"on"` = `true`, `100` = `"100"`.
fn same(a: &Value, b: &Value) -> bool {
    fn norm(v: &Value) -> String {
        match v {
            Value::Bool(true) => "on".into(),
            Value::Bool(false) => "off".into(),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" => "on".into(),
                "false" | "off" | "no" => "off".into(),
                other => other.to_owned(),
            },
            other => other.to_string(),
        }
    }
    norm(a) == norm(b)
}

/// The part of the desired dynamic configuration that differs from the live one (`None`: all in
/// step). Keys the inventory does not manage are left alone.
fn config_diff(desired: &Value, live: &Value) -> Option<Value> {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => {
            let mut out = serde_json::Map::new();
            for (key, value) in want {
                let current = have.get(key).unwrap_or(&Value::Null);
                match value {
                    Value::Object(_) if current.is_object() => {
                        if let Some(sub) = config_diff(value, current) {
                            out.insert(key.clone(), sub);
                        }
                    }
                    Value::Object(_) => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ if !same(value, current) => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ => {}
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (want, have) if !same(want, have) => Some(want.clone()),
        _ => None,
    }
}

/// What differs between the inventory and the cluster's dynamic configuration.
#[derive(Debug)]
pub struct Change {
    /// The `PATCH /config` that makes it so (`None`: nothing differs).
    pub patch: Option<Value>,
    /// Parameters set outside the inventory (left alone).
    pub unmanaged: Vec<String>,
    /// The configuration the cluster runs (`GET /config`).
    pub live: Value,
}

/// Read the cluster's dynamic configuration from the leader's REST API at `leader:port` and
/// compare it with the inventory.
pub async fn change(
    project: &Project,
    cluster: &Cluster,
    patroni: &Patroni,
    leader: &str,
    port: u16,
) -> Result<Change> {
    let live = patroni
        .get_config(leader, port)
        .await
        .map_err(|e| Error::failure(format!("cluster {}: GET /config: {e}", cluster.name), None))?;
    let desired = with_removals(desired_dynamic(project, cluster), &live);
    Ok(Change {
        patch: config_diff(&desired, &live),
        unmanaged: unmanaged_parameters(&desired, &live),
        live,
    })
}

/// Where pgstrap keeps, in the dynamic configuration itself, the parameters it set: a key
/// Patroni does not read. A parameter it set that the inventory no longer names is removed
/// (PostgreSQL's default again); one set by someone else (`patronictl edit-config`) is left.
const MANAGED: &str = "pgstrap";

/// The parameters pgstrap set in `live` (recorded by an earlier apply).
fn managed_parameters(live: &Value) -> Vec<String> {
    live[MANAGED]["managed_parameters"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `desired` with what it manages recorded and, as `null` (removed by PATCH), each parameter
/// pgstrap set before that the inventory no longer names, or unsets with `null`.
fn with_removals(mut desired: Value, live: &Value) -> Value {
    let parameters = desired["postgresql"]["parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<String> = parameters
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    for old in managed_parameters(live) {
        if !parameters.contains_key(&old) {
            desired["postgresql"]["parameters"][old.as_str()] = Value::Null;
        }
    }
    desired[MANAGED] = json!({ "managed_parameters": names });
    desired
}

/// The parameters set in `live` that neither the inventory nor an earlier apply set: someone
/// else's (listed by `plan`, never changed).
fn unmanaged_parameters(desired: &Value, live: &Value) -> Vec<String> {
    let managed = managed_parameters(live);
    live["postgresql"]["parameters"]
        .as_object()
        .map(|params| {
            params
                .keys()
                .filter(|k| {
                    desired["postgresql"]["parameters"]
                        .get(k.as_str())
                        .is_none()
                })
                .filter(|k| !managed.contains(k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_differences_are_patched() {
        let desired = json!({"ttl": 30, "postgresql": {"use_slots": true, "parameters": {"max_connections": 200, "hot_standby": "on"}}});
        let live = json!({"ttl": 30, "loop_wait": 10, "postgresql": {"use_slots": true, "parameters": {"max_connections": 100, "hot_standby": "on", "other": 1}}});
        assert_eq!(
            config_diff(&desired, &live),
            Some(json!({"postgresql": {"parameters": {"max_connections": 200}}}))
        );
        let same_live = json!({"ttl": "30", "postgresql": {"use_slots": "on", "parameters": {"max_connections": "200", "hot_standby": true}}});
        assert_eq!(config_diff(&desired, &same_live), None);
    }

    #[test]
    fn a_parameter_pgstrap_set_and_the_inventory_dropped_is_removed_and_others_are_left() {
        // Issue 20: `apply --set …work_mem=8MB`, then a plain apply, kept work_mem live.
        let live = json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "8MB", "max_connections": 100, "theirs": "x"}},
            "pgstrap": {"managed_parameters": ["max_connections", "work_mem"]}});
        let desired = with_removals(
            json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}}}),
            &live,
        );
        assert_eq!(
            config_diff(&desired, &live),
            Some(json!({"postgresql": {"parameters": {"work_mem": null}},
                "pgstrap": {"managed_parameters": ["max_connections"]}}))
        );
        assert_eq!(
            unmanaged_parameters(&desired, &live),
            vec!["theirs".to_owned()]
        );
        assert_eq!(
            describe(&config_diff(&desired, &live).unwrap(), &live),
            ["postgresql.parameters.work_mem: 8MB → (removed: back to its default)"]
        );
        // `null` in the inventory unsets one; a parameter already absent needs nothing.
        let desired = with_removals(
            json!({"postgresql": {"parameters": {"max_connections": 100, "theirs": null, "gone": null}}}),
            &live,
        );
        let change = config_diff(&desired, &live).unwrap();
        assert_eq!(
            change["postgresql"]["parameters"],
            json!({"work_mem": null, "theirs": null})
        );
        // Once applied, nothing more to do.
        let after = json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}},
            "pgstrap": {"managed_parameters": ["max_connections"]}});
        let desired = with_removals(
            json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}}}),
            &after,
        );
        assert_eq!(config_diff(&desired, &after), None);
    }

    #[test]
    fn a_change_reads_old_to_new_with_what_postgresql_needs() {
        let live = json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}}});
        let patch = json!({"ttl": 20, "postgresql": {"parameters": {"work_mem": "8MB", "max_connections": 150}},
            "pgstrap": {"managed_parameters": ["max_connections", "work_mem"]}});
        let members = ["n1".to_owned(), "n2".to_owned()];
        assert_eq!(
            summary(&patch, &live, &["max_connections".into()], &members),
            "dynamic configuration: postgresql.parameters.max_connections: 100 → 150, postgresql.parameters.work_mem: (unset) → 8MB, ttl: 30 → 20; max_connections only at a restart of n1, n2 (pending after the change: `pgstrap restart --pending`, or `apply --rolling-restart`)"
        );
        let patch = json!({"postgresql": {"parameters": {"work_mem": "8MB"}}});
        assert_eq!(
            summary(&patch, &live, &[], &members),
            "dynamic configuration: postgresql.parameters.work_mem: (unset) → 8MB; PostgreSQL takes it by a reload"
        );
        assert_eq!(
            summary(&json!({"ttl": 20}), &live, &[], &members),
            "dynamic configuration: ttl: 30 → 20"
        );
        assert_eq!(parameters(&json!({"ttl": 20})), Vec::<String>::new());
    }

    #[test]
    fn a_missing_standby_slot_is_added() {
        let desired = json!({"slots": {"standby_dr": {"type": "physical"}}});
        assert_eq!(config_diff(&desired, &json!({})), Some(desired.clone()));
        assert_eq!(
            config_diff(
                &desired,
                &json!({"slots": {"standby_dr": {"type": "physical"}}})
            ),
            None
        );
    }
}
