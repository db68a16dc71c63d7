//! `pgstrap backup -i INV [--cluster C] [--type full|diff|incr]`: one backup now, on the
//! cluster's repository host (the schedules run the same command from systemd timers there).

use crate::cli::InventoryArgs;
use crate::error::Result;
use crate::stack::backup::BackupType;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The cluster (needed when the inventory has several primary clusters).
    #[arg(long)]
    pub cluster: Option<String>,
    /// full: everything; diff: what changed since the last full; incr: since the last backup.
    #[arg(long = "type", value_enum, default_value = "full")]
    pub kind: BackupType,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    // Without --cluster: the only cluster with backups.
    let with_backups: Vec<&str> = project
        .inventory
        .clusters
        .values()
        .filter(|c| c.repository().is_some())
        .map(|c| c.name.as_str())
        .collect();
    let name = match (args.cluster.as_deref(), with_backups.as_slice()) {
        (Some(name), _) => Some(name),
        (None, [one]) => Some(*one),
        (None, _) => None,
    };
    let cluster = crate::stack::primary_cluster(&project, name)?;
    crate::stack::backup::repository_of(cluster)?;
    let (project, secrets) = super::running_secrets(&project)?;
    let taken = super::block_on(crate::stack::backup::backup_now(
        &project, &secrets, cluster, args.kind,
    ))??;
    if args.json {
        crate::ui::print_json(&taken);
    } else {
        crate::ui::out(&crate::ui::backup_text(&taken));
    }
    Ok(0)
}
