//! `pgstrap verify -i INV`: check the running stack with real clients; exit 1 when anything fails.

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Replication lag a healthy replica may have, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_lag: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let (project, secrets) = super::running_secrets(&project)?;
    let report = super::block_on(crate::stack::verify::verify(
        &project,
        &secrets,
        args.max_lag,
    ))?;
    if args.json {
        crate::ui::print_json(&report);
    } else {
        // The report is the command's output: stdout (`pgstrap verify > report.txt`).
        crate::ui::out(&crate::ui::verify_text(&report));
    }
    Ok(if report.ok() { 0 } else { 1 })
}
