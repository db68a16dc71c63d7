//! Patroni's REST API: cluster view, role endpoints, dynamic configuration and switchover.
//! Unsafe methods authenticate with the REST API password; it never appears in output.

use std::time::Duration;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inventory::secrets::Secret;

/// The etcd key Patroni keeps `rest` under for `cluster` (`patroni.namespace`, then the scope:
/// the cluster's name), e.g. `/service/main/initialize`.
pub fn dcs_key(
    project: &crate::project::Project,
    cluster: &crate::inventory::Cluster,
    rest: &str,
) -> String {
    let namespace = project
        .cluster_vars(cluster)
        .get_str("patroni.namespace")
        .unwrap_or_else(|| "/service/".into());
    format!(
        "{}/{}/{rest}",
        namespace.trim_end_matches('/'),
        cluster.name
    )
}

/// Whether Patroni initialised `cluster` in its etcd (its `initialize` key exists), and through
/// which of Patroni's etcd clients: `Some("etcd3")` (v3 keyspace), `Some("etcd")` (v2), `None`
/// (never bootstrapped, or its state was cleared); an error when no etcd member answered.
pub async fn initialized(
    project: &crate::project::Project,
    cluster: &crate::inventory::Cluster,
) -> Result<Option<&'static str>, String> {
    let key = dcs_key(project, cluster, "initialize");
    let etcd = super::etcd::Etcd::new(&project.etcd_endpoints(cluster));
    if etcd.has_key(&key).await? {
        return Ok(Some("etcd3"));
    }
    Ok(etcd.has_v2_key(&key).await.then_some("etcd"))
}

/// A client for one cluster's Patroni REST APIs.
#[derive(Clone)]
pub struct Patroni {
    http: reqwest::Client,
    username: String,
    password: Secret,
}

/// One member in `GET /cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub role: String,
    pub state: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Bytes behind the leader (`"unknown"` becomes `None`).
    #[serde(default, deserialize_with = "lag")]
    pub lag: Option<u64>,
    /// A parameter changed that takes effect only at a restart (Patroni lists it only when true).
    #[serde(default)]
    pub pending_restart: bool,
    /// The member's Patroni tags (`nofailover`, `noloadbalance`, `clonefrom`…).
    #[serde(default)]
    pub tags: BTreeMap<String, serde_json::Value>,
}

fn lag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.as_u64())
}

/// `GET /cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    pub members: Vec<Member>,
    /// Maintenance mode (`PATCH /config {"pause": true}`): no automatic failover.
    #[serde(default)]
    pub pause: bool,
}

/// One timeline switch in `GET /history`: `[timeline, lsn, reason, time, new leader]` (the last
/// two since Patroni 1.6; absent on a history written by an older one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Switch {
    /// The timeline that ended here (the next one began at `lsn`).
    pub timeline: u64,
    pub lsn: u64,
    pub reason: String,
    pub time: Option<String>,
    pub new_leader: Option<String>,
}

impl Switch {
    /// Patroni's `GET /history` answer, oldest first.
    pub fn parse_history(value: &serde_json::Value) -> Vec<Switch> {
        let Some(rows) = value.as_array() else {
            return Vec::new();
        };
        rows.iter()
            .filter_map(|row| {
                let row = row.as_array()?;
                let text = |i: usize| row.get(i).and_then(|v| v.as_str()).map(str::to_owned);
                Some(Switch {
                    timeline: row.first()?.as_u64()?,
                    lsn: row.get(1)?.as_u64()?,
                    reason: text(2).unwrap_or_default(),
                    time: text(3),
                    new_leader: text(4),
                })
            })
            .collect()
    }
}

/// An LSN as PostgreSQL writes it (`0/3000028`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

impl ClusterView {
    pub fn leader(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.role == "leader" || m.role == "standby_leader")
    }

    /// Members streaming from the leader (Patroni 3.0 reports `streaming` as the state).
    pub fn streaming(&self) -> Vec<&Member> {
        self.members
            .iter()
            .filter(|m| m.role != "leader" && m.role != "standby_leader" && m.state == "streaming")
            .collect()
    }

    pub fn describe(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}/{}", m.name, m.role, m.state))
            .collect();
        format!("[{}]", members.join(", "))
    }
}

