//! `pgstrap report -i INV [--out FILE] [--since WHEN]`: one archive for support (the status,
//! and from every host its facts, journals and managed files, secrets masked, private keys left
//! out). Reads only.

use std::path::PathBuf;

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The archive to write (gzipped tar, mode 0600); default
    /// `pgstrap-report-YYYYMMDD-HHMMSS.tar.gz` here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Journals from this time on (journalctl's `--since`: `-1h`, `-30min`, `2026-12-07 10:00`).
    #[arg(long, value_name = "WHEN", default_value = "-1h")]
    pub since: String,
}

pub fn run(args: Args) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let (project, secrets) = super::running_secrets(&project)?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]-[hour][minute][second]"
        ))
        .unwrap_or_else(|_| "now".into());
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("pgstrap-report-{stamp}.tar.gz")));
    // Collected in a hidden directory beside the archive, under the name the archive holds.
    let staging = out.with_file_name(format!(".pgstrap-report-{stamp}-{}", std::process::id()));
    let dir = staging.join(format!("pgstrap-report-{stamp}"));
    let status = super::block_on(crate::stack::status::status(&project, &secrets))?;
    let masker = secrets.masker();
    crate::stack::report::write(
        &dir.join("status.txt"),
        &masker.mask(&crate::ui::status_text(&status)),
    )?;
    let json = serde_json::to_string_pretty(&status).unwrap_or_default();
    crate::stack::report::write(&dir.join("status.json"), &masker.mask(&json))?;
    let collected = super::block_on(crate::stack::report::collect(
        &project,
        &secrets,
        &args.since,
        &dir,
    ))??;
    let archive = crate::stack::report::archive(&dir, &out)?;
    let _ = std::fs::remove_dir_all(&staging);
    crate::ui::eprintln(&crate::ui::report_text(&collected, &archive));
    Ok(if collected.unreachable.is_empty() {
        0
    } else {
        1
    })
}
