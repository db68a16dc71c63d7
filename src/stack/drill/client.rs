//! The drill's write clients: numbered inserts through the VIP's write port, as applications
//! make them. One client opens a new connection for every write (an application pool that
//! reconnects), the other keeps one connection and reconnects only when it breaks. Each records
//! which writes were acknowledged, and when.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::inventory::secrets::Secrets;
use crate::stack::verify;

/// The drill's own schema; created before and dropped after a drill.
pub const SCHEMA: &str = "pgstrap_drill";

/// How a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// A new connection per write.
    Reconnecting,
    /// One long-lived connection, replaced when it breaks.
    LongLived,
}

impl Style {
    pub fn name(self) -> &'static str {
        match self {
            Style::Reconnecting => "reconnecting",
            Style::LongLived => "long-lived",
        }
    }
}

/// What one client did.
#[derive(Debug, Clone, Serialize)]
pub struct ClientLog {
    pub style: Style,
    pub attempted: u64,
    /// Acknowledged write ids, each with the time of the acknowledgement since the drill began.
    #[serde(skip)]
    pub acknowledged: Vec<(u64, Duration)>,
    /// Writes whose outcome is unknown (the client gave up waiting for an answer): they may or
    /// may not be there; they are never counted as lost.
    pub in_doubt: u64,
}

impl ClientLog {
    /// The longest time without an acknowledged write between `from` and `to` (drill time).
    pub fn longest_gap(&self, from: Duration, to: Duration) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for (_, at) in self
            .acknowledged
            .iter()
            .filter(|(_, at)| *at >= from && *at <= to)
        {
            gap = gap.max(at.saturating_sub(last));
            last = *at;
        }
        gap.max(to.saturating_sub(last))
    }
}

/// Settings shared by the clients.
#[derive(Clone)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub secrets: Secrets,
    /// Time between writes.
    pub interval: Duration,
    /// How long a write (connect + insert) may take before it is given up as in doubt.
    pub timeout: Duration,
}

/// Create the drill's table (through the VIP, on the primary).
pub async fn prepare(target: &Target) -> Result<(), String> {
    let client = verify::connect(&target.address, target.port, &target.secrets).await?;
    verify::rows(
        &client,
        &format!(
            "CREATE SCHEMA IF NOT EXISTS {SCHEMA}; \
             DROP TABLE IF EXISTS {SCHEMA}.writes; \
             CREATE TABLE {SCHEMA}.writes (id bigint PRIMARY KEY, client text NOT NULL, \
             at timestamptz NOT NULL DEFAULT now())"
        ),
    )
    .await
    .map(|_| ())
}

/// Drop the drill's schema (through the VIP).
pub async fn cleanup(target: &Target) -> Result<(), String> {
    let client = verify::connect(&target.address, target.port, &target.secrets).await?;
    verify::rows(&client, &format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await
        .map(|_| ())
}

/// A running client; `stop` ends it and returns its log.
pub struct Running {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<ClientLog>,
}

impl Running {
    pub async fn stop(self) -> ClientLog {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.unwrap_or_else(|_| ClientLog {
            style: Style::Reconnecting,
            attempted: 0,
            acknowledged: Vec::new(),
            in_doubt: 0,
        })
    }
}

/// Start a client writing ids taken from `ids` (shared, so ids are unique across clients).
pub fn start(target: Target, style: Style, ids: Arc<AtomicU64>, epoch: Instant) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let mut log = ClientLog {
            style,
            attempted: 0,
            acknowledged: Vec::new(),
            in_doubt: 0,
        };
        let mut connection: Option<Client> = None;
        while !flag.load(Ordering::SeqCst) {
            let started = Instant::now();
            let id = ids.fetch_add(1, Ordering::SeqCst);
            log.attempted += 1;
            let write = write_once(&target, style, &mut connection, id);
            match tokio::time::timeout(target.timeout, write).await {
                Ok(Ok(())) => log.acknowledged.push((id, epoch.elapsed())),
                // Refused before or at the insert: certainly not acknowledged.
                Ok(Err(Outcome::Refused)) => connection = None,
                // The connection broke after the insert was sent: it may have committed.
                Ok(Err(Outcome::InDoubt)) | Err(_) => {
                    log.in_doubt += 1;
                    connection = None;
                }
            }
            if let Some(rest) = target.interval.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
        log
    });
    Running { stop, handle }
}

enum Outcome {
    Refused,
    InDoubt,
}

async fn write_once(
    target: &Target,
    style: Style,
    connection: &mut Option<Client>,
    id: u64,
) -> Result<(), Outcome> {
    if style == Style::Reconnecting || connection.as_ref().is_none_or(Client::is_closed) {
        *connection = Some(
            verify::connect(&target.address, target.port, &target.secrets)
                .await
                .map_err(|_| Outcome::Refused)?,
        );
    }
    let client = connection.as_ref().ok_or(Outcome::Refused)?;
    let sql = format!(
        "INSERT INTO {SCHEMA}.writes (id, client) VALUES ({id}, '{}')",
        style.name()
    );
    match client.simple_query(&sql).await {
        Ok(_) => Ok(()),
        // An error the server sent (read-only, shutting down…) means it was not committed.
        Err(e) if e.as_db_error().is_some() => Err(Outcome::Refused),
        Err(_) => Err(Outcome::InDoubt),
    }
}
