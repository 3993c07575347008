//! The coordination loop of a master: a session, its master record, the campaign, and while
//! leading, the reconciliation that moves resources off dead workers. Leader-only work runs
//! under the leadership token, which fires the moment the session is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crawler_coord::assign::{plan_moves, plan_partitions, plan_swap};
use crawler_coord::resources::{self, ResourceRecord};
use crawler_coord::{keys, Backoff, CoordError, Leadership, MasterRecord, Session};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::service::{live_workers, LeaderState, Master};

/// Runs until `stop` fires; then resigns (if leading) and revokes the session.
pub(crate) async fn coordinate(
    master: Master,
    tx: watch::Sender<Option<LeaderState>>,
    stop: CancellationToken,
) {
    let etcd = master.0.etcd.clone();
    let cfg = &master.0.cfg;
    let record = MasterRecord {
        id: cfg.id.clone(),
        http: cfg.http_advertise.clone(),
        grpc: cfg.grpc_advertise.clone(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    // The lease of the last session taken for lost, until etcd says it is gone.
    let mut lost: Option<i64> = None;
    while !stop.is_cancelled() {
        if let Some(lease) = lost {
            // It may live on in etcd (renewals failed before it expired, or a restarted etcd
            // gave every lease a new TTL): its election key would hold every new candidacy,
            // ours and the others', back until it expires. Revoked first.
            match crawler_coord::revoke_lease(&etcd, lease).await {
                Err(CoordError::Unavailable(e)) => {
                    tracing::warn!(lease, error = %e, "cannot revoke the lost session's lease yet; retrying");
                    tokio::select! { _ = stop.cancelled() => return, _ = backoff.wait() => continue }
                }
                // Revoked, or not found: expired already.
                _ => lost = None,
            }
        }
        let session = match Session::start(&etcd, cfg.lease_ttl).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start an etcd session; retrying");
                tokio::select! { _ = stop.cancelled() => return, _ = backoff.wait() => continue }
            }
        };
        let put = crawler_coord::put_leased_at(&etcd, &keys::master(&cfg.id), &record, &session).await;
        let put_at = match put {
            Ok(rev) => rev,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register the master; retrying");
                session.close().await;
                tokio::select! { _ = stop.cancelled() => return, _ = backoff.wait() => continue }
            }
        };
        backoff.reset();
        master.0.forwarder.set_lease(session.lease());
        // Our record deleted behind our back (`etcdctl del`) while the session lives: put it
        // back, so every master keeps finding the leader's addresses.
        let keep = crawler_coord::keep_leased(
            &etcd,
            master.0.views.masters.clone(),
            keys::MASTERS,
            &cfg.id,
            &record,
            &session,
            put_at,
            &|_| {},
            &stop,
        );
        let lead_while_alive = lead_while_alive(&master, &tx, &session, &stop);
        tokio::join!(keep, lead_while_alive);
        if stop.is_cancelled() {
            session.close().await;
            return;
        }
        tracing::warn!(id = %cfg.id, "session lost; starting a new one");
        lost = Some(session.lease());
    }
}

