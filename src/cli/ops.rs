//! The day-to-day operations: `pause`, `resume`, `history`, `restart`, `reinit`, `failover`
//! (see `stack::ops`). Each: the cluster as it is, what will happen, the result with its time,
//! or `--json`.

use std::time::Duration;

use crate::cli::InventoryArgs;
use crate::error::Result;
use crate::stack::ops;

/// The arguments every operation takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The cluster (needed when the inventory has several primary clusters).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct Plain {
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only this DB host (the primary: a switchover away from it, which restarts it).
    #[arg(long, value_name = "HOST", conflicts_with = "pending")]
    pub member: Option<String>,
    /// Only the members with a restart pending (a changed parameter that needs one).
    #[arg(long)]
    pub pending: bool,
    /// How long one member may take to come back (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Do not ask (on a terminal, the restart is shown and confirmed first).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReinitArgs {
    #[command(flatten)]
    pub common: Common,
    /// The replica to rebuild (a DB host of the cluster; never its leader).
    #[arg(long, value_name = "HOST")]
    pub member: String,
    /// How long the rebuild may take (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub timeout: u64,
    /// Do not ask.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub common: Common,
    /// The DB host to promote.
    #[arg(long, value_name = "HOST")]
    pub to: String,
    /// Do not ask (what the promotion may lose is shown first on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Only the hosts of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only these hosts (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Show what would be upgraded and restarted, in order; change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Reboot the hosts that need it (`/var/run/reboot-required`), in the same order and behind
    /// the same gates, instead of restarting their services.
    #[arg(long)]
    pub reboot: bool,
    /// How long one host's restarts may take (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not ask (on a terminal, the plan is shown and confirmed first).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

type Opened = (
    crate::project::Project,
    crate::inventory::secrets::Secrets,
    String,
);

/// Load the inventory and the secrets, and name the cluster (a primary one).
fn open(common: &Common) -> Result<Opened> {
    open_with(common, false)
}

/// `open`; with `standby`, a DR standby cluster named with `--cluster` is taken too.
fn open_with(common: &Common, standby: bool) -> Result<Opened> {
    let project = crate::project::load(&common.inventory.inventory, &common.inventory.set)?;
    let (project, secrets) = super::running_secrets(&project)?;
    let named_standby = common
        .cluster
        .as_deref()
        .and_then(|name| project.inventory.clusters.get(name))
        .filter(|c| standby && c.standby_of.is_some())
        .map(|c| c.name.clone());
    let cluster = match named_standby {
        Some(name) => name,
        None => crate::stack::primary_cluster(&project, common.cluster.as_deref())?
            .name
            .clone(),
    };
    Ok((project, secrets, cluster))
}

fn show<T: serde::Serialize>(json: bool, report: &T, text: impl FnOnce(&T) -> String) {
    if json {
        crate::ui::print_json(report);
    } else {
        crate::ui::out(&text(report));
    }
}

pub fn pause(args: Plain, on: bool) -> Result<i32> {
    let (project, secrets, name) = open(&args.common)?;
    let cluster = &project.inventory.clusters[&name];
    let report = super::block_on(ops::maintenance::set(&project, &secrets, cluster, on))??;
    show(args.common.json, &report, crate::ui::maintenance_text);
    Ok(0)
}

pub fn history(args: Plain) -> Result<i32> {
    let (project, secrets, name) = open(&args.common)?;
    let cluster = &project.inventory.clusters[&name];
    let report = super::block_on(ops::history::history(&project, &secrets, cluster))??;
    show(args.common.json, &report, crate::ui::history_text);
    Ok(0)
}

