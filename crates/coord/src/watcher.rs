//! List-then-watch of a key prefix with no gap: one `Get` of the prefix, then a watch from
//! that revision + 1. A cancelled or compacted watch, or a broken stream, reloads and
//! re-watches from the reloaded revision. The current state is published as a snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::Etcd;
use crate::retry::Backoff;

/// One key's value and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: i64,
    /// Revision of the last change.
    pub mod_revision: i64,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
}

/// The keys under a prefix (with the prefix removed) at a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The etcd revision the snapshot reflects.
    pub revision: i64,
    /// Keys without the prefix.
    pub entries: BTreeMap<String, Entry>,
}

/// A live view of a prefix. Cheap to clone.
#[derive(Clone)]
pub struct PrefixWatch {
    rx: watch::Receiver<Option<Arc<Snapshot>>>,
}

impl PrefixWatch {
    /// Starts loading and watching `prefix` until `stop` fires.
    pub fn spawn(etcd: Etcd, prefix: &str, stop: CancellationToken) -> PrefixWatch {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(run(etcd, prefix.to_owned(), tx, stop));
        PrefixWatch { rx }
    }

    /// The latest snapshot, once the first load has finished.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.rx.borrow().clone()
    }

    /// Waits for the first load and returns it.
    pub async fn ready(&mut self) -> Arc<Snapshot> {
        let r = self.rx.wait_for(Option::is_some).await.expect("watcher runs until stopped");
        r.clone().expect("checked above")
    }

    /// Waits until the snapshot changes; `None` once the watcher stopped.
    pub async fn changed(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.changed().await.ok()?;
        self.rx.borrow_and_update().clone()
    }

    /// Waits until a snapshot satisfies `pred` and returns it.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&Snapshot) -> bool) -> Option<Arc<Snapshot>> {
        let r = self.rx.wait_for(|s| s.as_ref().is_some_and(|s| pred(s))).await.ok()?;
        r.clone()
    }
}

/// The keys under `prefix` as etcd has them now (one read; no watch).
pub async fn read_prefix(etcd: &Etcd, prefix: &str) -> Result<Snapshot, crate::CoordError> {
    let p = prefix.to_owned();
    let resp = etcd
        .call("read prefix", |mut c| {
            let p = p.clone();
            async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut snap = Snapshot { revision: resp.header().map_or(0, |h| h.revision()), entries: BTreeMap::new() };
    for kv in resp.kvs() {
        snap.entries.insert(strip(prefix, kv.key()), entry(kv));
    }
    Ok(snap)
}

async fn run(etcd: Etcd, prefix: String, tx: watch::Sender<Option<Arc<Snapshot>>>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        if stop.is_cancelled() {
            return;
        }
        let loaded = tokio::select! {
            _ = stop.cancelled() => return,
            r = read_prefix(&etcd, &prefix) => r,
        };
        let mut snap = match loaded {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!(prefix, error = %e, "load failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        let _ = tx.send(Some(Arc::new(snap.clone())));
        let mut client = etcd.client();
        let options =
            WatchOptions::new().with_prefix().with_prev_key().with_start_revision(snap.revision + 1);
        let mut stream = match client.watch(prefix.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(prefix, error = %e, "watch failed; reloading");
                etcd.rotate();
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() || resp.compact_revision() > 0 {
                        tracing::info!(
                            prefix,
                            compact = resp.compact_revision(),
                            reason = resp.cancel_reason(),
                            "watch cancelled; reloading"
                        );
                        break;
                    }
                    if resp.events().is_empty() {
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = strip(&prefix, kv.key());
                        match ev.event_type() {
                            EventType::Put => {
                                snap.entries.insert(key, entry(kv));
                            }
                            EventType::Delete => {
                                snap.entries.remove(&key);
                            }
                        }
                        snap.revision = snap.revision.max(kv.mod_revision());
                    }
                    let _ = tx.send(Some(Arc::new(snap.clone())));
                }
                Ok(None) | Err(_) => {
                    tracing::debug!(prefix, "watch stream ended; reloading");
                    etcd.rotate();
                    break;
                }
            }
        }
    }
}

fn strip(prefix: &str, key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    key.strip_prefix(prefix).unwrap_or(&key).to_owned()
}

fn entry(kv: &etcd_client::KeyValue) -> Entry {
    Entry {
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}
