//! `pgstrap check -i INV`: validate the inventory, its settings and every template; touch nothing.
//! `--json`: the verdict and every problem as JSON on stdout (exit codes unchanged).

use crate::cli::OfflineArgs;
use crate::error::{ErrorKind, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub offline: OfflineArgs,
    /// Print the verdict as JSON on stdout: `{"version": 1, "ok", "inventory", "hosts",
    /// "clusters", "files", "problems": [{severity, message, file, line, column, hint}]}`; bad
    /// input still exits 2, with its problems there instead of on stderr.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let inventory = &args.offline.inventory.inventory;
    let checked = crate::render::check(
        inventory,
        &args.offline.inventory.set,
        args.offline.release.as_deref(),
    );
    if args.json {
        let (ok, counts, problems) = match &checked {
            Ok(summary) => (
                true,
                (summary.hosts, summary.clusters, summary.files),
                summary
                    .warnings
                    .iter()
                    .map(crate::ui::problem_json)
                    .collect(),
            ),
            Err(error) if error.kind == ErrorKind::BadInput => (
                false,
                (0, 0, 0),
                error
                    .reports
                    .iter()
                    .map(|r| crate::ui::report_json(r.as_ref()))
                    .collect::<Vec<_>>(),
            ),
            Err(_) => return checked.map(|_| 0),
        };
        crate::ui::print_json(&serde_json::json!({
            "version": 1,
            "ok": ok,
            "inventory": inventory.display().to_string(),
            "hosts": counts.0,
            "clusters": counts.1,
            "files": counts.2,
            "problems": problems,
        }));
        return Ok(if ok { 0 } else { 2 });
    }
    let summary = checked?;
    crate::ui::print_warnings(&summary.warnings);
    crate::ui::eprintln(&format!(
        "ok: {} is valid ({} hosts, {} clusters, {} files would be managed)",
        inventory.display(),
        summary.hosts,
        summary.clusters,
        summary.files
    ));
    Ok(0)
}