pub fn restart(args: RestartArgs) -> Result<i32> {
    // A DR standby cluster too: its replicas, then its standby leader in place.
    let (project, secrets, name) = open_with(&args.common, true)?;
    let cluster = &project.inventory.clusters[&name];
    let scope = match (&args.member, args.pending) {
        (Some(host), _) => ops::restart::Scope::Member(host),
        (None, true) => ops::restart::Scope::Pending,
        (None, false) => ops::restart::Scope::All,
    };
    if let ops::restart::Scope::Member(host) = scope {
        ops::member_of_host(&project, cluster, host)?;
    }
    let standby = cluster.standby_of.is_some();
    let what = match scope {
        ops::restart::Scope::All if standby => "every member: the replicas one at a time, then the standby leader in place (replication from the primary side pauses for a few seconds; no write is affected)".to_owned(),
        ops::restart::Scope::All => "every member: the replicas one at a time, then one switchover to a restarted replica (writes through the VIP pause for a few seconds), the former primary restarted by its demotion".to_owned(),
        ops::restart::Scope::Pending => "the members with a restart pending, replicas first; a switchover when the primary is one of them".to_owned(),
        ops::restart::Scope::Member(host) => format!("{host} (when it is the primary: a switchover away from it first)"),
    };
    if !crate::ui::confirm(&format!("restart in cluster {name}"), &[what], args.yes) {
        return Err(super::declined());
    }
    let report = super::block_on(ops::restart::restart(
        &project,
        &secrets,
        cluster,
        scope,
        Duration::from_secs(args.timeout),
    ))??;
    show(args.common.json, &report, crate::ui::restart_text);
    Ok(0)
}

pub fn reinit(args: ReinitArgs) -> Result<i32> {
    let (project, secrets, name) = open(&args.common)?;
    let cluster = &project.inventory.clusters[&name];
    super::block_on(ops::reinit::check(
        &project,
        &secrets,
        cluster,
        &args.member,
    ))??;
    let source = if cluster.repository().is_some() {
        "from the newest backup in the repository and the WAL archive (pg_basebackup from the primary when there is none)"
    } else {
        "with pg_basebackup from the primary"
    };
    if !crate::ui::confirm(
        &format!("reinit of {} in cluster {name}", args.member),
        &[format!(
            "Patroni stops on {}, its data directory is moved aside (kept), and the replica is rebuilt {source}",
            args.member
        )],
        args.yes,
    ) {
        return Err(super::declined());
    }
    let report = super::block_on(ops::reinit::reinit(
        &project,
        &secrets,
        cluster,
        &args.member,
        Duration::from_secs(args.timeout),
    ))??;
    show(args.common.json, &report, crate::ui::reinit_text);
    Ok(0)
}

pub fn failover(args: FailoverArgs) -> Result<i32> {
    let (project, secrets, name) = open(&args.common)?;
    let cluster = &project.inventory.clusters[&name];
    let plan = super::block_on(ops::failover::plan(&project, &secrets, cluster, &args.to))??;
    let lines = crate::ui::failover_plan_lines(&plan);
    if !crate::ui::announce_and_confirm(
        &format!("failover of cluster {name}"),
        &lines,
        args.yes,
        args.common.json,
    ) {
        return Err(super::declined());
    }
    let report = super::block_on(ops::failover::failover(&project, &secrets, cluster, plan))??;
    show(args.common.json, &report, crate::ui::failover_text);
    Ok(0)
}

pub fn update(args: UpdateArgs) -> Result<i32> {
    // The steps' times count from here (a client's log can be set beside them).
    let started = std::time::Instant::now();
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let (project, secrets) = super::running_secrets(&project)?;
    let (plan, sessions, project) = super::block_on(ops::update::plan(
        &project,
        &secrets,
        args.cluster.as_deref(),
        &args.hosts,
        args.reboot,
    ))??;
    let lines = crate::ui::update_plan_lines(&plan);
    if args.plan || plan.hosts.is_empty() {
        if args.json {
            crate::ui::print_json(&plan);
        } else {
            crate::ui::out(&(lines.join("\n") + "\n"));
        }
        return Ok(0);
    }
    if !crate::ui::announce_and_confirm("update", &lines, args.yes, args.json) {
        return Err(super::declined());
    }

    let report = super::block_on(ops::update::update(
        &project,
        &secrets,
        plan,
        sessions,
        Duration::from_secs(args.timeout),
        // On stderr, also with --json (the report goes to stdout once the run is done).
        &|step| {
            crate::ui::eprintln(&format!(
                "{:>7.1} s  {step}",
                started.elapsed().as_secs_f64()
            ))
        },
    ))??;
    show(args.json, &report, crate::ui::update_text);
    Ok(0)
}
