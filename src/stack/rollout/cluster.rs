//! One cluster's part of the rollout (steps 4 to 6 of the module above): its etcd gate, the
//! Patroni leader then the replicas, the dynamic configuration, PgBouncer's auth, the VIP.

use super::*;
use crate::exec::timed;

/// What the steps of [`converge_cluster`] after etcd share: one cluster, over open connections.
struct ClusterRun<'a> {
    project: &'a Project,
    cluster: &'a Cluster,
    secrets: &'a Secrets,
    open: &'a BTreeMap<String, Session>,
    options: &'a Options,
    patroni: Patroni,
    rest_port: u16,
}

impl ClusterRun<'_> {
    /// An action of this cluster, for the report.
    fn action(&self, host: Option<&str>, what: String) -> Action {
        Action {
            cluster: self.cluster.name.clone(),
            host: host.map(str::to_owned),
            what,
        }
    }

    /// Step 4: Patroni on every member (the designated first one alone when the cluster is new),
    /// gate: a leader and every replica streaming. Returns the leader's host, or None for a
    /// restore target that waits for `pgstrap restore --into`.
    async fn start_members(&self, report: &mut RolloutReport) -> Result<Option<String>> {
        let (project, cluster, options) = (self.project, self.cluster, self.options);
        let leader_path = if cluster.standby_of.is_some() {
            "/standby-leader"
        } else {
            "/primary"
        };
        let running = patroni_running(cluster, self.open).await?;
        let view = self.patroni.view(project, cluster).await;
        if view.as_ref().is_some_and(|v| v.pause) {
            stage(
                options,
                format!(
                    "warning: cluster {} is in maintenance mode (`pgstrap pause`): its configuration is applied, but Patroni does not fail over on its own until `pgstrap resume`",
                    cluster.name
                ),
            );
        }
        let has_leader = view.as_ref().is_some_and(|v| v.leader().is_some());
        let mut to_start: Vec<String> = cluster
            .postgres
            .iter()
            .filter(|h| !running.contains(*h))
            .cloned()
            .collect();
        if !has_leader && running.is_empty() && cluster.restore_of.is_some() {
            // A restore target is created by `pgstrap restore --into`, never by initdb.
            stage(
                options,
                format!(
                    "{}: prepared; waits for `pgstrap restore --cluster {} --into {}`",
                    cluster.name,
                    cluster.restore_of.as_deref().unwrap_or("?"),
                    cluster.name
                ),
            );
            return Ok(None);
        }
        if !has_leader && running.is_empty() {
            // A new cluster: the designated first member bootstraps it alone.
            let first = cluster.postgres[0].clone();
            self.bootstrap(&first, leader_path, report).await?;
            to_start.retain(|h| h != &first);
        }
        if !to_start.is_empty() {
            let leader = match (has_leader, view.as_ref()) {
                (true, Some(view)) => view.leader().and_then(|m| {
                    crate::project::names::member_hosts(project, cluster).remove(&m.name)
                }),
                _ => cluster.postgres.first().cloned(),
            };
            if let Some(leader) = leader {
                self.prepare_slots(&leader, &to_start).await;
            }
            self.start_others(&to_start, report).await?;
        }
        let leader = wait_streaming(project, cluster, &self.patroni, self.open, options).await?;
        stage(
            options,
            format!(
                "{}: Patroni: leader {leader}, every replica streaming",
                cluster.name
            ),
        );
        Ok(Some(leader))
    }

    /// A new cluster: Patroni started on its first member alone, gate: it leads.
    async fn bootstrap(
        &self,
        first: &str,
        leader_path: &str,
        report: &mut RolloutReport,
    ) -> Result<()> {
        stage(
            self.options,
            format!(
                "{}: Patroni: bootstrapping on {first}, waiting for {leader_path}",
                self.cluster.name
            ),
        );
        start_patroni(self.open, first).await?;
        report.actions.push(self.action(
            Some(first),
            "started Patroni (bootstraps the cluster)".into(),
        ));
        wait_leading(
            self.project,
            self.cluster,
            &self.patroni,
            first,
            leader_path,
            self.options.gate_timeout,
            "see `journalctl -u patroni` on that host; for a standby cluster, check that the primary side is reachable and its slot exists",
        )
        .await
    }

    /// Patroni started on the members that do not run it, all at once.
    async fn start_others(&self, to_start: &[String], report: &mut RolloutReport) -> Result<()> {
        stage(
            self.options,
            format!(
                "{}: Patroni: starting {}",
                self.cluster.name,
                to_start.join(", ")
            ),
        );
        let starts = to_start.iter().map(|h| start_patroni(self.open, h));
        for result in futures::future::join_all(starts).await {
            result?;
        }
        for host in to_start {
            report
                .actions
                .push(self.action(Some(host), "started Patroni".into()));
        }
        Ok(())
    }

    /// The replication slots of the members about to start, made on the leader first (best
    /// effort). Patroni makes a member's slot on the leader's next loop (`loop_wait`) and the new
    /// replica's WAL receiver retries every 5 s until it exists: made now, a new replica streams
    /// as soon as its base backup is in place, ~10 s sooner. They are the slots Patroni expects
    /// (its names for the members), so it keeps them once the members register.
    async fn prepare_slots(&self, leader: &str, to_start: &[String]) {
        let Some(session) = self.open.get(leader) else {
            // Not connected this run (`--host`): Patroni makes the slots on its next loop.
            tracing::debug!("replication slots left to Patroni: no session to {leader}");
            return;
        };
        let slots: Vec<String> = to_start
            .iter()
            .filter_map(|h| self.project.inventory.hosts.get(h))
            .map(|host| {
                let member = crate::project::names::member_name(self.project, host, self.cluster);
                // Patroni's slot names are `[a-z0-9_]` only: safe to quote as literals.
                format!("'{}'", crate::project::names::patroni_slot(&member))
            })
            .collect();
        let sql = format!(
            "SELECT pg_create_physical_replication_slot(s) FROM unnest(ARRAY[{}]::text[]) AS s \
             WHERE s NOT IN (SELECT slot_name FROM pg_replication_slots)",
            slots.join(", ")
        );
        let port = self
            .project
            .port(self.cluster, crate::project::Port::PostgreSQL)
            .to_string();
        let made = crate::clients::postgres::psql_port(
            session,
            "postgres",
            &port,
            &sql,
            "replication slots for the members to start",
        )
        .await;
        if let Err(e) = made {
            // Patroni makes them on its next loop anyway: only the head start is lost.
            tracing::debug!("replication slots left to Patroni: {e}");
        }
    }

    /// The etcd leadership moved off the PostgreSQL primary's host (best effort).
    async fn keep_etcd_leader_off(
        &self,
        endpoints: &[String],
        leader: &str,
        report: &mut RolloutReport,
    ) {
        match crate::clients::etcd::keep_leader_off(endpoints, &self.project.address(leader)).await {
            Ok(Some(to)) => report.actions.push(self.action(
                None,
                format!("moved the etcd leadership to {to}, off the PostgreSQL primary's host (a power cut of that host then fails over one lease renewal sooner)"),
            )),
            Ok(None) => {}
            Err(e) => tracing::debug!("etcd leadership left where it is: {e}"),
        }
    }

    /// The dynamic configuration follows the inventory (a standby cluster's too: it runs with its
    /// primary side's parameters); slots for standbys. Returns the members where PostgreSQL shows
    /// a changed parameter pending a restart.
    async fn converge_dynamic_config(
        &self,
        leader: &str,
        report: &mut RolloutReport,
    ) -> Result<Vec<String>> {
        let (project, cluster, secrets) = (self.project, self.cluster, self.secrets);
        let leader_address = project.address(leader);
        let found = super::dynamic_config::change(
            project,
            cluster,
            &self.patroni,
            &leader_address,
            self.rest_port,
        )
        .await?;
        let Some(change) = found.patch else {
            return Ok(Vec::new());
        };
        // Said as `plan` says it (the restart impact follows from the pending members).
        let restart = super::dynamic_config::restart_only(
            project,
            cluster,
            secrets,
            &leader_address,
            &change,
        )
        .await
        .unwrap_or_default();
        self.patroni
            .patch_config(&leader_address, self.rest_port, &change)
            .await
            .map_err(|e| Error::failure(format!("cluster {}: {e}", cluster.name), None))?;
        report.actions.push(self.action(
            None,
            super::dynamic_config::summary(&change, &found.live, &restart, &cluster.postgres),
        ));
        let Some(Value::Object(parameters)) =
            change.get("postgresql").and_then(|p| p.get("parameters"))
        else {
            return Ok(Vec::new());
        };
        stage(
            self.options,
            format!(
                "{}: waiting for the new settings on every member",
                cluster.name
            ),
        );
        crate::stack::restart::wait_applied(
            project,
            cluster,
            secrets,
            parameters,
            self.options.gate_timeout,
        )
        .await
    }

    /// Step 5: PgBouncer's auth role and lookup function on the primary (not on a standby
    /// cluster's leader: it gets them by replication).
    async fn ensure_pgbouncer_auth(&self, leader: &str, report: &mut RolloutReport) -> Result<()> {
        let Some(session) = self
            .open
            .get(leader)
            .filter(|_| self.cluster.standby_of.is_none())
        else {
            return Ok(());
        };
        let user = self
            .project
            .cluster_vars(self.cluster)
            .get_str("pgbouncer.auth_user")
            .unwrap_or_else(|| "pgbouncer_auth".into());
        let password = self
            .secrets
            .get("pgbouncer_auth_password")
            .ok_or_else(|| Error::failure("no pgbouncer_auth_password", None))?;
        if postgres::ensure_pgbouncer_auth(session, &user, password).await? {
            report.actions.push(self.action(
                Some(leader),
                format!("created PgBouncer's auth role {user} and pgbouncer.get_auth()"),
            ));
        }
        Ok(())
    }

    /// Step 6, on a primary cluster with a VIP: gate: the VIP's write port reaches the primary.
    async fn wait_vip(&self) -> Result<()> {
        let cluster = self.cluster;
        let (Some(vip), None) = (cluster.vip, &cluster.standby_of) else {
            return Ok(());
        };
        let vip = vip.addr().to_string();
        let port = |p| self.project.port(cluster, p);
        let write_port = port(crate::project::Port::HaproxyWrite);
        stage(
            self.options,
            format!(
                "{}: waiting for the VIP {vip}:{write_port} to reach the primary",
                cluster.name
            ),
        );
        self.vip_reaches(&vip, write_port, "the primary", false)
            .await?;
        // The read port: HAProxy marks a replica up only after its health checks pass, which
        // can be seconds after the replica streams; verification and clients read there next.
        if cluster.postgres.len() > 1 {
            let read_port = port(crate::project::Port::HaproxyRead);
            self.vip_reaches(&vip, read_port, "a replica", true).await?;
        }
        Ok(())
    }

    /// Gate: a connection to `vip:port` lands on a server in recovery (`recovery`: a replica) or
    /// not (the primary).
    async fn vip_reaches(&self, vip: &str, port: u16, whom: &str, recovery: bool) -> Result<()> {
        let (secrets, wanted) = (self.secrets, if recovery { "t" } else { "f" });
        wait_for(
            &format!("the VIP {vip}:{port} to reach {whom} of {}", self.cluster.name),
            self.options.gate_timeout,
            Duration::from_millis(500),
            "check `journalctl -u keepalived` and `-u haproxy` on the balancers, and HAProxy's stats page",
            || async move {
                match verify::connect(vip, port, secrets).await {
                    Ok(client) => match verify::scalar(&client, "SELECT pg_is_in_recovery()").await {
                        Ok(Some(v)) if v == wanted => Poll::Ready(()),
                        Ok(_) if recovery => Poll::NotYet("reached the primary".into()),
                        Ok(_) => Poll::NotYet("reached a server in recovery (a replica)".into()),
                        Err(e) => Poll::NotYet(e),
                    },
                    Err(e) => Poll::NotYet(e),
                }
            },
        )
        .await
    }

    /// The members pending a restart: restarted one by one when `--rolling-restart` allows it,
    /// else reported.
    async fn restart_pending(
        &self,
        leader: &str,
        pg_pending: &[String],
        report: &mut RolloutReport,
    ) -> Result<()> {
        let (project, cluster) = (self.project, self.cluster);
        let pending = crate::stack::restart::pending_after(
            project,
            cluster,
            &self.patroni,
            pg_pending,
            Duration::from_secs(30),
        )
        .await;
        if pending.is_empty() || !self.options.rolling_restart {
            report.pending_restart.extend(
                pending
                    .iter()
                    .map(|m| format!("{m} (cluster {})", cluster.name)),
            );
            return Ok(());
        }
        stage(
            self.options,
            format!(
                "{}: rolling restart of {}",
                cluster.name,
                pending.join(", ")
            ),
        );
        let done = crate::stack::restart::rolling_restart(
            project,
            cluster,
            self.secrets,
            &self.patroni,
            leader,
            &pending,
            crate::stack::restart::Restart::Pending,
            self.options.gate_timeout,
        )
        .await?;
        for step in done {
            report.actions.push(self.action(None, step));
        }
        Ok(())
    }

    /// Backups: the stanza and a first full backup, once the leader archives (`leader` is the one
    /// before a rolling restart, used when the cluster shows none now).
    async fn converge_backups(&self, leader: String, report: &mut RolloutReport) -> Result<()> {
        let (project, cluster) = (self.project, self.cluster);
        // The leader now (a rolling restart above may have switched over).
        let leader = self
            .patroni
            .view(project, cluster)
            .await
            .and_then(|v| v.leader().map(|m| m.name.clone()))
            .and_then(|member| {
                crate::project::names::member_hosts(project, cluster).remove(&member)
            })
            .unwrap_or(leader);
        let archiving = match self.open.get(&leader) {
            Some(session) => {
                postgres::psql(
                    session,
                    "postgres",
                    "SHOW archive_mode",
                    "is the WAL archive on",
                )
                .await?
                .trim()
                    == "on"
            }
            None => false,
        };
        stage(
            self.options,
            if archiving {
                format!(
                    "{}: backups: the stanza and a first full backup",
                    cluster.name
                )
            } else {
                format!("{}: backups wait for archive_mode, which needs a restart (`pgstrap apply --rolling-restart`)", cluster.name)
            },
        );
        for what in crate::stack::backup::converge(cluster, self.open, archiving).await? {
            report.actions.push(self.action(None, what));
        }
        Ok(())
    }
}

