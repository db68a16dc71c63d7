//! The drill's write clients: numbered inserts through the VIP's write port, as applications
//! make them. One client opens a new connection for every write (an application pool that
//! reconnects), the other keeps one connection and reconnects only when it breaks. Each records
//! which writes were acknowledged, and when.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_postgres::Client;

use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
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
    /// On the primary's own host, straight to its PostgreSQL (see [`OnHost`]).
    OnPrimaryHost,
}

impl Style {
    pub fn name(self) -> &'static str {
        match self {
            Style::Reconnecting => "reconnecting",
            Style::LongLived => "long-lived",
            Style::OnPrimaryHost => "on-primary-host",
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

/// A client on the primary's own host: a loop (a transient systemd unit, as postgres) that inserts
/// numbered rows over the Unix socket, straight into the PostgreSQL beside it, as an application
/// on that host would, and appends each acknowledged id with its time to a file. Unlike the VIP's
/// clients it keeps writing to the old primary when that host is cut off: only
/// `synchronous_mode` keeps such writes from being acknowledged and then lost. It stops by
/// itself after `limit`, so a drill that dies never leaves it running.
pub struct OnHost {
    /// When the drill's clock started, on the wall clock (the host stamps its acknowledgements
    /// with its own clock: the lab shares this machine's, servers run NTP).
    epoch: SystemTime,
}

const ON_HOST_UNIT: &str = "pgstrap-drill-writer";
const ON_HOST_LOG: &str = "/var/tmp/pgstrap-drill-writer.log";

impl OnHost {
    /// Start the loop on the host of `session`, with ids from `first_id`, against PostgreSQL's
    /// `port`.
    pub async fn start(
        session: &Session,
        port: u16,
        first_id: u64,
        limit: Duration,
        epoch: Instant,
    ) -> Result<Self> {
        let script = on_host_script(port, first_id);
        let max = format!("RuntimeMaxSec={}", limit.as_secs().max(1));
        let _ = session
            .run(&RemoteCommand::new(&["systemctl", "stop", ON_HOST_UNIT]))
            .await;
        session
            .run(&RemoteCommand::new(&[
                "systemd-run",
                "--quiet",
                "--collect",
                "--unit",
                ON_HOST_UNIT,
                "--uid",
                "postgres",
                "--property",
                &max,
                "/bin/sh",
                "-c",
                &script,
            ]))
            .await
            .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
        let since = epoch.elapsed();
        Ok(Self {
            epoch: SystemTime::now() - since,
        })
    }

    /// Stop the loop (it may have died with its host) and read what it acknowledged.
    pub async fn stop(self, session: &Session) -> Result<ClientLog> {
        let _ = session
            .run(&RemoteCommand::new(&["systemctl", "stop", ON_HOST_UNIT]))
            .await;
        let output = session
            .run(&RemoteCommand::new(&["cat", ON_HOST_LOG]))
            .await
            .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
        let _ = session
            .run(&RemoteCommand::new(&["rm", "-f", ON_HOST_LOG]))
            .await;
        let epoch = self
            .epoch
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(parse_on_host_log(&output.stdout_text(), epoch))
    }
}

/// The on-host client's loop (`sh`): ids from `first_id`, PostgreSQL on `port` (Unix socket).
fn on_host_script(port: u16, first_id: u64) -> String {
    format!(
        "log={ON_HOST_LOG}; : > \"$log\"; i={first_id}; \
         while :; do \
           err=$(timeout 2 psql -X -q -w -p {port} -d postgres -v ON_ERROR_STOP=1 \
             -c \"INSERT INTO {SCHEMA}.writes (id, client) VALUES ($i, '{client}')\" \
             2>&1 >/dev/null); rc=$?; \
           case $rc:$err in 0:*) echo \"$i $(date +%s.%N)\";; \
             3:*|*'psql: error: connection to server'*) echo \"$i refused\";; \
             *) echo \"$i in-doubt\";; esac >> \"$log\"; \
           i=$((i+1)); sleep 0.1; \
         done",
        client = Style::OnPrimaryHost.name(),
    )
}

/// The loop's lines (`ID SECONDS.NANOS` acknowledged, `ID refused` (psql's exit 3: the server
/// answered with an error, or psql could not log in), `ID in-doubt` (timed out or the connection
/// broke after the insert was sent: it may have committed)) → the client's log, times on the drill's clock (`epoch`: its start, Unix time).
fn parse_on_host_log(text: &str, epoch: Duration) -> ClientLog {
    let mut log = ClientLog {
        style: Style::OnPrimaryHost,
        attempted: 0,
        acknowledged: Vec::new(),
        in_doubt: 0,
    };
    for line in text.lines() {
        let Some((id, outcome)) = line.trim().split_once(' ') else {
            continue;
        };
        let Ok(id) = id.parse::<u64>() else {
            continue;
        };
        log.attempted += 1;
        match outcome {
            "refused" => {}
            "in-doubt" => log.in_doubt += 1,
            at => match at
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
            {
                Some(at) => log.acknowledged.push((id, at.saturating_sub(epoch))),
                None => log.in_doubt += 1,
            },
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_on_host_log_is_read_against_the_drill_clock() {
        let text = "7 1000.5\n8 refused\n9 in-doubt\n10 1001.25\ngarbage\n";
        let log = parse_on_host_log(text, Duration::from_secs(1000));
        assert_eq!(
            log.acknowledged,
            vec![
                (7, Duration::from_millis(500)),
                (10, Duration::from_millis(1250))
            ]
        );
        assert_eq!((log.attempted, log.in_doubt), (4, 1));
    }

    #[test]
    fn the_on_host_loop_is_valid_sh() {
        crate::connect::assert_valid_sh(&on_host_script(5432, 1_000_000_000));
    }
}
