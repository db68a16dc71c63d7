//! `pgstrap report`: what support needs to understand a cluster, in one archive — every host's
//! facts (release, failed units, disk, the stack's package versions), its journals of the stack's
//! services over a recent window, and the configuration files pgstrap manages there as they are
//! on the host, with every secret value of the inventory masked and private keys left out. The
//! caller adds the status. Reads only; the archive is written 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::connect::RemoteCommand;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::project::Project;

/// The services whose journals go into a report (those of every role, and pgstrap's helpers).
const UNITS: &[&str] = &[
    "etcd",
    "patroni",
    "pgbouncer",
    "haproxy",
    "keepalived",
    "pgstrap-etcd-leader-away",
    "pgstrap-postmaster-watch",
    "pgbackrest*",
];

/// At most this many journal lines per host (the newest).
const JOURNAL_LINES: &str = "20000";

/// One host's facts in one round trip.
const FACTS_SCRIPT: &str = r#"set +e
echo "== /etc/os-release"; cat /etc/os-release
echo "== uname -a"; uname -a
echo "== uptime"; uptime
echo "== systemctl --failed"; systemctl --failed --no-pager --no-legend
echo "== df -h"; df -h
echo "== the stack's packages"
dpkg-query -W -f='${Package} ${Version}\n' 'postgresql-[0-9]*' patroni etcd-server pgbouncer haproxy keepalived pgbackrest 2>/dev/null
"#;

/// What went into a report.
#[derive(Debug, Default)]
pub struct Collected {
    /// Hosts whose facts, journals and files are in it.
    pub hosts: Vec<String>,
    /// Hosts that could not be reached, with why (written into the report as well).
    pub unreachable: Vec<(String, String)>,
    /// Configuration files copied (masked).
    pub files: usize,
    /// Private keys left out.
    pub keys_left_out: usize,
}

/// Collect every host's part of a report into `dir` (`dir/HOST/facts.txt`, `journal.log`,
/// `files/…`), the journals from `since` (journalctl's `--since`, e.g. `-1h`).
pub async fn collect(
    project: &Project,
    secrets: &Secrets,
    since: &str,
    dir: &Path,
) -> Result<Collected> {
    let masker = secrets.masker();
    let targets = crate::exec::targets(project, None);
    let (sessions, failed) = crate::exec::connect_all(&targets, &BTreeMap::new(), &masker).await;
    // The files pgstrap manages, rendered for each host's own release.
    let project = &project.with_releases(crate::exec::releases(&sessions).await);
    let desired = crate::render::desired_state(project, secrets, None)?;
    let mut collected = Collected::default();
    for (host, error) in &failed {
        let text = format!("cannot reach {host}: {error}\n");
        write(&dir.join(host).join("unreachable.txt"), &text)?;
        collected
            .unreachable
            .push((host.clone(), error.to_string()));
    }
    let mut journal = vec![
        "journalctl".to_owned(),
        "--no-pager".to_owned(),
        "-o".to_owned(),
        "short-iso-precise".to_owned(),
        format!("--since={since}"),
        format!("--lines={JOURNAL_LINES}"),
    ];
    journal.extend(UNITS.iter().map(|u| format!("--unit={u}")));
    let journal = RemoteCommand::new(&journal);
    let facts = RemoteCommand::script(FACTS_SCRIPT, &[] as &[&str], "facts of the host");
    let per_host = sessions.iter().map(|(host, session)| {
        let paths: Vec<String> = desired
            .hosts
            .iter()
            .filter(|h| h.host == *host)
            .flat_map(|h| {
                h.roles
                    .iter()
                    .flat_map(|r| r.files.iter().map(|f| f.path.clone()))
            })
            .collect();
        let (journal, facts) = (&journal, &facts);
        async move {
            let text = |output: std::result::Result<crate::connect::CommandOutput, _>| match output
            {
                Ok(output) => output.stdout_text(),
                Err(error) => format!("failed: {error}\n"),
            };
            let facts = text(session.output(facts).await);
            let journal = text(session.output(journal).await);
            let mut files = Vec::new();
            for path in paths {
                let output = session.output(&RemoteCommand::new(&["cat", &path])).await;
                files.push((path, output.map(|o| o.stdout_text())));
            }
            (host.clone(), facts, journal, files)
        }
    });
    for (host, facts, journal, files) in futures::future::join_all(per_host).await {
        let base = dir.join(&host);
        write(&base.join("facts.txt"), &masker.mask(&facts))?;
        write(&base.join("journal.log"), &masker.mask(&journal))?;
        for (path, content) in files {
            let target = base.join("files").join(path.trim_start_matches('/'));
            match content {
                Ok(text) if is_private_key(&path, &text) => {
                    collected.keys_left_out += 1;
                    write(
                        &target.with_extension("left-out.txt"),
                        "a private key: left out of the report\n",
                    )?;
                }
                Ok(text) => {
                    collected.files += 1;
                    write(&target, &masker.mask(&text))?;
                }
                Err(error) => write(
                    &target.with_extension("unreadable.txt"),
                    &format!("{error}\n"),
                )?,
            }
        }
        collected.hosts.push(host);
    }
    futures::future::join_all(sessions.into_values().map(crate::connect::Session::close)).await;
    Ok(collected)
}

/// A private key never goes into a report, whatever its name.
fn is_private_key(path: &str, text: &str) -> bool {
    path.ends_with(".key") || text.contains("PRIVATE KEY")
}

/// Write a file of the report (0600, as the secrets file is written; its directories 0700).
pub fn write(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| {
                Error::failure(format!("cannot create {}: {e}", parent.display()), None)
            })?;
    }
    crate::inventory::secrets::write_atomically(path, text.as_bytes(), 0o600)
        .map_err(|e| Error::failure(format!("cannot write {}: {e}", path.display()), None))
}

/// Pack `dir` into the gzipped tar `archive` (0600) with `tar`, then remove `dir`.
pub fn archive(dir: &Path, archive: &Path) -> Result<PathBuf> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| Error::failure(format!("{} has no name", dir.display()), None))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(archive)
        .map_err(|e| Error::failure(format!("cannot write {}: {e}", archive.display()), None))?;
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::failure(format!("cannot chmod {}: {e}", archive.display()), None))?;
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(archive)
        .arg("-C")
        .arg(parent)
        .arg(name)
        .status()
        .map_err(|e| Error::failure(format!("cannot run tar: {e}"), None))?;
    if !status.success() {
        return Err(Error::failure(
            format!("tar could not write {}: {status}", archive.display()),
            Some(format!("the collected files stay in {}", dir.display())),
        ));
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(archive.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_known_by_name_or_content() {
        assert!(is_private_key("/etc/patroni/tls/host.key", ""));
        assert!(is_private_key(
            "/etc/x.pem",
            "-----BEGIN PRIVATE KEY-----\nMII…"
        ));
        assert!(!is_private_key(
            "/etc/patroni/tls/host.crt",
            "-----BEGIN CERTIFICATE-----"
        ));
    }
}
