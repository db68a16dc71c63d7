//! The command line: one thin file per subcommand. Each parses its flags, builds options and calls
//! one library function; errors are printed once, here, and turned into the exit code.

use clap::{Parser, Subcommand};

use crate::error::{Error, ErrorKind};

mod apply;
mod backup;
mod check;
mod connect;
mod dr;
mod drill;
mod lab;
mod ops;
mod plan;
mod preflight;
mod render;
mod report;
mod restore;
mod rotate;
mod status;
mod switchover;
mod templates;
mod vars;
mod verify;

/// pgstrap: one inventory file → a running, verified, highly available PostgreSQL cluster.
#[derive(Debug, Parser)]
#[command(name = "pgstrap", version, about, propagate_version = true)]
pub struct Cli {
    /// Show more detail (-v: remote commands with timings, -vv: debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command that reads an inventory.
#[derive(Debug, Clone, clap::Args)]
pub struct InventoryArgs {
    /// The inventory file (YAML).
    #[arg(short, long, value_name = "FILE", env = "PGSTRAP_INVENTORY")]
    pub inventory: std::path::PathBuf,
    /// Override a variable: KEY=VALUE (e.g. patroni.ttl=20); beats every other setting.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Options of the commands that reach no host (`check`, `render`, `vars`): the inventory, and
/// the release to render for (commands that connect use each host's own, so only these have it).
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The Debian release to render for (no host is reached to learn it): 12 or 13 (default 13).
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
}

/// Options of the commands that run the engine on hosts (`plan`, `apply`).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Only these hosts (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only these roles (comma-separated, e.g. common,pgbouncer).
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Hosts worked on at the same time.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub parallel: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl EngineArgs {
    /// The engine's options (no event channel yet: the progress display adds one).
    pub fn options(&self) -> crate::exec::Options {
        crate::exec::Options {
            parallel: self.parallel,
            hosts: (!self.hosts.is_empty()).then(|| self.hosts.clone()),
            roles: (!self.roles.is_empty()).then(|| self.roles.clone()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate an inventory: exit 0 when it is good, 2 with every problem when it is not.
    Check(check::Args),
    /// Render every file for every host into a directory (touches no host).
    Render(render::Args),
    /// Show the variables of a host, each with where its value came from.
    Vars(vars::Args),
    /// Inspect templates.
    Templates(templates::Args),
    /// Show, per host, what `apply` would change (diffs with secrets masked); change nothing.
    Plan(plan::Args),
    /// Bring every host to the state the inventory describes.
    Apply(apply::Args),
    /// Check every host is ready for `apply` (reachable with its host key, a supported Debian
    /// release, disk, clock, the stack's ports free, its own name resolving, no data in Debian's
    /// default cluster); change nothing.
    Preflight(preflight::Args),
    /// Check the running stack with real clients (writes through the VIP, reads from a replica…).
    Verify(verify::Args),
    /// One archive for support: the status, every host's facts, its journals of the stack and
    /// the files pgstrap manages there, secrets masked and private keys left out.
    Report(report::Args),
    /// etcd, Patroni, PgBouncer, HAProxy and the VIP in one table.
    Status(status::Args),
    /// A planned switchover to another database host.
    Switchover(switchover::Args),
    /// A leader for a cluster that has none: shows what each candidate holds, then promotes one.
    Failover(ops::FailoverArgs),
    /// A rolling restart (replicas first, one switchover), of pending members only, or of one.
    Restart(ops::RestartArgs),
    /// Rebuild a replica (its old data directory kept aside).
    Reinit(ops::ReinitArgs),
    /// Maintenance mode on: Patroni does not fail over on its own until `resume`.
    Pause(ops::Plain),
    /// Maintenance mode off.
    Resume(ops::Plain),
    /// Debian's updates on every host, planned first, at most one switchover per cluster.
    Update(ops::UpdateArgs),
    /// The cluster's timeline switches (failovers, switchovers, restores) as Patroni recorded them.
    History(ops::Plain),
    /// Take a backup now (pgBackRest, on the cluster's repository host).
    Backup(backup::Args),
    /// Restore a cluster's backups to a point in time into another cluster of the inventory.
    Restore(restore::Args),
    /// A failure drill under write clients: lost writes, time without writes, divergence.
    Drill(drill::Args),
    /// The DR lifecycle: promote a standby cluster (planned; also the fail back).
    Dr(dr::Args),
    /// Deliberate rotation of a running cluster's identity material (passwords).
    Rotate(rotate::Args),
    /// Real test hosts on this machine (systemd-nspawn containers reached over SSH).
    Lab(lab::Args),
    /// A shell on an inventory host (or a command there), with the inventory's ssh settings.
    Ssh(connect::SshArgs),
    /// psql through the cluster's VIP (TLS verified against the inventory's CA).
    Psql(connect::PsqlArgs),
    /// The shell completion script for SHELL (bash, zsh, fish, elvish, powershell), on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page (roff), on stdout: `pgstrap man | man -l -`.
    Man,
}

/// Run the command line and return the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    crate::ui::init_logging(cli.verbose);
    crate::clients::gate::on_progress(crate::ui::progress::line);
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Render(args) => render::run(args),
        Command::Vars(args) => vars::run(args),
        Command::Templates(args) => templates::run(args),
        Command::Plan(args) => plan::run(args, cli.verbose),
        Command::Apply(args) => apply::run(args, cli.verbose),
        Command::Preflight(args) => preflight::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Report(args) => report::run(args),
        Command::Status(args) => status::run(args),
        Command::Switchover(args) => switchover::run(args),
        Command::Failover(args) => ops::failover(args),
        Command::Restart(args) => ops::restart(args),
        Command::Reinit(args) => ops::reinit(args),
        Command::Pause(args) => ops::pause(args, true),
        Command::Resume(args) => ops::pause(args, false),
        Command::History(args) => ops::history(args),
        Command::Update(args) => ops::update(args),
        Command::Backup(args) => backup::run(args),
        Command::Restore(args) => restore::run(args, cli.verbose),
        Command::Drill(args) => drill::run(args),
        Command::Dr(args) => dr::run(args),
        Command::Rotate(args) => rotate::run(args, cli.verbose),
        Command::Lab(args) => lab::run(args, cli.verbose),
        Command::Ssh(args) => connect::ssh(args),
        Command::Psql(args) => connect::psql(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "pgstrap",
                &mut script,
            );
            crate::ui::out(&String::from_utf8_lossy(&script));
            Ok(0)
        }
        Command::Man => man(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            error.exit_code()
        }
    }
}

/// `pgstrap man`: the man page clap writes from the commands' own help.
fn man() -> crate::error::Result<i32> {
    let mut page = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
        .render(&mut page)
        .map_err(|e| Error::failure(format!("cannot render the man page: {e}"), None))?;
    crate::ui::out(&String::from_utf8_lossy(&page));
    Ok(0)
}

/// The one async runtime of the process (multi-threaded), built on first use: commands are
/// synchronous at the top and may call [`block_on`] several times (sessions opened in one call are
/// used in the next, e.g. `update`'s plan and its run), always on this runtime.
fn runtime() -> crate::error::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::failure(format!("cannot start the async runtime: {e}"), None))
}

