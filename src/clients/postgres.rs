//! PostgreSQL work done over SSH as the `postgres` user (peer authentication, so no password is
//! handed out): SQL on stdin through psql, the Debian default cluster, and the PgBouncer lookup
//! function and role. Passwords travel only on stdin, never in argv.

use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::inventory::secrets::Secret;

/// Run SQL (on stdin) in `database` as postgres; returns unaligned, tuples-only output.
pub async fn psql(session: &Session, database: &str, sql: &str, what: &str) -> Result<String> {
    psql_at(session, database, None, sql, what).await
}

/// [`psql`] to the server on `port` (its Unix socket).
pub async fn psql_port(
    session: &Session,
    database: &str,
    port: &str,
    sql: &str,
    what: &str,
) -> Result<String> {
    psql_at(session, database, Some(port), sql, what).await
}

async fn psql_at(
    session: &Session,
    database: &str,
    port: Option<&str>,
    sql: &str,
    what: &str,
) -> Result<String> {
    let mut argv = vec![
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        database,
        "-f",
        "-",
    ];
    if let Some(port) = port {
        argv.extend(["-p", port]);
    }
    let command = RemoteCommand::new(&argv).with_stdin(sql.as_bytes().to_vec());
    let command = RemoteCommand {
        display: format!("psql -d {database}  # {what}"),
        ..command
    };
    let output = session
        .run(&command)
        .await
        .map_err(|e| Error::failure(e.to_string(), None))?;
    Ok(output.stdout_text())
}

/// The state of Debian's default `15/main` cluster on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultCluster {
    /// Not there (the usual case: pgstrap tells Debian not to create it).
    Absent,
    /// There, with nothing but the three template databases and no user relation: safe to drop.
    Untouched,
    /// There and holding data (or unreadable): never dropped.
    HasData(String),
}

/// Look at `/etc/postgresql/VERSION/main` (Debian's own cluster, which Patroni never creates).
/// "Untouched" is judged from the files: exactly the three initial databases in `base/` and no
/// relation file numbered ≥ 16384 (the first OID for user objects) in them.
pub async fn default_cluster(session: &Session, version: &str) -> Result<DefaultCluster> {
    let script = r#"set -u
v="$1"
[ -f "/etc/postgresql/$v/main/postgresql.conf" ] || { echo absent; exit 0; }
d=$(sed -n "s/^data_directory *= *'\(.*\)'.*/\1/p" "/etc/postgresql/$v/main/postgresql.conf")
[ -n "$d" ] || d="/var/lib/postgresql/$v/main"
[ -d "$d/base" ] || { echo "data: no base directory in $d"; exit 0; }
n=$(ls "$d/base" | wc -l)
[ "$n" -eq 3 ] || { echo "data: $n databases in $d"; exit 0; }
u=$(find "$d/base" -type f -regex '.*/[0-9]+$' | awk -F/ '$NF >= 16384' | wc -l)
[ "$u" -eq 0 ] || { echo "data: $u user relation files in $d"; exit 0; }
echo untouched
"#;
    let output = session
        .run(&RemoteCommand::script(
            script,
            &[version],
            format!("inspect Debian's {version}/main cluster"),
        ))
        .await
        .map_err(|e| Error::failure(e.to_string(), None))?;
    let text = output.stdout_text();
    Ok(parse_default_cluster(text.trim()))
}

fn parse_default_cluster(text: &str) -> DefaultCluster {
    match text {
        "absent" => DefaultCluster::Absent,
        "untouched" => DefaultCluster::Untouched,
        other => DefaultCluster::HasData(other.trim_start_matches("data: ").to_owned()),
    }
}

/// Drop Debian's untouched default cluster so Patroni owns PostgreSQL on this host.
pub async fn drop_default_cluster(session: &Session, version: &str) -> Result<()> {
    session
        .run(&RemoteCommand::new(&[
            "pg_dropcluster",
            "--stop",
            version,
            "main",
        ]))
        .await
        .map_err(|e| Error::failure(e.to_string(), None))?;
    Ok(())
}

