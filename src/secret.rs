//! Secret values and masking, a leaf of the model: a value type that never prints, the masker that
//! replaces every secret value with `***` in anything shown to the user, and the local file
//! writes that hold secrets (atomic, with their mode, never through a link). Where each secret
//! comes from and the store next to the inventory are `inventory::secrets`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// A secret value. `Display` and `Debug` print `***`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// The value, for the few places that must hold it (rendered files, API calls).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A local file to write: its path, content (secret), mode and what it holds.
#[derive(Clone)]
pub struct PendingWrite {
    pub path: PathBuf,
    pub content: Secret,
    pub mode: u32,
    pub what: Generated,
}

/// What a pending local write makes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generated {
    /// Generated secrets (their names) in the secrets file.
    Secrets(Vec<String>),
    /// A new certificate authority.
    Ca,
    /// A certificate issued for this name.
    Certificate(String),
}

/// Write pending local files (parent directories created 0700), each atomically with its mode.
pub fn persist(writes: &[PendingWrite]) -> Result<(), SecretError> {
    use std::os::unix::fs::DirBuilderExt;
    for write in writes {
        let failed = |e: std::io::Error| {
            SecretError {
            name: String::new(),
            message: format!("cannot write `{}`: {e}", write.path.display()),
            hint: "pgstrap keeps generated secrets and the CA next to the inventory; make that directory writable".into(),
        }
        };
        if let Some(parent) = write.path.parent() {
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
            {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(failed(e)),
            }
        }
        write_atomically(&write.path, write.content.expose().as_bytes(), write.mode)
            .map_err(failed)?;
    }
    Ok(())
}

/// Replaces every secret value with `***`. Longer values are replaced first so that a secret
/// that contains another is masked whole.
#[derive(Clone, Default)]
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    pub fn new(mut values: Vec<String>) -> Self {
        values.retain(|v| !v.is_empty());
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }

    pub fn contains_secret(&self, text: &str) -> bool {
        self.values.iter().any(|v| text.contains(v.as_str()))
    }

    /// `mask`, with `replacement` in place of `***`.
    pub fn mask_as(&self, text: &str, replacement: &str) -> String {
        let mut out = text.to_owned();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), replacement);
            }
        }
        out
    }

    /// The shape of a line holding secrets: the literal text around them (`password: "` and
    /// `"`), for [`shape_values`].
    pub fn shape(&self, line: &str) -> Vec<String> {
        self.mask_as(line, "\u{0}")
            .split('\u{0}')
            .map(str::to_owned)
            .collect()
    }

    /// Whether a secret spans lines (a private key): a line at a time cannot mask it.
    pub fn has_multiline_secret_in(&self, text: &str) -> bool {
        self.values
            .iter()
            .any(|v| v.contains('\n') && text.contains(v.as_str()))
    }

    /// This masker with more values (old values of a secret, seen on a host).
    pub fn with(&self, more: impl IntoIterator<Item = String>) -> Masker {
        Masker::new(self.values.iter().cloned().chain(more).collect())
    }
}

/// The values `line` holds where `parts` (a [`Masker::shape`]) has its secrets, when `line` has
/// that shape: the same literal text around them, any values in between.
pub fn shape_values(line: &str, parts: &[impl AsRef<str>]) -> Option<Vec<String>> {
    let (first, last) = (parts.first()?.as_ref(), parts.last()?.as_ref());
    if parts.len() < 2 {
        return None;
    }
    let mut rest = line.strip_prefix(first)?;
    let mut values = Vec::new();
    for part in &parts[1..parts.len() - 1] {
        let at = rest.find(part.as_ref())?;
        values.push(rest[..at].to_owned());
        rest = &rest[at + part.as_ref().len()..];
    }
    let value = rest.strip_suffix(last)?;
    values.push(value.to_owned());
    Some(values)
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masker({} values)", self.values.len())
    }
}

/// Why a secret could not be had.
#[derive(Debug)]
pub struct SecretError {
    pub name: String,
    pub message: String,
    pub hint: String,
}

/// Write `path` through a temporary file created with its final `mode` (never briefly readable
/// by others, never through a symlink), synced, then renamed over the old file.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A random alphanumeric password from the OS random source.
pub fn generate_password(length: usize) -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..length)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Turn a YAML error into a diagnostic at its place, with hints for the common mistakes.
/// Read a file the user points pgstrap at (the inventory, a template override, the secrets
/// file, a secret's file, the CA): only a regular file, so a FIFO or a device there is refused
/// instead of hanging the command.
pub fn read_user_file(path: &Path) -> std::io::Result<String> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a directory is never read)",
        ));
    }
    std::fs::read_to_string(path)
}
