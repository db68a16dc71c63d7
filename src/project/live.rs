//! What the hosts and the running clusters impose on a project's settings, as one command gathered
//! it: each host's Debian release (read by the engine when it connects), the layers the running
//! clusters impose (`stack::live`: their DCS keyspace, TLS kept off) and those of etcd members
//! joining a running cluster. A plain value: a command gathers it at a clear point and goes on
//! with `Project::with_live`; what is learned later is a new value, never a change behind a
//! shared project (what a plan renders must not depend on who asked the hosts first).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::settings::vars::{Layer, Origin};

/// Live state, by host, cluster and (cluster, host). Empty until a command gathers it: then
/// every host renders for the default release and nothing is imposed.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Each host's Debian release (`VERSION_ID`), by host name.
    releases: BTreeMap<String, String>,
    /// What each running cluster imposes, by cluster.
    clusters: BTreeMap<String, Layer>,
    /// What a running cluster imposes on one of its hosts (a member joining its etcd).
    hosts: BTreeMap<(String, String), Layer>,
}

impl Live {
    /// The release read from `host`, if it was.
    pub fn release(&self, host: &str) -> Option<&str> {
        self.releases.get(host).map(String::as_str)
    }

    /// What the running `cluster` imposes, if anything.
    pub fn cluster(&self, cluster: &str) -> Option<&Layer> {
        self.clusters.get(cluster)
    }

    /// What the running `cluster` imposes on `host`, if anything.
    pub fn host(&self, cluster: &str, host: &str) -> Option<&Layer> {
        self.hosts.get(&(cluster.to_owned(), host.to_owned()))
    }

    /// With the releases read from the hosts (`VERSION_ID` by host name) added.
    pub fn with_releases(mut self, read: impl IntoIterator<Item = (String, String)>) -> Live {
        self.releases.extend(read);
        self
    }

    /// With settings the running clusters impose (`(cluster, dotted key → value)`) added to
    /// what they were known to impose.
    pub fn imposing(
        mut self,
        learned: impl IntoIterator<Item = (String, BTreeMap<String, Value>)>,
    ) -> Live {
        for (cluster, values) in learned {
            self.clusters
                .entry(cluster.clone())
                .or_insert_with(|| Layer {
                    origin: Origin::Live(cluster),
                    values: BTreeMap::new(),
                })
                .values
                .extend(values);
        }
        self
    }

    /// With the settings the running `cluster` imposes on its joining member `host`.
    pub fn imposing_on_host(
        mut self,
        cluster: &str,
        host: &str,
        values: BTreeMap<String, Value>,
    ) -> Live {
        self.hosts.insert(
            (cluster.to_owned(), host.to_owned()),
            Layer {
                origin: Origin::Live(format!("{cluster}, joining member {host}")),
                values,
            },
        );
        self
    }

    /// Without what `cluster` imposed on `host` to join it (once it has joined).
    pub fn joined(mut self, cluster: &str, host: &str) -> Live {
        self.hosts.remove(&(cluster.to_owned(), host.to_owned()));
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    /// A project learns nothing behind the back of whoever holds it: what is gathered makes a new
    /// project, and the one it was made from renders as before.
    #[test]
    fn what_is_gathered_makes_a_new_project() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        std::fs::write(
            &path,
            "hosts:\n  pg1: {address: 10.0.0.11}\n  pg2: {address: 10.0.0.12}\n  pg3: {address: 10.0.0.13}\n\
             clusters:\n  main:\n    etcd: [pg1, pg2, pg3]\n    postgres: [pg1, pg2, pg3]\n",
        )
        .unwrap();
        let loaded = crate::project::load(&path, &[]).unwrap();
        let main = &loaded.inventory.clusters["main"];
        let pg1 = &loaded.inventory.hosts["pg1"];
        let other = if loaded.default_release == "12" {
            "13"
        } else {
            "12"
        };

        let read = loaded.with_releases([("pg1".to_owned(), other.to_owned())]);
        assert_eq!(read.release_of("pg1"), other);
        assert_eq!(loaded.release_of("pg1"), loaded.default_release);
        assert_ne!(
            read.postgres_version(pg1, main),
            loaded.postgres_version(pg1, main)
        );

        let dcs = BTreeMap::from([("patroni.dcs".to_owned(), Value::String("etcd".into()))]);
        let joining = BTreeMap::from([(
            "etcd.initial_cluster_state".to_owned(),
            Value::String("existing".into()),
        )]);
        let live = read
            .live()
            .clone()
            .imposing([("main".to_owned(), dcs)])
            .imposing_on_host("main", "pg1", joining);
        let running = read.with_live(live);
        assert!(running.is_live(main, "patroni.dcs"));
        assert!(!read.is_live(main, "patroni.dcs"));
        assert_eq!(running.release_of("pg1"), other, "releases are kept");
        assert!(running.has_own_settings(pg1, Some(main)));
        assert!(!read.has_own_settings(pg1, Some(main)));

        let joined = running.with_live(running.live().clone().joined("main", "pg1"));
        assert!(!joined.has_own_settings(pg1, Some(main)));
        assert!(joined.is_live(main, "patroni.dcs"));
    }
}
