//! `pgstrap plan -i INV [--host H]… [--roles R,…] [--json]`: per host what `apply` would change
//! (diffs with secrets masked). Only reads facts from the hosts; changes nothing.

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
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

pub fn run(args: Args, verbose: u8) -> Result<i32> {
    let project = crate::render::load_project(&args.inventory.inventory, &args.inventory.set)?;
    let options = crate::exec::Options {
        parallel: args.parallel,
        hosts: (!args.hosts.is_empty()).then_some(args.hosts),
        roles: (!args.roles.is_empty()).then_some(args.roles),
        events: None,
    };
    let report = crate::ui::progress::run_with_progress(verbose, options, |options| async move {
        crate::exec::plan(&project, options).await
    })?;
    if args.json {
        crate::ui::print_json(&report);
    } else {
        print!("{}", crate::ui::summary::plan_text(&report, verbose));
    }
    eprint!("{}", crate::ui::summary::summary_text(&report));
    Ok(report.exit_code())
}