impl Patroni {
    /// The client for the inventory's clusters, with the `rest_api_password` secret.
    pub fn from_secrets(
        secrets: &crate::inventory::secrets::Secrets,
    ) -> crate::error::Result<Self> {
        secrets
            .get("rest_api_password")
            .cloned()
            .map(Self::new)
            .ok_or_else(|| crate::error::Error::failure("no REST API password", None))
    }

    pub fn new(password: Secret) -> Self {
        let http = crate::tls::http_client(Duration::from_secs(2), Duration::from_secs(5));
        Self {
            http,
            username: "patroni".into(),
            password,
        }
    }

    /// The status code of `GET http://address:port/path` (e.g. `/primary`), or the error text.
    pub async fn probe(&self, address: &str, port: u16, path: &str) -> Result<u16, String> {
        self.http
            .get(format!("{}://{address}:{port}{path}", crate::tls::scheme()))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| describe(&e))
    }

    /// The view of `cluster` from its first DB member that answers (`None`: none does): the
    /// one place that asks "any member" of a cluster.
    pub async fn view(
        &self,
        project: &crate::project::Project,
        cluster: &crate::inventory::Cluster,
    ) -> Option<ClusterView> {
        self.view_with_host(project, cluster)
            .await
            .map(|(_, view)| view)
    }

    /// [`Patroni::view`] and the inventory host whose REST API answered.
    pub async fn view_with_host(
        &self,
        project: &crate::project::Project,
        cluster: &crate::inventory::Cluster,
    ) -> Option<(String, ClusterView)> {
        let port = project.port(cluster, crate::project::Port::PatroniRestApi);
        for host in &cluster.postgres {
            if let Ok(view) = self.cluster(&project.address(host), port).await {
                return Some((host.clone(), view));
            }
        }
        None
    }

    pub async fn cluster(&self, address: &str, port: u16) -> Result<ClusterView, String> {
        let response = self
            .http
            .get(format!(
                "{}://{address}:{port}/cluster",
                crate::tls::scheme()
            ))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        response.json().await.map_err(|e| describe(&e))
    }

    /// `GET /config`: the dynamic configuration.
    pub async fn get_config(&self, address: &str, port: u16) -> Result<serde_json::Value, String> {
        self.get_json(address, port, "/config").await
    }

    /// `GET /patroni`: this member's status (role, state, `pending_restart`…).
    pub async fn status(&self, address: &str, port: u16) -> Result<serde_json::Value, String> {
        self.get_json(address, port, "/patroni").await
    }

    async fn get_json(
        &self,
        address: &str,
        port: u16,
        path: &str,
    ) -> Result<serde_json::Value, String> {
        let response = self
            .http
            .get(format!("{}://{address}:{port}{path}", crate::tls::scheme()))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        response.json().await.map_err(|e| describe(&e))
    }

    /// `PATCH /config` with the whole change in one request.
    pub async fn patch_config(
        &self,
        address: &str,
        port: u16,
        change: &serde_json::Value,
    ) -> Result<(), String> {
        self.send(reqwest::Method::PATCH, address, port, "/config", change)
            .await
    }

    /// `POST /switchover` from `leader` to `candidate` (or any healthy replica when `None`).
    pub async fn switchover(
        &self,
        address: &str,
        port: u16,
        leader: &str,
        candidate: Option<&str>,
    ) -> Result<(), String> {
        let mut body = serde_json::json!({"leader": leader});
        if let Some(candidate) = candidate {
            body["candidate"] = serde_json::Value::String(candidate.to_owned());
        }
        self.send(reqwest::Method::POST, address, port, "/switchover", &body)
            .await
    }

    /// `POST /restart` of this member, only if it has a restart pending.
    pub async fn restart_pending(&self, address: &str, port: u16) -> Result<(), String> {
        let body = serde_json::json!({"restart_pending": true});
        self.send(reqwest::Method::POST, address, port, "/restart", &body)
            .await
    }

    /// `POST /restart` of this member, unconditionally (answers once PostgreSQL runs again).
    pub async fn restart(&self, address: &str, port: u16) -> Result<(), String> {
        self.send(
            reqwest::Method::POST,
            address,
            port,
            "/restart",
            &serde_json::json!({}),
        )
        .await
    }

    /// `POST /failover` to `candidate`: works without a leader (a switchover needs one).
    pub async fn failover(&self, address: &str, port: u16, candidate: &str) -> Result<(), String> {
        let body = serde_json::json!({"candidate": candidate});
        self.send(reqwest::Method::POST, address, port, "/failover", &body)
            .await
    }

    /// Maintenance mode on or off (`PATCH /config {"pause": …}`, as `patronictl pause` does).
    pub async fn set_pause(&self, address: &str, port: u16, pause: bool) -> Result<(), String> {
        self.patch_config(address, port, &serde_json::json!({ "pause": pause }))
            .await
    }

    /// `GET /history`: the cluster's timeline switches, oldest first.
    pub async fn history(&self, address: &str, port: u16) -> Result<Vec<Switch>, String> {
        Ok(Switch::parse_history(
            &self.get_json(address, port, "/history").await?,
        ))
    }

    /// An authenticated (unsafe) request; a non-2xx answer is an error with Patroni's text.
    async fn send(
        &self,
        method: reqwest::Method,
        address: &str,
        port: u16,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), String> {
        let response = self
            .http
            .request(
                method.clone(),
                format!("{}://{address}:{port}{path}", crate::tls::scheme()),
            )
            // A switchover or a restart answers only when it is done.
            .timeout(Duration::from_secs(90))
            .basic_auth(&self.username, Some(self.password.expose()))
            .json(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        Err(format!(
            "{method} {path} answered {status}: {}",
            response.text().await.unwrap_or_default()
        ))
    }
}

