//! Helpers for every test binary: the one place the real binary is spawned from, the Tokio
//! runtime of async tests, and the text of a secrets file with chosen values.
#![allow(dead_code)]

use std::process::Command;

/// The real `pgstrap` binary, ready for arguments; every test spawns it from here.
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgstrap"))
}

/// A multi-thread Tokio runtime with every driver (I/O, time) enabled.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The text of a secrets file setting every known secret: one `name: "value"` line per entry of
/// [`pgstrap::inventory::secrets::KNOWN`], in its order, the value given by `value(name, length)`
/// (`length` is the secret's generated length). Values are written between double quotes as they
/// are, so they must need no escaping.
pub fn secrets_yaml(value: impl Fn(&str, usize) -> String) -> String {
    let mut text = String::new();
    for &(name, _, length) in pgstrap::inventory::secrets::KNOWN {
        text.push_str(&format!("{name}: \"{}\"\n", value(name, length)));
    }
    text
}

/// Write a secrets file as pgstrap does: mode 0600 (pgstrap refuses one other users can read).
pub fn write_secrets(path: impl AsRef<std::path::Path>, text: impl AsRef<[u8]>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path.as_ref());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path.as_ref())
        .expect("create the secrets file");
    file.write_all(text.as_ref())
        .expect("write the secrets file");
}
