//! etcd through its v3 JSON API (the gRPC gateway every etcd 3.4+ member serves on its client
//! URL): member list, per-member status and the leader, membership changes, and the gate "every
//! member healthy and one leader". Plain HTTP+JSON keeps the build free of `protoc`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::gate::{wait_for, Poll};
use crate::error::Result;

/// One etcd member as seen by pgstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdMember {
    pub name: String,
    pub id: String,
    pub client_url: String,
    pub healthy: bool,
    pub leader: bool,
    pub learner: bool,
    pub version: Option<String>,
    pub error: Option<String>,
}

/// The health of an etcd cluster.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdHealth {
    pub members: Vec<EtcdMember>,
    pub leader: Option<String>,
}

impl EtcdHealth {
    pub fn all_healthy(&self, expected: usize) -> bool {
        self.members.len() == expected
            && self.members.iter().all(|m| m.healthy && !m.learner)
            && self.leader.is_some()
    }

    pub fn describe(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{}={}{}{}",
                    m.name,
                    if m.healthy { "healthy" } else { "unhealthy" },
                    if m.learner { "(learner)" } else { "" },
                    if m.leader { "(leader)" } else { "" }
                )
            })
            .collect();
        format!("{} members [{}]", self.members.len(), members.join(", "))
    }
}

/// A 64-bit id: the gateway writes uint64 fields as JSON strings.
fn id<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("not a u64")),
        serde_json::Value::Null => Ok(0),
        other => Err(serde::de::Error::custom(format!("unexpected id {other}"))),
    }
}

/// A member in `member/list` or `member/add`.
#[derive(Debug, Clone, Deserialize)]
pub struct RawMember {
    #[serde(rename = "ID", deserialize_with = "id", default)]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

#[derive(Debug, Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Debug, Deserialize)]
struct MemberAdd {
    member: RawMember,
}

/// `maintenance/status` of one member.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub version: String,
    #[serde(deserialize_with = "id", default)]
    pub leader: u64,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
    #[serde(rename = "raftIndex", deserialize_with = "id", default)]
    pub raft_index: u64,
    #[serde(default)]
    header: Header,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Header {
    #[serde(deserialize_with = "id", default)]
    member_id: u64,
}

impl Status {
    pub fn member_id(&self) -> u64 {
        self.header.member_id
    }
}

/// An etcd cluster reached through its client URLs.
#[derive(Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

/// The text etcd's gateway puts in an error body, else the status line.
#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

/// Keys and values travel base64-encoded through etcd's JSON gateway.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Plain words for a transport error (no Rust debug chains).
fn transport(url: &str, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("{url}: no answer (timed out)")
    } else if e.is_connect() {
        format!("{url}: connection refused or host unreachable")
    } else {
        format!("{url}: {e}")
    }
}

impl Etcd {
    pub fn new(endpoints: &[String]) -> Self {
        let http = crate::tls::http_client(Duration::from_secs(2), Duration::from_secs(3));
        Self {
            http,
            endpoints: endpoints.to_vec(),
        }
    }