/// Campaigns and leads for as long as the session lives; resigns when `stop` fires.
async fn lead_while_alive(
    master: &Master,
    tx: &watch::Sender<Option<LeaderState>>,
    session: &Session,
    stop: &CancellationToken,
) {
    let etcd = master.0.etcd.clone();
    let cfg = &master.0.cfg;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    {
        while session.is_alive() && !stop.is_cancelled() {
            let lead = match Leadership::campaign(&etcd, session, &cfg.id, stop).await {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            tracing::info!(id = %cfg.id, "became the leader");
            let state = LeaderState { fence: lead.fence().clone(), token: lead.token() };
            let _ = tx.send(Some(state.clone()));
            reconcile(master, &state, stop).await;
            let _ = tx.send(None);
            if stop.is_cancelled() {
                lead.resign(&etcd).await;
                tracing::info!(id = %cfg.id, "resigned");
                break;
            }
            tracing::warn!(id = %cfg.id, "lost leadership");
        }
    }
}

/// While leading: whenever workers or resources change, move resources off dead workers and
/// keep split tasks' partitions spread evenly over the live ones.
async fn reconcile(master: &Master, lead: &LeaderState, stop: &CancellationToken) {
    let mut workers = master.0.views.workers.clone();
    let mut resources = master.0.views.resources.clone();
    let mut election = master.0.views.election.clone();
    let own_key = String::from_utf8_lossy(&lead.fence.key).into_owned();
    let mut last_balance = std::time::Instant::now();
    let mut swapped = BTreeMap::new();
    loop {
        // Our election key gone (lease revoked or expired, key deleted): we no longer lead,
        // whatever the keep-alive has noticed so far.
        if let Some(snap) = election.current() {
            let present = snap.entries.keys().any(|k| format!("{}/{k}", keys::ELECTION) == own_key);
            if !present && snap.revision >= lead.fence.revision {
                tracing::warn!("our election key is gone: stepping down");
                lead.token.cancel();
                return;
            }
        }
        let mut result = move_orphans(master, lead).await;
        if result.is_ok() && last_balance.elapsed() >= BALANCE_EVERY {
            last_balance = std::time::Instant::now();
            result = balance_work(master, lead, &mut swapped).await;
        }
        if let Err(e) = result {
            match e {
                CoordError::NotLeader => {
                    lead.token.cancel();
                    return;
                }
                e => tracing::warn!(error = %e, "reassignment failed; will retry"),
            }
        }
        tokio::select! {
            _ = lead.token.cancelled() => return,
            _ = stop.cancelled() => return,
            _ = workers.changed() => {}
            _ = resources.changed() => {}
            _ = election.changed() => {}
            _ = tokio::time::sleep(BALANCE_EVERY) => {}
        }
    }
}

/// How often the leader looks at the work waiting in split tasks' partitions.
const BALANCE_EVERY: Duration = Duration::from_secs(2);

/// A gap in queued requests between two workers of a split task below which no partitions are
/// swapped (a swap restarts both shares: a pause of a fraction of a second).
const MIN_GAP: u64 = 500;

/// The least time between a change of a task's assignment (an add, a join or leave, a swap)
/// and a swap (the shares restart and their queues settle first).
const SWAP_PAUSE: Duration = Duration::from_secs(6);

/// Evens out the work of split tasks: per task, at most one swap of two partitions between the
/// worker with the most requests waiting and the one with the fewest (see `plan_swap`), from
/// the queues the workers report. Partition counts stay even, so joins and leaves plan as
/// before; the swapped partitions move like any other (drained, released, epochs bumped).
async fn balance_work(
    master: &Master,
    lead: &LeaderState,
    swapped: &mut BTreeMap<String, (std::time::Instant, i64)>,
) -> Result<(), CoordError> {
    let views = &master.0.views;
    let (Some(res), Some(wk)) = (views.resources.current(), views.workers.current()) else { return Ok(()) };
    let workers: BTreeMap<String, String> =
        live_workers(Some(&wk)).into_iter().map(|(id, w)| (id, w.address)).collect();
    for (name, e) in &res.entries {
        let Ok(mut rec) = ResourceRecord::decode(name, &e.value) else { continue };
        let Some(parts) = rec.partitions.as_mut() else { continue };
        // Not within SWAP_PAUSE of the task's last assignment change (an add, a join or leave, a
        // swap): its shares are restarting and their queues settling.
        let seen = swapped.entry(name.clone()).or_insert((std::time::Instant::now(), e.mod_revision));
        if seen.1 != e.mod_revision {
            *seen = (std::time::Instant::now(), e.mod_revision);
        }
        if seen.0.elapsed() < SWAP_PAUSE {
            continue;
        }
        if parts.workers().len() < 2 || parts.owners.iter().any(|o| !workers.contains_key(o)) {
            continue;
        }
        let Some(queued) = master.0.stats.partition_queues(name, &parts.owners, &workers).await else {
            continue;
        };
        let Some((give, back)) = plan_swap(&parts.owners, &queued, MIN_GAP) else { continue };
        let mut owners = parts.owners.clone();
        owners.swap(give as usize, back as usize);
        let (from, to) = (owners[back as usize].clone(), owners[give as usize].clone());
        parts.reassign(owners);
        rec.assigned_node = parts.owners[parts.home as usize].clone();
        let _assigning = master.0.assign.lock().await;
        if resources::update(&master.0.etcd, &lead.fence, &rec, e.mod_revision).await? {
            tracing::info!(
                resource = %name,
                %from,
                %to,
                partition = give,
                queued = queued[&give],
                back = back,
                "partitions swapped to even out the work"
            );
        }
    }
    Ok(())
}

async fn move_orphans(master: &Master, lead: &LeaderState) -> Result<(), CoordError> {
    let _assigning = master.0.assign.lock().await;
    let views = &master.0.views;
    let (Some(res), Some(wk)) = (views.resources.current(), views.workers.current()) else { return Ok(()) };
    let live: BTreeSet<String> = live_workers(Some(&wk)).into_keys().collect();
    let mut records: BTreeMap<String, (ResourceRecord, i64)> = BTreeMap::new();
    for (name, e) in &res.entries {
        match ResourceRecord::decode(name, &e.value) {
            Ok(r) => {
                records.insert(name.clone(), (r, e.mod_revision));
            }
            Err(err) => tracing::warn!(resource = %name, error = %err, "skipping an unreadable resource"),
        }
    }
    // Split tasks: partitions of dead workers to live ones, and a fair share to new workers.
    for (name, (rec, rev)) in records.iter().filter(|(_, (r, _))| r.partitions.is_some()) {
        let mut rec = rec.clone();
        let Some(parts) = rec.partitions.as_mut() else { continue };
        if live.is_empty() || !parts.reassign(plan_partitions(&parts.owners, &live)) {
            continue;
        }
        rec.assigned_node = parts.owners[parts.home as usize].clone();
        let per_worker = crate::service::partitions_per_worker(parts);
        if resources::update(&master.0.etcd, &lead.fence, &rec, *rev).await? {
            tracing::info!(resource = %name, ?per_worker, "partitions reassigned");
        }
    }
    let assigned: BTreeMap<String, String> = records
        .iter()
        .filter(|(_, (r, _))| r.partitions.is_none())
        .map(|(n, (r, _))| (n.clone(), r.assigned_node.clone()))
        .collect();
    for (name, to) in plan_moves(&assigned, &live) {
        let (mut rec, rev) = records.remove(&name).expect("planned from these records");
        let from = std::mem::replace(&mut rec.assigned_node, to.clone());
        if resources::update(&master.0.etcd, &lead.fence, &rec, rev).await? {
            tracing::info!(resource = %name, %from, %to, "resource moved off a dead worker");
        }
    }
    Ok(())
}
