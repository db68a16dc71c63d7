//! `pgstrap plan -i INV [--host H]… [--roles R,…] [--json] [--detailed-exitcode]`: per host what
//! `apply` would change (diffs with secrets masked), then the cluster-level steps. Only reads
//! facts from the hosts; changes nothing.

use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub engine: crate::cli::EngineArgs,
    /// Exit 0 when nothing would change, 2 when something would, 1 on any error (bad input
    /// included), as `terraform plan -detailed-exitcode` does.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// `plan --json`: the engine's report with the cluster-level steps beside it.
#[derive(serde::Serialize)]
struct PlanJson<'a> {
    #[serde(flatten)]
    report: &'a crate::exec::Report,
    cluster_steps: &'a [crate::stack::rollout::PlanStep],
}

pub fn run(args: Args, verbose: u8) -> Result<i32> {
    let detailed = args.detailed_exitcode;
    let result = plan(args.engine, verbose);
    if !detailed {
        return result.map(|code| if code == 3 { 0 } else { code });
    }
    match result {
        Ok(0) => Ok(0),
        Ok(3) => Ok(2),
        Ok(_) => Ok(1),
        Err(error) => {
            super::report(&error);
            Ok(1)
        }
    }
}

/// The plan, printed; exit 0 (nothing to change), 3 (changes: `--detailed-exitcode` says 2), or
/// the engine's own code.
fn plan(args: crate::cli::EngineArgs, verbose: u8) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let (report, orchestration) =
        super::run_with_progress(verbose, args.options(), |options| async move {
            let project = project.with_live(crate::stack::live::gather(&project).await);
            let (report, project) =
                crate::exec::plan_with_releases(&project, options.clone()).await?;
            // Beyond the hosts' files: the clusters' dynamic configuration and restarts.
            let orchestration = match (options.roles.is_none(), project.secrets(false)) {
                (true, Ok(secrets)) => {
                    crate::stack::rollout::plan_orchestration(&project, &secrets).await
                }
                _ => Vec::new(),
            };
            Ok((report, orchestration))
        })?;
    if args.json {
        crate::ui::print_json(&PlanJson {
            report: &report,
            cluster_steps: &orchestration,
        });
    } else {
        let mut text = crate::ui::summary::plan_text(&report, verbose);
        for step in &orchestration {
            text.push_str(&step.text);
            text.push('\n');
        }
        text.push_str(&crate::ui::summary::plan_totals(
            &report,
            orchestration.iter().filter(|s| s.change).count(),
        ));
        text.push('\n');
        crate::ui::out(&text);
    }
    crate::ui::eprint(&crate::ui::summary::summary_text(&report));
    let code = report.exit_code();
    let changes = report.total_changes() > 0 || orchestration.iter().any(|s| s.change);
    Ok(if code == 0 && changes { 3 } else { code })
}
