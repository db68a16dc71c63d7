//! `pgstrap vars HOST -i INV`: every setting of a host and where its value came from.

use crate::cli::OfflineArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host (inventory name).
    pub host: String,
    #[command(flatten)]
    pub offline: OfflineArgs,
    /// Only for this cluster (a host may belong to several).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let views = crate::render::host_vars(
        &args.offline.inventory.inventory,
        &args.offline.inventory.set,
        args.offline.release.as_deref(),
        &args.host,
        args.cluster.as_deref(),
    )?;
    if args.json {
        crate::ui::print_json(&views);
    } else {
        crate::ui::print_vars(&views);
    }
    Ok(0)
}
