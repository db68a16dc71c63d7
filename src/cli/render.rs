//! `pgstrap render -i INV --out DIR`: write every file for every host to DIR/HOST/… (no host is
//! touched).

use std::path::PathBuf;

use crate::cli::OfflineArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub offline: OfflineArgs,
    /// Directory to write into (DIR/HOST/etc/…).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Only these hosts (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let only = (!args.hosts.is_empty()).then_some(args.hosts.as_slice());
    let written = crate::render::render_to_dir(
        &args.offline.inventory.inventory,
        &args.offline.inventory.set,
        args.offline.release.as_deref(),
        &args.out,
        only,
    )?;
    crate::ui::print_warnings(&written.warnings);
    crate::ui::eprintln(&format!(
        "rendered {} files for {} hosts into {}",
        written.files,
        written.hosts,
        args.out.display()
    ));
    Ok(0)
}
