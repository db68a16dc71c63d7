//! The identity guard. A cluster's identity is the CA its hosts trust and the passwords their
//! configuration holds. Both live next to the inventory (`<inventory>.tls/`, the secrets file),
//! and an inventory copied without them would make up new ones: a new CA pushed to every host
//! splits etcd from its peers, new passwords no longer match the roles in PostgreSQL. So before
//! anything changes on any host (and before anything made up is written locally), each host's
//! copies of the files the roles mark `identity:` are read in one round trip and compared with
//! what the inventory would write. A host holding another identity refuses the whole command
//! (bad input, exit 2) with what is missing and where the cluster's material is.
//!
//! Files marked `identity: ca` must be byte-identical. In files marked `identity: secrets`, every
//! line that holds a secret is looked up on the host: the same line is fine, a line of the same
//! shape with another value is a changed password, no such line at all is some other change
//! (a new host, a renamed user) and left to the plan.

use std::collections::BTreeMap;

use crate::connect::Session;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::state::{DesiredState, Identity, ManagedFile};

/// One identity a host holds other than the inventory's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    pub path: String,
    /// What differs, without a secret: the CA's name and fingerprint, or the secrets' names.
    pub what: String,
}

/// What on one host would be replaced: `files` as rendered, `on_host` their content there
/// (absent: the host does not have the file).
pub fn judge(
    files: &[&ManagedFile],
    on_host: &BTreeMap<String, Vec<u8>>,
    secrets: &Secrets,
) -> Vec<Conflict> {
    let mut conflicts = Vec::new();
    for file in files {
        let Some(current) = on_host.get(&file.path) else {
            continue;
        };
        match file.identity {
            Some(Identity::Ca) if current.as_slice() != file.content.as_bytes() => {
                conflicts.push(Conflict {
                    path: file.path.clone(),
                    what: format!(
                        "trusts {}, not the inventory's {}",
                        describe_ca(&String::from_utf8_lossy(current)),
                        describe_ca(&file.content)
                    ),
                });
            }
            Some(Identity::Secrets) => {
                let changed =
                    changed_secrets(&file.content, &String::from_utf8_lossy(current), secrets);
                if !changed.is_empty() {
                    conflicts.push(Conflict {
                        path: file.path.clone(),
                        what: format!(
                            "holds another value of {} than the inventory's",
                            changed
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    conflicts
}

/// The names of the secrets whose line in `rendered` is on the host with another value.
fn changed_secrets(rendered: &str, on_host: &str, secrets: &Secrets) -> Vec<String> {
    let host_lines: Vec<&str> = on_host.lines().collect();
    let mut changed = Vec::new();
    for line in rendered.lines() {
        let names: Vec<&String> = secrets
            .values
            .iter()
            .filter(|(_, v)| !v.expose().is_empty() && line.contains(v.expose()))
            .map(|(n, _)| n)
            .collect();
        if names.is_empty() || host_lines.contains(&line) {
            continue;
        }
        let mut shape = line.to_owned();
        let mut values: Vec<&str> = names
            .iter()
            .filter_map(|n| secrets.get(n).map(|s| s.expose()))
            .collect();
        // Longer values first, so a value containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for value in values {
            shape = shape.replace(value, "\u{0}");
        }
        let parts: Vec<&str> = shape.split('\u{0}').collect();
        if host_lines.iter().any(|h| same_shape(h, &parts)) {
            for name in names {
                if !changed.contains(name) {
                    changed.push(name.clone());
                }
            }
        }
    }
    changed
}

/// Whether `line` is `parts` joined by any values (the literal text around the secrets).
fn same_shape(line: &str, parts: &[&str]) -> bool {
    crate::inventory::secrets::shape_values(line, parts).is_some()
}

/// `"pgstrap CA main" (sha256 1A:2B:…)`: a CA certificate's subject and the start of its
/// fingerprint (of the DER), or what the text is when it is not one.
pub fn describe_ca(pem: &str) -> String {
    let Some(der) = crate::tls::pki::pem_to_der(pem) else {
        return "a file that is not a PEM certificate".into();
    };
    let digest = crate::ops::sha256_hex(&der);
    let fingerprint: Vec<String> = digest
        .as_bytes()
        .chunks(2)
        .take(8)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let subject = x509_parser::parse_x509_certificate(&der)
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_else(|| "a CA".into());
    format!("\"{subject}\" (sha256 {}:…)", fingerprint.join(":"))
}

/// Read every host's identity files (one round trip per host, in parallel) and refuse when any
/// host holds another identity than `desired` would write. `store` names the local material.
/// `rotating_passwords`: only the CA is compared (a deliberate rotation brings the passwords).
pub async fn check(
    desired: &DesiredState,
    sessions: &BTreeMap<String, Session>,
    secrets: &Secrets,
    store: &Store,
    rotating_passwords: bool,
) -> Result<()> {
    let reads = desired.hosts.iter().filter_map(|host| {
        let session = sessions.get(&host.host)?;
        let files: Vec<&ManagedFile> = host
            .files()
            .filter(|f| match f.identity {
                Some(Identity::Ca) => true,
                Some(Identity::Secrets) => !rotating_passwords,
                None => false,
            })
            .collect();
        Some(async move {
            let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
            let read = crate::facts::read_files(session, &paths).await;
            (host.host.clone(), files, read)
        })
    });
    let mut by_conflict: BTreeMap<Conflict, Vec<String>> = BTreeMap::new();
    for (host, files, read) in futures::future::join_all(reads).await {
        let on_host = read.map_err(|e| {
            Error::failure(
                desired.masker.mask(&e.to_string()),
                Some("pgstrap reads the CA and the configuration files before changing anything; check the host".into()),
            )
        })?;
        for conflict in judge(&files, &on_host, secrets) {
            by_conflict.entry(conflict).or_default().push(host.clone());
        }
    }
    if by_conflict.is_empty() {
        return Ok(());
    }
    Err(refusal(&by_conflict, secrets, store))
}

/// Where the inventory keeps its identity material (for the refusal's hint).
pub struct Store {
    pub tls_dir: std::path::PathBuf,
    pub secrets_file: std::path::PathBuf,
}

impl Store {
    /// Where `project`'s inventory keeps its identity material: the CA directory and the secrets
    /// file.
    pub fn of(project: &crate::project::Project) -> Self {
        Self {
            tls_dir: crate::tls::pki::store_dir(&project.inventory.path),
            secrets_file: project.inventory.secrets_store(),
        }
    }
}

fn refusal(conflicts: &BTreeMap<Conflict, Vec<String>>, secrets: &Secrets, store: &Store) -> Error {
    let mut message = String::from(
        "the hosts run a cluster whose identity this inventory does not hold; nothing was changed",
    );
    for (conflict, hosts) in conflicts {
        message.push_str(&format!(
            "\n  {}: {} {}",
            hosts.join(", "),
            conflict.path,
            conflict.what
        ));
    }
    let ca = conflicts.keys().any(|c| c.what.starts_with("trusts"));
    let passwords = conflicts.keys().any(|c| !c.what.starts_with("trusts"));
    let mut hints = Vec::new();
    if ca {
        hints.push(if secrets.new_ca() {
            format!(
                "`{}` is missing (pgstrap would have made a new CA): copy that directory (ca.crt, ca.key, hosts/) from where the cluster was built, next to the inventory",
                store.tls_dir.display()
            )
        } else {
            format!(
                "`{}` holds another CA than the cluster runs: put the cluster's own CA there (ca.crt, ca.key)",
                store.tls_dir.display()
            )
        });
    }
    if passwords {
        let generated = secrets.generated_now();
        hints.push(if generated.is_empty() {
            format!(
                "the secrets (`{}`, or the `secrets:` sources) are not the cluster's: bring back the values the cluster runs",
                store.secrets_file.display()
            )
        } else {
            format!(
                "`{}` is missing or lacks {} (pgstrap would have generated new passwords): copy it from where the cluster was built, next to the inventory",
                store.secrets_file.display(),
                generated.join(", ")
            )
        });
    }
    hints.push(
        "changing a cluster's CA or passwords on purpose is a rotation, which `apply` never does on its own".into(),
    );
    Error::usage(message, Some(hints.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::secrets::Secret;

    fn secrets(values: &[(&str, &str)]) -> Secrets {
        Secrets {
            values: values
                .iter()
                .map(|(n, v)| ((*n).to_owned(), Secret::new((*v).to_owned())))
                .collect(),
            ..Default::default()
        }
    }

    fn file(path: &str, content: &str, identity: Identity) -> ManagedFile {
        ManagedFile {
            path: path.into(),
            template: String::new(),
            template_origin: String::new(),
            content: content.into(),
            sha256: crate::ops::sha256_hex(content.as_bytes()),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o600,
            sensitive: true,
            identity: Some(identity),
            notify: Vec::new(),
        }
    }

    #[test]
    fn a_password_line_with_another_value_is_a_conflict_and_names_only_the_secret() {
        let ours = secrets(&[
            ("superuser_password", "New-Value"),
            ("rest_api_password", "Api"),
        ]);
        let config = file(
            "/etc/patroni/config.yml",
            "restapi:\n  password: \"Api\"\nsuperuser:\n  password: \"New-Value\"\n",
            Identity::Secrets,
        );
        let host = BTreeMap::from([(
            config.path.clone(),
            b"restapi:\n  password: \"Api\"\nsuperuser:\n  password: \"Old-Value\"\n".to_vec(),
        )]);
        let conflicts = judge(&[&config], &host, &ours);
        assert_eq!(conflicts.len(), 1);
        assert!(conflicts[0].what.contains("`superuser_password`"));
        assert!(!conflicts[0].what.contains("Value"), "{:?}", conflicts[0]);
        // The same values: nothing; a host without the file (a new member): nothing.
        let same = BTreeMap::from([(config.path.clone(), config.content.clone().into_bytes())]);
        assert!(judge(&[&config], &same, &ours).is_empty());
        assert!(judge(&[&config], &BTreeMap::new(), &ours).is_empty());
    }

    #[test]
    fn a_line_of_another_shape_is_not_a_password_change() {
        // The user renamed PgBouncer's auth user: the line changes, the password does not.
        let ours = secrets(&[("pgbouncer_auth_password", "Pw")]);
        let userlist = file(
            "/etc/pgbouncer/userlist.txt",
            "\"bouncer\" \"Pw\"\n",
            Identity::Secrets,
        );
        let host = BTreeMap::from([(userlist.path.clone(), b"\"pgbouncer\" \"Pw\"\n".to_vec())]);
        assert!(judge(&[&userlist], &host, &ours).is_empty());
        let changed =
            BTreeMap::from([(userlist.path.clone(), b"\"bouncer\" \"Other\"\n".to_vec())]);
        assert_eq!(judge(&[&userlist], &changed, &ours).len(), 1);
    }

    #[test]
    fn another_ca_on_the_host_is_a_conflict_named_by_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = |name: &str| {
            crate::tls::pki::load(
                &tmp.path().join(name),
                &[],
                crate::tls::Policy {
                    days: 30,
                    renew_before_days: 1,
                },
                true,
            )
            .unwrap()
            .unwrap()
            .ca
        };
        let (ours, theirs) = (pki("ours.tls"), pki("theirs.tls"));
        let ca = file("/etc/etcd/tls/ca.crt", &ours, Identity::Ca);
        let host = BTreeMap::from([(ca.path.clone(), theirs.clone().into_bytes())]);
        let conflicts = judge(&[&ca], &host, &Secrets::default());
        assert_eq!(conflicts.len(), 1);
        assert!(
            conflicts[0].what.contains("\"pgstrap CA theirs\" (sha256 "),
            "{}",
            conflicts[0].what
        );
        assert!(conflicts[0].what.contains("\"pgstrap CA ours\""));
        let same = BTreeMap::from([(ca.path.clone(), ours.into_bytes())]);
        assert!(judge(&[&ca], &same, &Secrets::default()).is_empty());
    }

    #[test]
    fn shapes_match_only_around_the_secret() {
        assert!(same_shape("  password: \"x\"", &["  password: \"", "\""]));
        assert!(same_shape("  password: \"\"", &["  password: \"", "\""]));
        assert!(!same_shape("  user: \"x\"", &["  password: \"", "\""]));
        assert!(same_shape("a 1 b 2 c", &["a ", " b ", " c"]));
        assert!(!same_shape("a 1 c", &["a ", " b ", " c"]));
    }
}
