//! `pgstrap status -i INV`: etcd, Patroni, PgBouncer, HAProxy and the VIP in one table. Exit 0
//! when every cluster is healthy, 1 when one is degraded (its problems on stderr).

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Print the status as JSON on stdout (a versioned shape, documented in README.md).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let (project, secrets) = super::running_secrets(&project)?;
    let status = super::block_on(crate::stack::status::status(&project, &secrets))?;
    if args.json {
        crate::ui::print_json(&status);
    } else {
        crate::ui::out(&crate::ui::status_text(&status));
    }
    let problems = status.problems();
    for problem in &problems {
        crate::ui::eprintln(&format!("degraded: {problem}"));
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}
