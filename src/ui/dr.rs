//! The DR promotion report as text.

use std::fmt::Write;

use crate::stack::dr::PromoteReport;

pub fn dr_promote_text(report: &PromoteReport) -> String {
    let mut out = String::new();
    for step in &report.steps {
        let _ = writeln!(out, "  {:>5.1} s  {}", step.seconds, step.what);
    }
    let _ = writeln!(
        out,
        "promoted {}: {:.1} s without writes; {} replayed {}'s last position {} first (no acknowledged write lost); {} is now its standby cluster",
        report.promoted,
        report.seconds_without_writes,
        report.promoted,
        report.demoted,
        report.last_position,
        report.demoted
    );
    let _ = writeln!(
        out,
        "next: edit the inventory: set `standby_of: {}` on cluster {} and remove `standby_of` from cluster {}; `pgstrap apply` refuses until it matches",
        report.promoted, report.demoted, report.promoted
    );
    out
}
