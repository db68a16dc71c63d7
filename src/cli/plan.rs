//! `pgstrap plan -i INV [--host H]… [--roles R,…] [--json]`: per host what `apply` would change
//! (diffs with secrets masked). Only reads facts from the hosts; changes nothing.

use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub engine: crate::cli::EngineArgs,
}

pub fn run(args: Args, verbose: u8) -> Result<i32> {
    let args = args.engine;
    let project = crate::render::load_project(&args.inventory.inventory, &args.inventory.set)?;
    let (report, orchestration) =
        crate::ui::progress::run_with_progress(verbose, args.options(), |options| async move {
            crate::stack::live::learn(&project).await;
            let report = crate::exec::plan(&project, options.clone()).await?;
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
        crate::ui::print_json(&report);
    } else {
        print!("{}", crate::ui::summary::plan_text(&report, verbose));
    }
    for line in &orchestration {
        println!("{line}");
    }
    eprint!("{}", crate::ui::summary::summary_text(&report));
    Ok(report.exit_code())
}
