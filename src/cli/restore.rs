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
    #[arg(
        long,
        value_name = "CLUSTER",
        required_unless_present = "in_place",
        conflicts_with = "in_place"
    )]
    pub into: Option<String>,
    /// Restore over the cluster itself: its writes stop, every member's data directory is moved
    /// aside (kept), the cluster is restored and rebuilt, then fully backed up. Every write after
    /// WHEN is then only in the moved-aside directories.
    #[arg(long)]
    pub in_place: bool,
    /// Do not ask (on a terminal, an in-place restore is shown and confirmed first).
    #[arg(long, short = 'y')]
    pub yes: bool,
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
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let into = args.into.clone().unwrap_or_else(|| args.cluster.clone());
    if args.into.as_deref() == Some(args.cluster.as_str()) {
        return Err(crate::error::Error::usage(
            format!("--into {into}: that is the cluster restored from"),
            Some("restoring over it is `--in-place` (instead of --into)".into()),
        ));
    }
    crate::stack::backup::restore::clusters(&project, &args.cluster, &into)?;
    if args.in_place
        && !crate::ui::confirm(
            &format!("restore cluster {} in place to {}", args.cluster, target.describe()),
            &[
                "writes stop: Patroni stops on every member, and its state is cleared".into(),
                "every member's data directory is moved aside (kept, named); writes after the target are only there".into(),
                "the first member is restored, the others clone from it, then a full backup is taken".into(),
            ],
            args.yes,
        )
    {
        return Err(super::declined());
    }
    let (project, secrets) = super::running_secrets(&project)?;
    let options = crate::stack::rollout::Options::default();
    let report = super::run_with_progress(verbose, options.engine.clone(), {
        let source = args.cluster.clone();
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
