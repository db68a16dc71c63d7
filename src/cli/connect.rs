//! A person's way in, with the inventory's settings: `pgstrap ssh HOST` (the system ssh, host
//! keys checked strictly) and `pgstrap psql` (the cluster's VIP, TLS verified against the
//! inventory's CA, the superuser's password in a private passfile, never in argv or the
//! environment). Both hand the terminal to the program and return its exit code.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use crate::cli::InventoryArgs;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct SshArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The inventory host.
    pub host: String,
    /// A command to run there instead of a shell (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PsqlArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The cluster (needed when the inventory has several).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Through the read port (a replica) instead of the write port (the primary).
    #[arg(long)]
    pub replica: bool,
    /// The database.
    #[arg(long, short = 'd', default_value = "postgres")]
    pub dbname: String,
    /// psql's own arguments (after `--`), e.g. `-- -c 'SELECT 1'`.
    #[arg(last = true)]
    pub psql: Vec<String>,
}

/// The exit code of a program run in the foreground (a signal: 128 + its number, as a shell says).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn spawn_failed(program: &str, e: &std::io::Error) -> Error {
    Error::failure(
        format!("cannot run `{program}`: {e}"),
        Some(format!(
            "install it (Debian: `apt-get install {}`)",
            match program {
                "psql" => "postgresql-client",
                _ => "openssh-client",
            }
        )),
    )
}

pub fn ssh(args: SshArgs) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let inventory = &project.inventory;
    let host = inventory.hosts.get(&args.host).ok_or_else(|| {
        Error::usage(
            format!("no host `{}` in the inventory", args.host),
            Some(format!(
                "its hosts: {}",
                inventory
                    .hosts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        )
    })?;
    let target = crate::exec::target(inventory, host);
    let ssh_args = crate::connect::ssh_args(&target, &args.command)
        .map_err(|e| Error::failure(format!("ssh settings: {e}"), None))?;
    let status = std::process::Command::new("ssh")
        .args(&ssh_args)
        .status()
        .map_err(|e| spawn_failed("ssh", &e))?;
    Ok(exit_code(status))
}

pub fn psql(args: PsqlArgs) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let secrets = project.secrets(false)?;
    let cluster = crate::stack::primary_cluster(&project, args.cluster.as_deref())?;
    let vip = cluster.vip.ok_or_else(|| {
        Error::usage(
            format!("cluster `{}` has no VIP", cluster.name),
            Some("connect to a DB host's PgBouncer (port 6432) instead".into()),
        )
    })?;
    let port = project.port(
        cluster,
        if args.replica {
            crate::project::Port::HaproxyRead
        } else {
            crate::project::Port::HaproxyWrite
        },
    );
    let password = secrets.get("superuser_password").ok_or_else(|| {
        Error::usage(
            "no superuser password in the secrets",
            Some(format!(
                "bring the cluster's secrets file ({})",
                project.inventory.secrets_store().display()
            )),
        )
    })?;
    let mut conninfo = format!(
        "host={} port={port} user=postgres dbname={}",
        vip.addr(),
        conninfo_value(&args.dbname)
    );
    if project.tls_enabled() {
        let ca = crate::tls::pki::store_dir(&project.inventory.path).join("ca.crt");
        conninfo.push_str(&format!(
            " sslmode=verify-full sslrootcert={}",
            conninfo_value(&ca.display().to_string())
        ));
    }
    // The password in a passfile only this user can read, removed when psql ends.
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let passfile = dir.join(format!("pgstrap-psql-{}.pgpass", std::process::id()));
    let escaped = password.expose().replace('\\', "\\\\").replace(':', "\\:");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&passfile)
        .and_then(|mut f| writeln!(f, "*:*:*:postgres:{escaped}"));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&passfile);
        return Err(Error::failure(
            format!("cannot write a passfile in {}: {e}", dir.display()),
            None,
        ));
    }
    let status = std::process::Command::new("psql")
        .arg(&conninfo)
        .args(&args.psql)
        .env("PGPASSFILE", &passfile)
        .env_remove("PGPASSWORD")
        .status();
    let _ = std::fs::remove_file(&passfile);
    Ok(exit_code(status.map_err(|e| spawn_failed("psql", &e))?))
}

/// A conninfo value, quoted when it needs it (`'…'`, with `\` and `'` escaped).
fn conninfo_value(text: &str) -> String {
    if !text.is_empty() && !text.contains([' ', '\'', '\\']) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_values_are_quoted_when_they_need_it() {
        assert_eq!(conninfo_value("app"), "app");
        assert_eq!(conninfo_value("my db"), "'my db'");
        assert_eq!(conninfo_value("it's"), "'it\\'s'");
        assert_eq!(conninfo_value(""), "''");
    }
}
