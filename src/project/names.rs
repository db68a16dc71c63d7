//! Names derived from resolved settings, computed in one place: a host's Patroni member name, the
//! replication slot Patroni gives it, the member → host map of a cluster, a cluster's VRRP
//! router id.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Project;
use crate::inventory::{Cluster, Host};

/// The replication slot Patroni names after member `member` (its `slot_name_from_member_name`):
/// lowercased, `-` and `.` as `_`, any other character not in `[a-z0-9_]` as `u` and its code
/// point in four digits, at most 63 characters. `pg-x` and `pg_x`, or `PG1` and `pg1`, share one.
pub fn patroni_slot(member: &str) -> String {
    let mut slot = String::new();
    for c in member.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => slot.push(c),
            '-' | '.' => slot.push('_'),
            other => slot.push_str(&format!("u{:04}", other as u32)),
        }
    }
    slot.chars().take(63).collect()
}

/// The Patroni member name of `host`: `patroni.name` when set, else the host's name.
pub fn member_name(project: &Project, host: &Host, cluster: &Cluster) -> String {
    match project.setting(Some(host), Some(cluster), "patroni.name") {
        Some(Value::String(name)) if !name.is_empty() => name,
        _ => host.name.clone(),
    }
}

/// Patroni member name → inventory host name, for the DB hosts of `cluster`.
pub fn member_hosts(project: &Project, cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .postgres
        .iter()
        .filter_map(|h| project.inventory.hosts.get(h))
        .map(|h| (member_name(project, h, cluster), h.name.clone()))
        .collect()
}

/// The VRRP router id of a cluster: `keepalived.router_id` when not 0, else derived from its name.
pub fn router_id(project: &Project, cluster: &Cluster) -> u64 {
    match project
        .setting(None, Some(cluster), "keepalived.router_id")
        .as_ref()
        .and_then(Value::as_u64)
    {
        Some(id) if id > 0 => id,
        _ => {
            // FNV-1a: stable across runs and versions, unlike the std hasher.
            let mut hash: u32 = 0x811c_9dc5;
            for byte in cluster.name.bytes() {
                hash ^= u32::from(byte);
                hash = hash.wrapping_mul(0x0100_0193);
            }
            u64::from(hash % 254) + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_follow_patronis_mapping() {
        assert_eq!(patroni_slot("pg-x"), "pg_x");
        assert_eq!(patroni_slot("PG1.dc2"), "pg1_dc2");
        assert_eq!(patroni_slot("a+b"), "au0043b");
        assert_eq!(patroni_slot(&"n".repeat(70)).len(), 63);
    }
}
