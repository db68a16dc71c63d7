//! `pgstrap restore -i INV --cluster SOURCE --into TARGET --to WHEN`: a point-in-time restore of
//! SOURCE's backups into TARGET (a cluster of the inventory with `restore_of: SOURCE`), the
//! source untouched (see `stack::backup::restore`).

use crate::error::Result;
use crate::stack::backup::restore::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: crate::cli::InventoryArgs,
    /// The cluster whose backups are restored.
    #[arg(long)]
    pub cluster: String,
    /// The cluster restored into: declared in the inventory with `restore_of: SOURCE`, prepared
    /// by `apply`, never bootstrapped.
    #[arg(long, value_name = "CLUSTER")]
    pub into: String,
    /// How far: `latest`, a time (`2026-12-04 20:30:00+00:00`, RFC 3339; UTC without an
    /// offset), an LSN (`0/3000028`), or a restore point's name (`pg_create_restore_point`).
    #[arg(long, value_name = "WHEN")]
    pub to: String,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, verbose: u8) -> Result<i32> {
    let target = Target::parse(&args.to)?;
    let project = crate::render::load_project(&args.inventory.inventory, &args.inventory.set)?;
    crate::stack::backup::restore::clusters(&project, &args.cluster, &args.into)?;
    let secrets = super::running_secrets(&project)?;
    let options = crate::stack::rollout::Options::default();
    let report = crate::ui::progress::run_with_progress(verbose, options.engine.clone(), {
        let (source, into) = (args.cluster.clone(), args.into.clone());
        |engine| async move {
            let options = crate::stack::rollout::Options { engine, ..options };
            crate::stack::backup::restore::restore(
                &project, &secrets, &source, &into, &target, &options,
            )
            .await
        }
    })?;
    if args.json {
        crate::ui::print_json(&report);
    } else {
        crate::ui::out(&crate::ui::restore_text(&report));
    }
    Ok(0)
}