/// Run a future to completion on the process's runtime.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> crate::error::Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

/// Run an engine call on the process's runtime with the progress drawn from its events.
pub(crate) fn run_with_progress<F, Fut, T>(
    verbose: u8,
    options: crate::exec::Options,
    call: F,
) -> crate::error::Result<T>
where
    F: FnOnce(crate::exec::Options) -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    block_on(crate::ui::progress::with_progress(verbose, options, call))?
}

/// The project and its secrets, for a command about to talk to running clusters: the project
/// carries whether those clusters speak TLS, and this run's TLS clients are set up the way they
/// run (see `stack::live::gather_tls`).
pub(crate) fn running_secrets(
    project: &crate::project::Project,
) -> crate::error::Result<(crate::project::Project, crate::inventory::secrets::Secrets)> {
    let secrets = project.secrets(false)?;
    let live = block_on(crate::stack::live::gather_tls(project))?;
    Ok((project.with_live(live), secrets))
}

/// The user answered no: nothing was done.
pub(crate) fn declined() -> Error {
    Error::failure(
        "not confirmed: nothing was changed",
        Some("run it again and answer y, or pass --yes".into()),
    )
}

/// The most reports of one error printed in full: past it, one line says how many more there
/// are (3000 unknown host names once printed 324 MB).
const MAX_REPORTS: usize = 20;

/// Print the reports of an error to stderr, once: the first [`MAX_REPORTS`] in full, then how
/// many more there are.
pub fn report(error: &Error) {
    for report in error.reports.iter().take(MAX_REPORTS) {
        crate::ui::print_report(report);
    }
    let more = error.reports.len().saturating_sub(MAX_REPORTS);
    if more > 0 {
        crate::ui::eprintln(&format!(
            "… and {more} more problem(s) not shown: fix the ones above and run it again"
        ));
    }
    if error.kind == ErrorKind::BadInput && error.reports.len() > 1 {
        crate::ui::eprintln(&format!(
            "error: {} problems found; nothing was changed",
            error.reports.len()
        ));
    }
}