    /// POST one gateway call to one endpoint.
    async fn call_at<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &str,
        body: serde_json::Value,
    ) -> std::result::Result<T, String> {
        let url = format!("{}/v3/{path}", endpoint.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(endpoint, &e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transport(endpoint, &e))?;
        if !status.is_success() {
            let message = serde_json::from_str::<GatewayError>(&text)
                .map(|g| {
                    if g.message.is_empty() {
                        g.error
                    } else {
                        g.message
                    }
                })
                .unwrap_or_else(|_| text.trim().to_owned());
            return Err(format!("{endpoint}: {path}: {message} (HTTP {status})"));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("{endpoint}: {path}: unexpected answer: {e}"))
    }

    /// The same call on each endpoint in turn until one answers.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> std::result::Result<T, String> {
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            match self.call_at(endpoint, path, body.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(e),
            }
        }
        Err(format!("no etcd endpoint answered: {}", errors.join("; ")))
    }

    pub async fn members(&self) -> std::result::Result<Vec<RawMember>, String> {
        let list: MemberList = self
            .call("cluster/member/list", serde_json::json!({}))
            .await?;
        Ok(list.members)
    }

    pub async fn status(&self, endpoint: &str) -> std::result::Result<Status, String> {
        self.call_at(endpoint, "maintenance/status", serde_json::json!({}))
            .await
    }

    /// `member add` as a learner (or a voter when `learner` is false); returns the new member.
    pub async fn add_member(
        &self,
        peer_url: &str,
        learner: bool,
    ) -> std::result::Result<RawMember, String> {
        let added: MemberAdd = self
            .call(
                "cluster/member/add",
                serde_json::json!({"peerURLs": [peer_url], "isLearner": learner}),
            )
            .await?;
        Ok(added.member)
    }

    pub async fn promote_member(&self, id: u64) -> std::result::Result<(), String> {
        let _: serde_json::Value = self
            .call(
                "cluster/member/promote",
                serde_json::json!({"ID": id.to_string()}),
            )
            .await?;
        Ok(())
    }

    pub async fn remove_member(&self, id: u64) -> std::result::Result<(), String> {
        let _: serde_json::Value = self
            .call(
                "cluster/member/remove",
                serde_json::json!({"ID": id.to_string()}),
            )
            .await?;
        Ok(())
    }

    /// Whether `key` exists in the v3 keyspace.
    pub async fn has_key(&self, key: &str) -> std::result::Result<bool, String> {
        #[derive(Deserialize)]
        struct Range {
            #[serde(default, deserialize_with = "id")]
            count: u64,
        }
        let range: Range = self
            .call(
                "kv/range",
                serde_json::json!({"key": b64(key.as_bytes()), "count_only": true}),
            )
            .await?;
        Ok(range.count > 0)
    }

    /// The value of `key` in the v3 keyspace (as text), `None` when there is none.
    pub async fn get(&self, key: &str) -> std::result::Result<Option<String>, String> {
        #[derive(Deserialize)]
        struct Kv {
            #[serde(default)]
            value: String,
        }
        #[derive(Deserialize)]
        struct Range {
            #[serde(default)]
            kvs: Vec<Kv>,
        }
        let range: Range = self
            .call("kv/range", serde_json::json!({"key": b64(key.as_bytes())}))
            .await?;
        Ok(range.kvs.first().map(|kv| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&kv.value)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }))
    }

    /// Put `key` = `value` in the v3 keyspace.
    pub async fn put(&self, key: &str, value: &str) -> std::result::Result<(), String> {
        let _: serde_json::Value = self
            .call(
                "kv/put",
                serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())}),
            )
            .await?;
        Ok(())
    }

    /// Delete `key` from the v3 keyspace.
    pub async fn delete(&self, key: &str) -> std::result::Result<(), String> {
        let _: serde_json::Value = self
            .call(
                "kv/deleterange",
                serde_json::json!({"key": b64(key.as_bytes())}),
            )
            .await?;
        Ok(())
    }

    /// Delete every key under `prefix` in the v3 keyspace (and the v2 directory of the same
    /// path, where the v2 API is on); the number of v3 keys deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> std::result::Result<u64, String> {
        #[derive(Deserialize)]
        struct Deleted {
            #[serde(default, deserialize_with = "id")]
            deleted: u64,
        }
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let deleted: Deleted = self
            .call(
                "kv/deleterange",
                serde_json::json!({"key": b64(prefix.as_bytes()), "range_end": b64(&end)}),
            )
            .await?;
        self.delete_v2(&format!("{}?recursive=true", prefix.trim_end_matches('/')))
            .await;
        Ok(deleted.deleted)
    }

    /// Delete `key` from the v3 keyspace and from the v2 keyspace (where the v2 API is on:
    /// Patroni's etcd v2 client keeps its state there).
    pub async fn delete_everywhere(&self, key: &str) -> std::result::Result<(), String> {
        self.delete(key).await?;
        self.delete_v2(key).await;
        Ok(())
    }

    /// DELETE `/v2/keys{path}` on the first endpoint that answers (nothing when the v2 API is
    /// off or the key is absent).
    async fn delete_v2(&self, path: &str) {
        for endpoint in &self.endpoints {
            let url = format!("{}/v2/keys{path}", endpoint.trim_end_matches('/'));
            if self.http.delete(&url).send().await.is_ok() {
                break;
            }
        }
    }

    /// Whether `key` exists in the v2 keyspace (false when the v2 API is off).
    pub async fn has_v2_key(&self, key: &str) -> bool {
        for endpoint in &self.endpoints {
            let url = format!("{}/v2/keys{key}", endpoint.trim_end_matches('/'));
            if let Ok(response) = self.http.get(&url).send().await {
                return response.status().is_success();
            }
        }
        false
    }

    /// Move leadership to `target` (the call must reach the current leader).
    pub async fn move_leader(
        &self,
        leader_endpoint: &str,
        target: u64,
    ) -> std::result::Result<(), String> {
        let _: serde_json::Value = self
            .call_at(
                leader_endpoint,
                "maintenance/transfer-leadership",
                serde_json::json!({"targetID": target.to_string()}),
            )
            .await?;
        Ok(())
    }
}

