//! `pgstrap apply -i INV`: the whole rollout — preflight, every host configured, etcd, Patroni
//! leader first then replicas, PgBouncer's auth, the VIP, verification (see `stack::rollout`).
//! With `--roles`, only the engine runs for those roles (no orchestration).

use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// With `--roles`: the engine alone for those roles (no orchestration, gates or
    /// verification); with `--host`: the orchestration covers only those hosts' clusters.
    #[command(flatten)]
    pub engine: crate::cli::EngineArgs,
    /// Skip the final verification with real clients.
    #[arg(long)]
    pub no_verify: bool,
    /// Apply parameters that need a restart with a rolling restart (replicas one by one, a
    /// switchover, then the old primary). Without it they are reported as pending.
    #[arg(long)]
    pub rolling_restart: bool,
    /// Allow removing DB members down to one (a cluster with no replica cannot fail over).
    #[arg(long)]
    pub allow_no_replica: bool,
    /// Do not ask before removing members (on a terminal, `apply` shows the removals and asks).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long one gate may wait (a member cloning a large database, etcd catching up), in
    /// seconds; a wait says how it goes every ten seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 180)]
    pub gate_timeout: u64,
}

pub fn run(args: Args, verbose: u8) -> Result<i32> {
    let Args {
        engine: args,
        no_verify,
        rolling_restart,
        allow_no_replica,
        yes,
        gate_timeout,
    } = args;
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    if !yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) && args.roles.is_empty() {
        // Removing members interrupts writes on a leader that leaves: ask first.
        let (project, secrets) = super::running_secrets(&project)?;
        let removals = super::block_on(crate::stack::rollout::removals(&project, &secrets))?;
        if !removals.is_empty()
            && !crate::ui::confirm("apply will remove members", &removals, false)
        {
            return Err(super::declined());
        }
    }
    let options = args.options();
    if options.roles.is_some() {
        let report = super::run_with_progress(verbose, options, |options| async move {
            let project = project.with_live(crate::stack::live::gather(&project).await);
            crate::exec::apply(&project, options).await
        })?;
        if args.json {
            crate::ui::print_json(&report);
        } else if verbose > 0 {
            crate::ui::eprint(&crate::ui::summary::plan_text(&report, verbose));
        }
        crate::ui::eprint(&crate::ui::summary::summary_text(&report));
        return Ok(report.exit_code());
    }
    let options = crate::stack::rollout::Options {
        engine: options,
        skip_verify: no_verify,
        rolling_restart,
        allow_no_replica,
        gate_timeout: std::time::Duration::from_secs(gate_timeout),
        ..Default::default()
    };
    rollout(project, options, args.json, verbose)
}

/// The rollout with progress and its report; shared by `apply` and `lab up --deploy` so the lab
/// is deployed by exactly the code path real servers are.
pub(crate) fn rollout(
    project: crate::project::Project,
    options: crate::stack::rollout::Options,
    json: bool,
    verbose: u8,
) -> Result<i32> {
    let engine = options.engine.clone();
    let report = super::run_with_progress(verbose, engine, |engine| async move {
        let options = crate::stack::rollout::Options { engine, ..options };
        crate::stack::rollout::rollout(&project, options).await
    })?;
    if json {
        crate::ui::print_json(&report);
    }
    crate::ui::eprint(&crate::ui::rollout_text(&report, verbose));
    Ok(if report.ok() { 0 } else { 1 })
}
