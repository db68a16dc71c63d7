//! `pgbackrest info --output=json`, read: the stanza's state, its backups and its WAL archive.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One stanza as the repository describes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StanzaInfo {
    pub name: String,
    /// pgBackRest's status code: 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing
    /// stanza data, others: see `pgbackrest help info`.
    pub code: i64,
    pub message: String,
    /// Oldest first.
    pub backups: Vec<BackupSet>,
    /// The oldest and newest WAL segment in the archive (of the current database history).
    pub archive_min: Option<String>,
    pub archive_max: Option<String>,
}

impl StanzaInfo {
    /// The stanza was created (it may hold no backup yet).
    pub fn exists(&self) -> bool {
        matches!(self.code, 0 | 2)
    }

    /// The newest backup of `kind` (`full`, `diff`, `incr`).
    pub fn newest(&self, kind: &str) -> Option<&BackupSet> {
        self.backups.iter().rev().find(|b| b.kind == kind)
    }
}

/// One backup in the repository.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackupSet {
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// Unix seconds.
    pub started: i64,
    pub stopped: i64,
    /// The database's size, and what the backup takes in the repository (compressed).
    pub size: u64,
    pub repo_size: u64,
    /// What this backup added to the repository (all of it for a full backup).
    pub repo_delta: u64,
    /// The first and last WAL segment a restore of it needs.
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
    /// Where the backup ends in the WAL: a restore reaches no earlier point.
    pub lsn_stop: Option<String>,
    /// pgBackRest found a problem in it (e.g. a page checksum).
    pub error: bool,
}

impl BackupSet {
    pub fn seconds(&self) -> i64 {
        self.stopped - self.started
    }
}

#[derive(Deserialize)]
struct RawStanza {
    name: String,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    backup: Vec<RawBackup>,
    #[serde(default)]
    archive: Vec<RawArchive>,
}

#[derive(Deserialize, Default)]
struct RawStatus {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    error: bool,
    timestamp: RawTimes,
    #[serde(default)]
    info: RawSizes,
    #[serde(default)]
    archive: RawRange,
    #[serde(default)]
    lsn: RawRange,
}

#[derive(Deserialize)]
struct RawTimes {
    start: i64,
    stop: i64,
}

#[derive(Deserialize, Default)]
struct RawSizes {
    #[serde(default)]
    size: u64,
    #[serde(default)]
    repository: RawRepoSize,
}

#[derive(Deserialize, Default)]
struct RawRepoSize {
    #[serde(default)]
    size: u64,
    #[serde(default)]
    delta: u64,
}

#[derive(Deserialize, Default)]
struct RawRange {
    start: Option<String>,
    stop: Option<String>,
}

#[derive(Deserialize)]
struct RawArchive {
    min: Option<String>,
    max: Option<String>,
}

/// Parse `pgbackrest --stanza=NAME --output=json info` (a list of stanzas) for `stanza`.
pub fn parse(text: &str, stanza: &str) -> Result<StanzaInfo> {
    let stanzas: Vec<RawStanza> = serde_json::from_str(text).map_err(|e| {
        Error::failure(
            format!("pgBackRest's info for stanza {stanza} is not what pgstrap reads: {e}"),
            None,
        )
    })?;
    let Some(raw) = stanzas.into_iter().find(|s| s.name == stanza) else {
        return Ok(StanzaInfo {
            name: stanza.to_owned(),
            code: 1,
            message: "missing stanza path".into(),
            backups: Vec::new(),
            archive_min: None,
            archive_max: None,
        });
    };
    let mut backups: Vec<BackupSet> = raw
        .backup
        .into_iter()
        .map(|b| BackupSet {
            label: b.label,
            kind: b.kind,
            started: b.timestamp.start,
            stopped: b.timestamp.stop,
            size: b.info.size,
            repo_size: b.info.repository.size,
            repo_delta: b.info.repository.delta,
            wal_start: b.archive.start,
            wal_stop: b.archive.stop,
            lsn_stop: b.lsn.stop,
            error: b.error,
        })
        .collect();
    backups.sort_by_key(|b| b.started);
    let archive = raw.archive.last();
    Ok(StanzaInfo {
        name: raw.name,
        code: raw.status.code,
        message: raw.status.message,
        backups,
        archive_min: archive.and_then(|a| a.min.clone()),
        archive_max: archive.and_then(|a| a.max.clone()),
    })
}

/// Bytes for people: `3.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stanza_with_one_full_backup() {
        let text = include_str!("testdata/info-full.json");
        let info = parse(text, "main").unwrap();
        assert!(info.exists());
        assert_eq!(info.code, 0);
        assert_eq!(info.backups.len(), 1);
        let full = info.newest("full").unwrap();
        assert!(full.label.ends_with('F'));
        assert!(full.repo_size > 0 && full.size >= full.repo_size);
        assert!(info.archive_max.is_some());
        assert!(info.newest("diff").is_none());
    }

    #[test]
    fn a_missing_stanza() {
        let text = include_str!("testdata/info-missing.json");
        let info = parse(text, "main").unwrap();
        assert!(!info.exists());
        assert!(info.backups.is_empty());
        // Another stanza's listing, or none at all, is a missing stanza too.
        assert!(!parse("[]", "main").unwrap().exists());
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 100), "3.0 MiB");
    }
}
