//! Secrets: where each comes from (environment, file, or generated once and kept in a 0600 file
//! next to the inventory), a value type that never prints, and the masker that replaces every
//! secret value with `***` in anything shown to the user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::secret::{
    generate_password, persist, shape_values, write_atomically, Generated, Masker, PendingWrite,
    Secret, SecretError,
};

/// The secrets pgstrap knows, what each is for, and the length of a generated value.
pub const KNOWN: &[(&str, &str, usize)] = &[
    ("superuser_password", "PostgreSQL superuser (postgres)", 32),
    ("replication_password", "PostgreSQL replication user", 32),
    ("rewind_password", "PostgreSQL pg_rewind user", 32),
    (
        "pgbouncer_auth_password",
        "PgBouncer auth_user that looks up passwords",
        32,
    ),
    (
        "rest_api_password",
        "Patroni REST API (unsafe methods) and patronictl",
        32,
    ),
    // VRRP simple-password authentication uses at most 8 characters.
    ("keepalived_password", "keepalived VRRP authentication", 8),
    // Encrypts a cluster's backup repository; only its repository host holds it.
    (
        "backup_cipher_passphrase",
        "pgBackRest repository encryption (never rotated)",
        64,
    ),
];

/// Secrets `pgstrap rotate` never replaces: the repository's encryption passphrase (every backup
/// and archived segment written so far is encrypted with it; pgBackRest cannot re-key a
/// repository).
pub const NOT_ROTATED: &[&str] = &["backup_cipher_passphrase"];

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Generated,
}

/// Every secret's value, by name.
#[derive(Clone, Default)]
pub struct Secrets {
    pub values: BTreeMap<String, Secret>,
    /// The inventory's CA and certificates, when its clusters use TLS (keys are secrets too).
    pub tls: Option<std::sync::Arc<crate::tls::Pki>>,
    /// Local files this load made up and has not written yet: generated secrets, a new CA,
    /// certificates issued. Written by [`Secrets::persist`] only once the hosts were checked
    /// (identity material is never made for a cluster that has its own).
    pub pending: Vec<PendingWrite>,
}

impl Secrets {
    /// Write what this load made up (parent directories created 0700). Idempotent.
    pub fn persist(&self) -> Result<(), SecretError> {
        persist(&self.pending)
    }

