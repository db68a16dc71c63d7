//! Emergency promotion (`pgstrap dr promote --emergency-may-lose-data`): the primary side is gone (no member of it
//! answers). The standby side is promoted from what it has replayed, and the old side is fenced
//! first (see `fence`), so that its hosts, when they come back, never run a primary. What the
//! old primary acknowledged after the last replayed transaction may be missing: the report says
//! from when.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::fence::{self, Fence};
use super::{pair, writes_land, Side, Step};
use crate::clients::patroni::Patroni;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

/// What `dr promote --emergency-may-lose-data` did.
#[derive(Debug, Clone, Serialize)]
pub struct ForcedReport {
    pub promoted: String,
    pub fenced: String,
    pub steps: Vec<Step>,
    pub fence: Fence,
    /// From the start until writes land on the promoted side.
    pub seconds: f64,
}

/// Promote standby cluster `name` without its primary side: refused while any member of the
/// primary side answers (the planned promotion loses nothing then).
pub async fn promote(project: &Project, secrets: &Secrets, name: &str) -> Result<ForcedReport> {
    let (standby, primary) = pair(project, name)?;
    let patroni = Patroni::from_secrets(secrets)?;
    refuse_answering(project, &patroni, primary, name).await?;
    let new = Side::new(project, standby, &patroni, secrets);
    let leader = new.standby_leader().await?;
    let began = Instant::now();
    let mut steps = Vec::new();

    // 1. What the standby side has: the data-loss window starts after it.
    let at = Instant::now();
    let replayed = new
        .sql(
            &leader,
            "SELECT pg_last_wal_replay_lsn() || '|' || coalesce(pg_last_xact_replay_timestamp()::text, '')",
            "the last replayed position and transaction time",
        )
        .await?;
    let (replayed_lsn, replay_timestamp) = replayed
        .split_once('|')
        .map(|(l, t)| (l.to_owned(), t.to_owned()))
        .unwrap_or_default();
    steps.push(Step::since(
        format!(
            "{}: replayed up to {replayed_lsn} (last transaction committed {replay_timestamp}); writes {} acknowledged later may be lost",
            standby.name, primary.name
        ),
        at,
    ));

    // 2. The fence, before the promotion: the old side's hosts never start Patroni again.
    let at = Instant::now();
    let fence = Fence {
        fenced: primary.name.clone(),
        by: standby.name.clone(),
        at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        replayed_lsn,
        replay_timestamp,
    };
    set_fence(project, standby, &fence).await?;
    steps.push(Step::since(
        format!(
            "{}: fenced (its hosts will not start Patroni while {}'s etcd holds {})",
            primary.name,
            standby.name,
            fence::key(&primary.name)
        ),
        at,
    ));

    // 3. Promote.
    let at = Instant::now();
    let promoted = new
        .promote(&leader, &json!({"standby_cluster": null}))
        .await?;
    steps.push(Step::since(
        format!("{}: promoted ({promoted} is the primary)", standby.name),
        at,
    ));

    // 4. Writes land there.
    steps.push(writes_land(project, standby, &promoted, secrets).await?);
    new.close().await;
    Ok(ForcedReport {
        promoted: standby.name.clone(),
        fenced: primary.name.clone(),
        steps,
        fence,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// Refused while Patroni answers on any host of the primary side: it is not gone.
async fn refuse_answering(
    project: &Project,
    patroni: &Patroni,
    primary: &Cluster,
    name: &str,
) -> Result<()> {
    let old_port = project.port(primary, crate::project::Port::PatroniRestApi);
    for host in &primary.postgres {
        if patroni
            .status(&project.address(host), old_port)
            .await
            .is_ok()
        {
            return Err(Error::usage(
                format!(
                    "cluster {}: Patroni on {host} answers: the primary side is not gone",
                    primary.name
                ),
                Some(format!(
                    "use the planned promotion, which loses nothing: `pgstrap dr promote --cluster {name}` (without --emergency-may-lose-data)"
                )),
            ));
        }
    }
    Ok(())
}

/// The fence stored in the standby side's etcd (nothing is promoted when it cannot be).
async fn set_fence(project: &Project, standby: &Cluster, fence: &Fence) -> Result<()> {
    fence::set(project, standby, fence).await.map_err(|e| {
        Error::failure(
            format!(
                "cluster {}: cannot store the fence in its etcd: {e}",
                standby.name
            ),
            Some(
                "nothing was promoted; check the standby side's etcd (`pgstrap status -i INV`)"
                    .into(),
            ),
        )
    })
}