/// A reqwest error without the URL's credentials (there are none in URLs here) and without noise.
fn describe(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connection refused or unreachable".into()
    } else if error.is_timeout() {
        "timed out".into()
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Patroni 3.0.2 (`GET /cluster` on a 3-member lab cluster).
    const CLUSTER: &str = r#"{"members": [{"name": "n1", "role": "leader", "state": "running", "api_url": "http://10.77.0.11:8008/patroni", "host": "10.77.0.11", "port": 5432, "timeline": 1}, {"name": "n2", "role": "replica", "state": "streaming", "api_url": "http://10.77.0.12:8008/patroni", "host": "10.77.0.12", "port": 5432, "timeline": 1, "lag": 0}, {"name": "n3", "role": "replica", "state": "running", "api_url": "http://10.77.0.13:8008/patroni", "host": "10.77.0.13", "port": 5432, "timeline": 1, "lag": "unknown"}]}"#;

    #[test]
    fn parses_the_cluster_view() {
        let view: ClusterView = serde_json::from_str(CLUSTER).unwrap();
        assert_eq!(view.leader().map(|m| m.name.as_str()), Some("n1"));
        let streaming: Vec<&str> = view.streaming().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(streaming, ["n2"]);
        assert_eq!(view.members[2].lag, None);
        assert_eq!(
            view.describe(),
            "[n1=leader/running, n2=replica/streaming, n3=replica/running]"
        );
        assert!(!view.pause);
    }

    #[test]
    fn parses_the_timeline_history() {
        // Patroni 4.0's `GET /history` after a switchover and a failover.
        let value: serde_json::Value = serde_json::from_str(
            r#"[[1, 50331808, "no recovery target specified", "2026-12-06T21:03:11.218457+00:00", "n2"], [2, 83886240, "no recovery target specified", "2026-12-06T21:05:40.019211+00:00", "n1"], [3, 1234]]"#,
        )
        .unwrap();
        let history = Switch::parse_history(&value);
        assert_eq!(history.len(), 3);
        assert_eq!(history[0].timeline, 1);
        assert_eq!(lsn_text(history[0].lsn), "0/30000A0");
        assert_eq!(history[1].new_leader.as_deref(), Some("n1"));
        assert_eq!(history[2].time, None);
        assert!(Switch::parse_history(&serde_json::json!({"x": 1})).is_empty());
    }
}
