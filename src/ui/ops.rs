//! The texts of the day-to-day operations (`pause`, `resume`, `history`, `restart`, `reinit`,
//! `failover`).

use std::fmt::Write as _;

use crate::clients::patroni::lsn_text;
use crate::stack::ops::failover::{FailoverPlan, FailoverReport};
use crate::stack::ops::history::History;
use crate::stack::ops::maintenance::MaintenanceReport;
use crate::stack::ops::reinit::ReinitReport;
use crate::stack::ops::restart::RestartReport;

pub fn maintenance_text(r: &MaintenanceReport) -> String {
    let mut out = String::new();
    let mode = if r.paused {
        "in maintenance mode (paused): Patroni does not fail over on its own until `pgstrap resume`"
    } else {
        "out of maintenance mode: Patroni fails over on its own again"
    };
    let _ = writeln!(
        out,
        "cluster {}: {mode}{}",
        r.cluster,
        if r.unchanged { " (it already was)" } else { "" }
    );
    let _ = writeln!(
        out,
        "  confirmed by {} in {:.1} s",
        list(&r.confirmed),
        r.seconds
    );
    if !r.unreachable.is_empty() {
        let _ = writeln!(
            out,
            "  not answering: {} (they take the mode from etcd when they are back)",
            list(&r.unreachable)
        );
    }
    out
}

pub fn history_text(h: &History) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}: timeline {} now, leader {}",
        h.cluster,
        h.timeline
            .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
        h.leader.as_deref().unwrap_or("none")
    );
    if h.switches.is_empty() {
        let _ = writeln!(out, "  no timeline switch since the cluster was created");
        return out;
    }
    let _ = writeln!(
        out,
        "  {:>8}  {:<14}  {:<32}  {:<10}  reason",
        "timeline", "ended at LSN", "time", "new leader"
    );
    for s in &h.switches {
        let _ = writeln!(
            out,
            "  {:>8}  {:<14}  {:<32}  {:<10}  {}",
            s.timeline,
            lsn_text(s.lsn),
            s.time.as_deref().unwrap_or("?"),
            s.new_leader.as_deref().unwrap_or("?"),
            s.reason
        );
    }
    out
}

pub fn restart_text(r: &RestartReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}: restarted {} in {:.1} s (leader before: {})",
        r.cluster,
        if r.hosts.is_empty() {
            "nothing".to_owned()
        } else {
            list(&r.hosts)
        },
        r.seconds,
        r.leader
    );
    for warning in &r.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    for step in &r.steps {
        let _ = writeln!(out, "  {step}");
    }
    out
}

pub fn reinit_text(r: &ReinitReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}: {} rebuilt{} and streaming in {:.1} s",
        r.cluster,
        r.host,
        r.method
            .as_deref()
            .map_or_else(String::new, |m| format!(" with {m}")),
        r.seconds
    );
    match &r.moved_aside {
        Some(path) => {
            let _ = writeln!(
                out,
                "  its old data directory is kept at {path} on {}",
                r.host
            );
        }
        None => {
            let _ = writeln!(out, "  it had no data directory");
        }
    }
    out
}

/// The failover's plan, one line each (shown and confirmed before it runs).
pub fn failover_plan_lines(p: &FailoverPlan) -> Vec<String> {
    let mut lines = vec![format!(
        "cluster {} has no leader{}; the last leader was {}, its last published WAL position {}",
        p.cluster,
        if p.paused {
            " (maintenance mode: Patroni does not fail over on its own)"
        } else {
            ""
        },
        p.last_leader.as_deref().unwrap_or("unknown"),
        p.last_leader_lsn
            .map_or_else(|| "unknown".to_owned(), lsn_text)
    )];
    for c in &p.candidates {
        lines.push(format!(
            "{} {}",
            if c.host == p.to { "→" } else { " " },
            c.describe()
        ));
    }
    let loss = match p.candidate().and_then(|c| c.behind_bytes) {
        Some(0) => "nothing the leader published is lost".to_owned(),
        Some(bytes) => format!(
            "{bytes} bytes of WAL the leader had published are not on {}: writes acknowledged in them are lost (they stay in the old primary's data directory, moved aside when it rejoins)",
            p.to
        ),
        None => "how much is lost is unknown (the leader's last position is not in etcd)".to_owned(),
    };
    lines.push(format!("{} is promoted: {loss}", p.to));
    lines
}

pub fn failover_text(r: &FailoverReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "failed over cluster {}: {} → {} in {:.1} s (writes land on the new primary){}",
        r.plan.cluster,
        r.plan.last_leader.as_deref().unwrap_or("no leader"),
        r.new_leader,
        r.seconds,
        if r.plan.paused {
            "; still in maintenance mode: `pgstrap resume` ends it"
        } else {
            ""
        }
    );
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nobody".to_owned()
    } else {
        items.join(", ")
    }
}

/// The update's plan, one line each (shown and confirmed before it runs).
pub fn update_plan_lines(p: &crate::stack::ops::update::UpdatePlan) -> Vec<String> {
    let mut lines = Vec::new();
    if p.hosts.is_empty() {
        lines.push("every host is up to date: nothing to do".to_owned());
        return lines;
    }
    for (i, h) in p.hosts.iter().enumerate() {
        let restarts = if p.reboot && h.reboot_required {
            "then reboots (its services start with it)".to_owned()
        } else if h.restarts.is_empty() {
            "no service of the stack restarts".to_owned()
        } else {
            format!(
                "then restarts {}",
                h.restarts
                    .iter()
                    .map(|r| serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        lines.push(format!(
            "{}. {}: {} package(s), {restarts}{}{}",
            i + 1,
            h.host,
            h.upgrades.len(),
            h.postgresql
                .as_ref()
                .map_or_else(String::new, |(from, to)| format!(
                    "; PostgreSQL {from} → {to}"
                )),
            match (h.reboot_required, p.reboot) {
                (true, false) => "; a reboot is required (made with --reboot)",
                _ => "",
            }
        ));
        for u in &h.upgrades {
            lines.push(format!("     {} {} → {}", u.package, u.from, u.to));
        }
    }
    lines.extend(p.switchovers.iter().cloned());
    lines
}

pub fn update_text(r: &crate::stack::ops::update::UpdateReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "updated {} host(s) in {:.1} s",
        r.plan.hosts.len(),
        r.seconds
    );
    for step in &r.steps {
        let _ = writeln!(out, "  {step}");
    }
    out
}