/// Which DB hosts of the cluster run Patroni now (`systemctl is-active`).
pub(super) async fn patroni_running(
    cluster: &Cluster,
    open: &BTreeMap<String, Session>,
) -> Result<Vec<String>> {
    let checks = cluster.postgres.iter().filter_map(|host| {
        open.get(host).map(|session| async move {
            let output = session
                .output(&RemoteCommand::new(&[
                    "systemctl",
                    "is-active",
                    "--quiet",
                    "patroni",
                ]))
                .await;
            (host.clone(), output)
        })
    });
    let mut running = Vec::new();
    for (host, output) in futures::future::join_all(checks).await {
        if output
            .map_err(|e| Error::failure(e.to_string(), None))?
            .success()
        {
            running.push(host);
        }
    }
    Ok(running)
}

pub(crate) async fn start_patroni(open: &BTreeMap<String, Session>, host: &str) -> Result<()> {
    let session = open
        .get(host)
        .ok_or_else(|| Error::failure(format!("{host}: not connected"), None))?;
    session
        .run(&crate::ops::start_command("start", "patroni"))
        .await
        .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
    Ok(())
}

pub(crate) async fn converge_cluster(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    open: &BTreeMap<String, Session>,
    options: &Options,
    report: &mut RolloutReport,
) -> Result<()> {
    // 3. etcd.
    let endpoints = wait_etcd(project, cluster, options).await?;
    // 4. Patroni.
    let run = ClusterRun {
        project,
        cluster,
        secrets,
        open,
        options,
        patroni: Patroni::from_secrets(secrets)?,
        rest_port: project.port(cluster, crate::project::Port::PatroniRestApi),
    };
    let Some(leader) = timed("Patroni members", run.start_members(report)).await? else {
        return Ok(());
    };
    timed(
        "etcd leader",
        run.keep_etcd_leader_off(&endpoints, &leader, report),
    )
    .await;
    let pg_pending = timed(
        "dynamic configuration",
        run.converge_dynamic_config(&leader, report),
    )
    .await?;
    // 5. PgBouncer's auth function, on the primary (a standby cluster gets it by replication).
    timed("PgBouncer auth", run.ensure_pgbouncer_auth(&leader, report)).await?;
    // 6. The VIP answers and its write port reaches the primary.
    timed("VIP", run.wait_vip()).await?;
    // Parameters that need a restart: a rolling restart when allowed, else reported.
    if cluster.standby_of.is_none() {
        timed(
            "pending restarts",
            run.restart_pending(&leader, &pg_pending, report),
        )
        .await?;
    }
    // Backups: the stanza and a first full backup, once the primary archives.
    if cluster.repository().is_some() && cluster.standby_of.is_none() {
        timed("backups", run.converge_backups(leader, report)).await?;
    }
    Ok(())
}
