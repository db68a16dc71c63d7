//! The DR promotion report as text.

use std::fmt::Write;

use crate::stack::dr::emergency::ForcedReport;
use crate::stack::dr::{PromoteReport, Step};

fn steps_text(out: &mut String, steps: &[Step]) {
    for step in steps {
        let _ = writeln!(out, "  {:>5.1} s  {}", step.seconds, step.what);
    }
}

pub fn dr_forced_text(report: &ForcedReport) -> String {
    let mut out = String::new();
    steps_text(&mut out, &report.steps);
    let fence = &report.fence;
    let _ = writeln!(
        out,
        "promoted {} without its primary side in {:.1} s. Data-loss window: what {} acknowledged after {} (WAL after {}) is not on {}.",
        report.promoted,
        report.seconds,
        report.fenced,
        if fence.replay_timestamp.is_empty() { "its last replayed transaction" } else { &fence.replay_timestamp },
        fence.replayed_lsn,
        report.promoted
    );
    let _ = writeln!(
        out,
        "{} is fenced: its hosts will not start Patroni when they come back (`pgstrap status` shows it).",
        report.fenced
    );
    let _ = writeln!(
        out,
        "next: edit the inventory: set `standby_of: {}` on cluster {} and remove `standby_of` from cluster {}; `pgstrap apply` then rebuilds {} as its standby cluster (its diverged data directories moved aside, kept) and lifts the fence",
        report.promoted, report.fenced, report.promoted, report.fenced
    );
    out
}

pub fn dr_promote_text(report: &PromoteReport) -> String {
    let mut out = String::new();
    steps_text(&mut out, &report.steps);
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