    /// The names of the generated secrets a load made up (not yet in the secrets file).
    pub fn generated_now(&self) -> Vec<String> {
        self.pending
            .iter()
            .flat_map(|w| match &w.what {
                Generated::Secrets(names) => names.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Whether this load made up a new CA.
    pub fn new_ca(&self) -> bool {
        self.pending.iter().any(|w| w.what == Generated::Ca)
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }

    pub fn masker(&self) -> Masker {
        let keys = self
            .tls
            .iter()
            .flat_map(|pki| pki.issued.values())
            .map(|issued| issued.key.expose().to_owned());
        Masker::new(
            self.values
                .values()
                .map(|s| s.expose().to_owned())
                .chain(keys)
                .collect(),
        )
    }
}

/// The file generated secrets are kept in: `<inventory stem>.secrets.yaml` next to it.
pub fn store_path(inventory: &Path) -> PathBuf {
    let stem = inventory
        .file_stem()
        .map_or_else(|| "inventory".into(), |s| s.to_string_lossy().into_owned());
    inventory.with_file_name(format!("{stem}.secrets.yaml"))
}

/// Load every known secret from its source. Generated secrets are read from the store file, and
/// when `generate` is true the missing ones are created, and the store to write (mode 0600) is
/// left pending ([`Secrets::persist`]); when it is false (e.g. `check`), a missing generated
/// secret is not an error.
pub fn load(
    sources: &BTreeMap<String, SecretSource>,
    store: &Path,
    generate: bool,
) -> Result<Secrets, SecretError> {
    let mut stored = read_store(store)?;
    let mut secrets = Secrets::default();
    let mut made_up = Vec::new();
    for &(name, _, length) in KNOWN {
        let source = sources.get(name).unwrap_or(&SecretSource::Generated);
        let value = match source {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => {
                    check_value(name, &v, &format!("environment variable `{var}`"))?;
                    v
                }
                _ => {
                    return Err(SecretError {
                        name: name.into(),
                        message: format!(
                            "secret `{name}`: environment variable `{var}` is not set"
                        ),
                        hint: format!(
                            "export {var}=… before running pgstrap, or remove `env:` to have it generated"
                        ),
                    })
                }
            },
            SecretSource::File(path) => match super::read_user_file(path) {
                Ok(v) if !v.trim_end_matches('\n').is_empty() => {
                    let v = v.trim_end_matches('\n').to_owned();
                    check_value(name, &v, &format!("file `{}`", path.display()))?;
                    v
                }
                Ok(_) => {
                    return Err(SecretError {
                        name: name.into(),
                        message: format!("secret `{name}`: file `{}` is empty", path.display()),
                        hint: "put the value in the file, or remove `file:` to have it generated"
                            .into(),
                    })
                }
                Err(e) => {
                    return Err(SecretError {
                        name: name.into(),
                        message: format!(
                            "secret `{name}`: cannot read `{}`: {e}",
                            path.display()
                        ),
                        hint: "check the path (relative paths start at the inventory's directory)"
                            .into(),
                    })
                }
            },
            SecretSource::Generated => match stored.get(name) {
                Some(v) => {
                    check_value(name, v, &format!("secrets file `{}`", store.display()))?;
                    v.clone()
                }
                None if generate => {
                    let v = generate_password(length);
                    stored.insert(name.to_owned(), v.clone());
                    made_up.push(name.to_owned());
                    v
                }
                None => continue,
            },
        };
        secrets.values.insert(name.to_owned(), Secret::new(value));
    }
    if !made_up.is_empty() {
        let text = store_text(&stored).map_err(|e| SecretError {
            name: String::new(),
            message: format!("cannot write the secrets file `{}`: {e}", store.display()),
            hint: "report this: the generated secrets do not serialize".into(),
        })?;
        secrets.pending.push(PendingWrite {
            path: store.to_owned(),
            content: Secret::new(text),
            mode: 0o600,
            what: Generated::Secrets(made_up),
        });
    }
    Ok(secrets)
}

/// For a deliberate rotation: new values for the generated secrets `names` in the store, written
/// at once (0600). Every other stored value stays. A secret from the environment or a file is
/// refused: its new value is set at its source.
pub fn regenerate(
    sources: &BTreeMap<String, SecretSource>,
    store: &Path,
    names: &[String],
) -> Result<(), SecretError> {
    let mut stored = read_store(store)?;
    for name in names {
        let Some(&(_, _, length)) = KNOWN.iter().find(|(n, _, _)| n == name) else {
            return Err(SecretError {
                name: name.clone(),
                message: format!("no secret `{name}`"),
                hint: format!(
                    "secrets are: {}",
                    KNOWN
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let at = match sources.get(name.as_str()) {
            None | Some(SecretSource::Generated) => None,
            Some(SecretSource::Env(var)) => Some(format!("environment variable `{var}`")),
            Some(SecretSource::File(path)) => Some(format!("file `{}`", path.display())),
        };
        if let Some(at) = at {
            return Err(SecretError {
                name: name.clone(),
                message: format!("secret `{name}` comes from the {at}, not the secrets file"),
                hint: "set its new value there, then rotate with --keep-values (the cluster takes the values the sources hold)".into(),
            });
        }
        stored.insert(name.clone(), generate_password(length));
    }
    let text = store_text(&stored).map_err(|e| SecretError {
        name: String::new(),
        message: format!("cannot write the secrets file `{}`: {e}", store.display()),
        hint: "report this: the generated secrets do not serialize".into(),
    })?;
    write_atomically(store, text.as_bytes(), 0o600).map_err(|e| SecretError {
        name: String::new(),
        message: format!("cannot write the secrets file `{}`: {e}", store.display()),
        hint: "make the inventory's directory writable".into(),
    })
}

fn read_store(store: &Path) -> Result<BTreeMap<String, String>, SecretError> {
    // Like ssh with a private key: a secrets file others can read is refused, not used.
    if let Ok(metadata) = std::fs::metadata(store) {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(SecretError {
                name: String::new(),
                message: format!(
                    "the secrets file `{}` is open to every user of this machine (mode {mode:04o})",
                    store.display()
                ),
                hint: format!(
                    "chmod 600 {} (pgstrap writes it 0600); then consider the secrets in it exposed and rotate them (`pgstrap rotate passwords`)",
                    store.display()
                ),
            });
        }
    }
    match super::read_user_file(store) {
        Ok(text) => serde_saphyr::from_str(&text).map_err(|e| SecretError {
            name: String::new(),
            // Never the parser's own message: it quotes the text around the error, which is
            // other secrets. The place only: the line, and the secret's name when the line has one.
            message: format!(
                "cannot parse the secrets file `{}`: {} is not valid (the file's content is not shown: it holds secrets)",
                store.display(),
                place_in_store(&text, e.location().map(|l| l.line()))
            ),
            hint: "the file is written by pgstrap: a YAML mapping of secret name to quoted value; fix that line, or restore the file from a backup (a secret removed from it is generated anew, and a running cluster does not know the new value)".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(SecretError {
            name: String::new(),
            message: format!("cannot read the secrets file `{}`: {e}", store.display()),
            hint: "check its owner and mode (pgstrap writes it 0600)".into(),
        }),
    }
}

/// "line 3 (secret `superuser_password`)": where in the secrets file, by line and, when that
/// line starts with a known secret's name, the name. Nothing else from the line.
fn place_in_store(text: &str, line: Option<u64>) -> String {
    let Some(line) = line.filter(|l| *l > 0) else {
        return "its content".into();
    };
    let name = text
        .lines()
        .nth(line as usize - 1)
        .and_then(|l| l.trim_start().split_once(':'))
        .map(|(key, _)| key.trim().trim_matches('"'))
        .and_then(|key| KNOWN.iter().find(|(n, _, _)| *n == key))
        .map(|(n, _, _)| *n);
    match name {
        Some(name) => format!("line {line} (secret `{name}`)"),
        None => format!("line {line}"),
    }
}

/// Why `value` cannot be the value of secret `name` (which comes from `source`), without the
/// value. Secrets are written into configuration files: no newline or control character may
/// split a line, and keepalived's `auth_pass` is a bare word.
fn check_value(name: &str, value: &str, source: &str) -> Result<(), SecretError> {
    let problem = if value.is_empty() {
        Some("is empty")
    } else if value.chars().any(crate::text::breaks_line) {
        Some("contains a newline, another control character or U+2028/U+2029 (line breaks to YAML)")
    } else if name == "keepalived_password"
        && !value
            .chars()
            .all(|c| c.is_ascii_graphic() && !"\"'#!{}\\".contains(c))
    {
        Some("may hold only printable ASCII without spaces, quotes, `#`, `!`, `{`, `}` or `\\` (keepalived.conf writes it as a bare word)")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(SecretError {
            name: name.to_owned(),
            message: format!("secret `{name}` ({source}) {problem}"),
            hint: "the configuration files that hold it would break; choose another value (the value is not shown)".into(),
        }),
    }
}

/// The store's text: the mapping serialized by the YAML library (any value round-trips, quotes
/// and all) and read back before it may replace the old file (written atomically, 0600 from the
/// start, by [`Secrets::persist`]).
fn store_text(values: &BTreeMap<String, String>) -> std::io::Result<String> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let body = serde_saphyr::to_string(values)
        .map_err(|e| invalid(format!("cannot serialize the secrets: {e}")))?;
    let reread: BTreeMap<String, String> = serde_saphyr::from_str(&body)
        .map_err(|_| invalid("the serialized secrets do not read back".into()))?;
    if &reread != values {
        return Err(invalid(
            "the serialized secrets do not read back the same".into(),
        ));
    }
    Ok(format!(
        "# Secrets generated by pgstrap for the inventory next to this file. Keep it private (0600).\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secrets file as pgstrap writes it (0600: one other users can read is refused).
    fn write_private(path: &Path, text: impl AsRef<[u8]>) {
        write_atomically(path, text.as_ref(), 0o600).unwrap();
    }

    #[test]
    fn a_secrets_file_other_users_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("inv.secrets.yaml");
        std::fs::write(&store, "superuser_password: \"Open-Value\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load(&BTreeMap::new(), &store, false)
            .err()
            .expect("refused");
        assert!(error.message.contains("mode 0644"), "{}", error.message);
        assert!(error.hint.starts_with("chmod 600"), "{}", error.hint);
        assert!(!format!("{} {}", error.message, error.hint).contains("Open-Value"));
    }

    fn write_store(store: &Path, values: &BTreeMap<String, String>) -> std::io::Result<()> {
        write_atomically(store, store_text(values)?.as_bytes(), 0o600)
    }

    #[test]
    fn secret_prints_stars() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[test]
    fn masker_masks_longest_first() {
        let m = Masker::new(vec!["abc".into(), "abcdef".into()]);
        assert_eq!(m.mask("x abcdef y abc"), "x *** y ***");
    }

    #[test]
    fn generated_secrets_are_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("inv.secrets.yaml");
        let first = load(&BTreeMap::new(), &store, true).unwrap();
        // Nothing is written until the caller persists it.
        assert!(!store.exists());
        assert_eq!(first.generated_now().len(), KNOWN.len());
        first.persist().unwrap();
        let second = load(&BTreeMap::new(), &store, true).unwrap();
        assert!(second.pending.is_empty());
        for (name, _, _) in KNOWN {
            assert_eq!(
                first.get(name).unwrap().expose(),
                second.get(name).unwrap().expose()
            );
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(first.get("keepalived_password").unwrap().expose().len(), 8);
    }

    #[test]
    fn a_broken_secrets_file_is_reported_by_line_and_name_only() {
        // Regression (issue 11): the parser's message quoted the neighbouring secrets.
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("inv.secrets.yaml");
        write_private(
            &store,
            "superuser_password: \"Neighbour-One\"\nreplication_password: \"Broken-Value\n  rewind_password: [Neighbour-Two\nkeepalived_password: \"Neighbour-3\"\n",
        );
        let error = load(&BTreeMap::new(), &store, false)
            .err()
            .expect("refused");
        let text = format!("{} {}", error.message, error.hint);
        for value in ["Neighbour", "Broken-Value", "Neighbour-Two"] {
            assert!(!text.contains(value), "{text}");
        }
        assert!(text.contains("line "), "{text}");
    }

    #[test]
    fn place_in_store_names_a_known_secret_and_nothing_else() {
        let text = "superuser_password: \"x\nP0ison: y\n";
        assert_eq!(
            place_in_store(text, Some(1)),
            "line 1 (secret `superuser_password`)"
        );
        assert_eq!(place_in_store(text, Some(2)), "line 2");
        assert_eq!(place_in_store(text, None), "its content");
    }

    #[test]
    fn stored_values_with_quotes_survive_the_next_rewrite() {
        // Regression (issue 11): values were written between quotes without escaping.
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("inv.secrets.yaml");
        let mut values = BTreeMap::new();
        values.insert(
            "superuser_password".to_owned(),
            "a\"b'c: #d {e} \\f".to_owned(),
        );
        write_store(&store, &values).unwrap();
        // The next run generates the missing ones and rewrites the file.
        let secrets = load(&BTreeMap::new(), &store, true).unwrap();
        secrets.persist().unwrap();
        assert_eq!(
            secrets.get("superuser_password").unwrap().expose(),
            "a\"b'c: #d {e} \\f"
        );
        assert_eq!(read_store(&store).unwrap().len(), KNOWN.len());
    }

    #[test]
    fn an_empty_or_line_breaking_stored_secret_is_refused() {
        // Issue 20: `keepalived_password: ""` gave `auth_pass ` with no value; U+2028 became a
        // line break in Patroni's config.yml.
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("inv.secrets.yaml");
        for (text, problem) in [
            ("keepalived_password: \"\"\n", "is empty"),
            ("superuser_password: \"ab\u{2028}  cd\"\n", "U+2028"),
            ("superuser_password: \"a\u{2029}b\"\n", "U+2028"),
        ] {
            write_private(&store, text);
            let error = load(&BTreeMap::new(), &store, true).err().expect("refused");
            assert!(error.message.contains(problem), "{}", error.message);
            assert!(!error.message.contains("ab") || problem == "is empty");
        }
    }

    #[test]
    fn secrets_with_control_characters_are_refused_without_showing_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "P0ison\nsecond line\n").unwrap();
        let sources = BTreeMap::from([("superuser_password".to_owned(), SecretSource::File(file))]);
        let error = load(&sources, &dir.path().join("s.yaml"), false)
            .err()
            .expect("refused");
        assert!(
            error.message.contains("superuser_password"),
            "{}",
            error.message
        );
        assert!(!error.message.contains("P0ison") && !error.hint.contains("P0ison"));
    }

    proptest::proptest! {
        #[test]
        fn any_secret_value_round_trips_through_the_secrets_file(value in "\\PC*|.*[\"'\\\\#:{}\\[\\]\n\t ].*") {
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("inv.secrets.yaml");
            let values = BTreeMap::from([
                ("superuser_password".to_owned(), value.clone()),
                ("replication_password".to_owned(), format!(" {value}\n")),
            ]);
            write_store(&store, &values).unwrap();
            proptest::prop_assert_eq!(read_store(&store).map_err(|e| e.message).unwrap(), values);
        }
    }
}
