//! `pgstrap preflight -i INV`: the rollout's preflight on every host, alone: what would stop
//! `apply` before it changes anything, for servers being prepared. Exit 0 when every host is
//! ready (warnings allowed), 1 when one is not.

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Print the problems as JSON on stdout: `{"version": 1, "ready", "hosts", "problems":
    /// [{host, message, hint, warning}]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let problems = super::block_on(crate::stack::rollout::preflight_only(&project))??;
    let ready = !problems.iter().any(|p| !p.warning);
    if args.json {
        crate::ui::print_json(&serde_json::json!({
            "version": 1,
            "ready": ready,
            "hosts": project.inventory.hosts.len(),
            "problems": problems,
        }));
    } else {
        let text = crate::ui::preflight_text(&problems, project.inventory.hosts.len());
        crate::ui::eprintln(text.trim_end());
    }
    Ok(if ready { 0 } else { 1 })
}
