//! `pgstrap check -i INV`: validate the inventory, its settings and every template; touch nothing.

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArgs,
}

pub fn run(args: Args) -> Result<i32> {
    let summary = crate::render::check(
        &args.inventory.inventory,
        &args.inventory.set,
        args.inventory.release.as_deref(),
    )?;
    crate::ui::print_warnings(&summary.warnings);
    crate::ui::eprintln(&format!(
        "ok: {} is valid ({} hosts, {} clusters, {} files would be managed)",
        args.inventory.inventory.display(),
        summary.hosts,
        summary.clusters,
        summary.files
    ));
    Ok(0)
}