/// Ask the cluster for its members (through any reachable endpoint), then each member for its
/// status. An unreachable member is reported unhealthy, not an error.
pub async fn health(endpoints: &[String]) -> std::result::Result<EtcdHealth, String> {
    let etcd = Etcd::new(endpoints);
    let list = etcd.members().await?;
    let statuses = futures::future::join_all(list.iter().map(|m| {
        let etcd = etcd.clone();
        let url = m.client_urls.first().cloned();
        async move {
            match url {
                Some(url) => Some(etcd.status(&url).await),
                None => None,
            }
        }
    }))
    .await;
    let mut members = Vec::new();
    let mut leader = None;
    for (member, status) in list.iter().zip(statuses) {
        let mut entry = EtcdMember {
            name: if member.name.is_empty() {
                "(unstarted)".into()
            } else {
                member.name.clone()
            },
            id: format!("{:x}", member.id),
            client_url: member.client_urls.first().cloned().unwrap_or_default(),
            healthy: false,
            leader: false,
            learner: member.is_learner,
            version: None,
            error: None,
        };
        match status {
            None => entry.error = Some("added but not started yet".into()),
            Some(Ok(status)) => {
                entry.healthy = status.errors.is_empty() && status.leader != 0;
                entry.leader = status.leader == member.id;
                entry.version = Some(status.version);
                if !status.errors.is_empty() {
                    entry.error = Some(status.errors.join("; "));
                }
            }
            Some(Err(e)) => entry.error = Some(e),
        }
        if entry.leader {
            leader = Some(entry.name.clone());
        }
        members.push(entry);
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(EtcdHealth { members, leader })
}

/// Gate: `expected` members, all healthy, one leader.
pub async fn wait_healthy(
    endpoints: &[String],
    expected: usize,
    timeout: Duration,
) -> Result<EtcdHealth> {
    wait_for(
        &format!("etcd: {expected} healthy members and a leader"),
        timeout,
        Duration::from_millis(500),
        "check `journalctl -u etcd` on the members; every member must list the same ETCD_INITIAL_CLUSTER",
        || async {
            match health(endpoints).await {
                Ok(h) if h.all_healthy(expected) => Poll::Ready(h),
                Ok(h) => Poll::NotYet(h.describe()),
                Err(e) => Poll::NotYet(e),
            }
        },
    )
    .await
}

/// Keep the etcd leader off the host of the PostgreSQL primary: when both die together (a power
/// cut of that host), etcd first elects a new leader, which renews every lease to its full TTL,
/// so Patroni's leader key outlives the dead primary by up to one more ttl. Returns the member the
/// leadership moved to, or `None` when it was elsewhere already (or etcd is co-located nowhere).
pub async fn keep_leader_off(
    endpoints: &[String],
    primary_address: &str,
) -> std::result::Result<Option<String>, String> {
    let health = health(endpoints).await?;
    let on_primary = |m: &EtcdMember| m.client_url.contains(&format!("//{primary_address}:"));
    let Some(leader) = health.members.iter().find(|m| m.leader) else {
        return Ok(None);
    };
    if !on_primary(leader) {
        return Ok(None);
    }
    let Some(target) = health
        .members
        .iter()
        .find(|m| !m.leader && m.healthy && !m.learner && !on_primary(m))
    else {
        return Ok(None);
    };
    let id = u64::from_str_radix(&target.id, 16).map_err(|e| e.to_string())?;
    Etcd::new(endpoints)
        .move_leader(&leader.client_url, id)
        .await?;
    Ok(Some(target.name.clone()))
}