/// The SQL that creates PgBouncer's lookup role and SECURITY DEFINER function (idempotent).
/// The password is set only when `set_password` (it did not match).
fn auth_sql(user: &str, password: Option<&Secret>) -> String {
    let quoted_user = quote_ident(user);
    let mut sql = format!(
        "DO $$ BEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {literal}) THEN\n    CREATE ROLE {quoted_user} LOGIN;\n  END IF;\nEND $$;\n",
        literal = quote_literal(user)
    );
    if let Some(password) = password {
        sql.push_str(&format!(
            "SET password_encryption = 'scram-sha-256';\nALTER ROLE {quoted_user} WITH LOGIN PASSWORD {};\n",
            quote_literal(password.expose())
        ));
    }
    sql.push_str(&format!(
        "CREATE SCHEMA IF NOT EXISTS pgbouncer;\n\
         CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text)\n\
         RETURNS TABLE(usename name, passwd text) LANGUAGE sql SECURITY DEFINER\n\
         SET search_path = pg_catalog AS\n\
         $$ SELECT usename, passwd FROM pg_shadow WHERE usename = p_usename $$;\n\
         REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;\n\
         GRANT USAGE ON SCHEMA pgbouncer TO {quoted_user};\n\
         GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO {quoted_user};\n"
    ));
    sql
}

/// Make sure PgBouncer's auth role and lookup function exist on the primary, in `postgres` and
/// `template1` (so new databases get it). Returns whether anything changed.
pub async fn ensure_pgbouncer_auth(
    session: &Session,
    user: &str,
    password: &Secret,
) -> Result<bool> {
    let probe = format!(
        "SELECT coalesce((SELECT rolpassword FROM pg_authid WHERE rolname = {u}), '') || '|' ||\n\
         (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace\n\
          WHERE n.nspname = 'pgbouncer' AND p.proname = 'get_auth' AND p.prosecdef\n\
          AND has_function_privilege({u}, p.oid, 'EXECUTE'));\n",
        u = quote_literal(user)
    );
    let mut changed = false;
    let mut password_ok = None;
    for database in ["postgres", "template1"] {
        let seen = psql(session, database, &probe, "check pgbouncer auth")
            .await
            .unwrap_or_default();
        let (verifier, functions) = seen.trim().split_once('|').unwrap_or(("", "0"));
        let matches =
            *password_ok.get_or_insert_with(|| super::scram::matches(verifier, password.expose()));
        let set_password = !matches && database == "postgres";
        if set_password || functions.trim() != "1" {
            psql(
                session,
                database,
                &auth_sql(user, set_password.then_some(password)),
                "create pgbouncer auth role and get_auth()",
            )
            .await?;
            changed = true;
        }
    }
    Ok(changed)
}

pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub(crate) fn quote_ident(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Move the data directory `data_dir` aside to `aside` (kept, never deleted), stopping a
/// PostgreSQL still running there first, and leave an empty one in its place. Returns whether
/// there was something to move.
pub(crate) async fn move_aside(
    session: &Session,
    data_dir: &str,
    aside: &str,
    version: &str,
) -> Result<bool> {
    let output = session
        .run(&RemoteCommand::script(
            MOVE_ASIDE,
            &[data_dir, aside, version],
            "move a data directory aside",
        ))
        .await
        .map_err(|e| Error::failure(e.to_string(), None))?;
    Ok(output.stdout_text().trim() == "moved")
}

const MOVE_ASIDE: &str = r#"set -eu
dir="$1"; aside="$2"; version="$3"
# The major named must be the one installed here (never a directory made for another one).
if [ ! -x "/usr/lib/postgresql/$version/bin/postgres" ]; then
  echo "PostgreSQL $version is not installed on this host: $dir left as it is" >&2
  exit 1
fi
if [ -f "$dir/postmaster.pid" ]; then
  runuser -u postgres -- "/usr/lib/postgresql/$version/bin/pg_ctl" -D "$dir" -m fast -w stop || true
fi
if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
  mv "$dir" "$aside"
  echo moved
fi
install -d -o postgres -g postgres -m 0700 "$dir"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cluster_verdicts() {
        assert_eq!(parse_default_cluster("absent"), DefaultCluster::Absent);
        assert_eq!(
            parse_default_cluster("untouched"),
            DefaultCluster::Untouched
        );
        assert_eq!(
            parse_default_cluster("data: 4 databases in /var/lib/postgresql/15/main"),
            DefaultCluster::HasData("4 databases in /var/lib/postgresql/15/main".into())
        );
    }

    #[test]
    fn auth_sql_quotes_and_sets_the_password_only_when_asked() {
        let secret = Secret::new("it's".into());
        let with = auth_sql("pgbouncer_auth", Some(&secret));
        assert!(with.contains("PASSWORD 'it''s'"));
        assert!(!auth_sql("pgbouncer_auth", None).contains("PASSWORD"));
        assert!(with.contains("SECURITY DEFINER"));
    }
}
