//! Per-task figures for the dashboard and `crawler ctl stats`, pulled from the workers'
//! `GET /tasks` when asked, at most once a second per master (answers are cached for that
//! long). Pulled rather than pushed: the figures change many times a second and would be
//! write load on etcd for nothing while nobody looks; workers need not know the masters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// How long pulled figures are served before the workers are asked again.
const FRESH: Duration = Duration::from_secs(1);
/// How long one worker may take to answer.
const PULL_TIMEOUT: Duration = Duration::from_secs(1);

/// One resource with the figures of the crawl running it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskFigures {
    /// Resource (task) name.
    pub name: String,
    /// Worker it is assigned to (of a split task: the one holding the seeds' partition).
    pub worker: String,
    /// A split task: every worker holding a share (its figures are their sums).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    /// That worker's address, when it is alive.
    pub address: String,
    /// `running`, `finished`, or `waiting` (no live worker, or not started there yet).
    pub state: String,
    /// Whether the worker answered the pull (a registered worker that does not answer is
    /// probably dead, its lease not yet expired).
    pub worker_answered: bool,
    /// Responses received.
    pub pages: u64,
    /// Items stored.
    pub items: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests waiting.
    pub queued: u64,
    /// When the crawl started, RFC 3339 (empty while waiting).
    pub started_at: String,
    /// Average fetch latency, milliseconds.
    pub fetch_ms: f64,
    /// When the resource was added, Unix milliseconds.
    pub creation_time: i64,
    /// When these figures were pulled from the worker, Unix milliseconds (rates are computed
    /// between two different pulls).
    pub sampled_ms: i64,
}

/// A task as a worker's `GET /tasks` shows it.
#[derive(Clone, Debug, Deserialize)]
struct WorkerTask {
    name: String,
    pages: u64,
    items: u64,
    errors: u64,
    queued: u64,
    started_at: String,
    finished: bool,
    #[serde(default)]
    fetch_ms: f64,
    /// A split task's share: its partitions and their queues.
    #[serde(default)]
    partitions: Option<Vec<PartitionQueue>>,
}

/// A partition a worker holds and the requests waiting in it there.
#[derive(Clone, Debug, Deserialize)]
struct PartitionQueue {
    part: u32,
    queued: u64,
}

/// The workers' answers last pulled: when, when in Unix milliseconds, and each one's tasks.
type Pulled = (Instant, i64, BTreeMap<String, Option<Vec<WorkerTask>>>);

/// The figures last pulled, and the client that pulls them.
pub struct Stats {
    client: reqwest::Client,
    last: tokio::sync::Mutex<Option<Pulled>>,
}

impl Default for Stats {
    fn default() -> Self {
        let client = reqwest::Client::builder().timeout(PULL_TIMEOUT).no_proxy().build().unwrap_or_default();
        Stats { client, last: tokio::sync::Mutex::new(None) }
    }
}

/// A resource as stored: name, assigned worker, creation time.
pub struct Assigned {
    /// Resource name.
    pub name: String,
    /// Worker id.
    pub worker: String,
    /// A split task: every worker holding partitions (empty otherwise).
    pub shares: Vec<String>,
    /// Unix milliseconds.
    pub creation_time: i64,
}

impl Stats {
    /// A worker's `GET /tasks/{name}` answer (figures and recent failures and items), if it
    /// answers.
    pub async fn pull_detail(&self, address: &str, name: &str) -> Option<serde_json::Value> {
        let url = format!("http://{address}/tasks/{name}");
        let resp = self.client.get(&url).send().await.ok()?.error_for_status().ok()?;
        serde_json::from_slice(&resp.bytes().await.ok()?).ok()
    }

    /// Figures for every resource, pulled from `workers` (id -> address) unless the last pull
    /// is fresh. Concurrent callers share one pull.
    pub async fn figures(
        &self,
        resources: Vec<Assigned>,
        workers: BTreeMap<String, String>,
    ) -> Vec<TaskFigures> {
        // The workers' answers are cached; the figures are built from the resources as they are
        // now (an added task shows at once, a deleted one goes at once).
        let wanted: std::collections::BTreeSet<&String> = resources
            .iter()
            .flat_map(|r| std::iter::once(&r.worker).chain(&r.shares))
            .filter(|w| workers.contains_key(*w))
            .collect();
        let (sampled_ms, by_worker) = self.answers(&workers, &wanted).await;
        resources
            .into_iter()
            .map(|r| {
                let address = workers.get(&r.worker).cloned().unwrap_or_default();
                let answer = by_worker.get(&r.worker).and_then(Option::as_ref);
                let holders = if r.shares.is_empty() { vec![r.worker.clone()] } else { r.shares.clone() };
                let tasks: Vec<&WorkerTask> = holders
                    .iter()
                    .filter_map(|w| by_worker.get(w).and_then(Option::as_ref))
                    .filter_map(|ts| ts.iter().find(|t| t.name == r.name))
                    .collect();
                let mut f = TaskFigures {
                    name: r.name,
                    worker: r.worker,
                    workers: r.shares,
                    address,
                    state: "waiting".into(),
                    creation_time: r.creation_time,
                    sampled_ms,
                    worker_answered: answer.is_some(),
                    ..TaskFigures::default()
                };
                if !tasks.is_empty() {
                    // A split task is finished once every share says so: a holder that did not
                    // answer, or does not list it yet (a share starting), may still be crawling.
                    let every = tasks.len() == holders.len() && tasks.iter().all(|t| t.finished);
                    f.state = if every { "finished" } else { "running" }.into();
                    for t in &tasks {
                        f.pages += t.pages;
                        f.items += t.items;
                        f.errors += t.errors;
                        f.queued += t.queued;
                        f.fetch_ms += t.fetch_ms / tasks.len() as f64;
                    }
                    f.started_at = tasks.iter().map(|t| t.started_at.clone()).min().unwrap_or_default();
                }
                f
            })
            .collect()
    }

    /// Requests waiting per partition of the split task `name`, as the workers holding them
    /// report (pulled unless the last pull is fresh); `owners` says who holds each partition,
    /// and only a worker's report of its own partitions counts. `None` unless every partition
    /// was reported (a share starting or a worker not answering: no decision on half a view).
    pub async fn partition_queues(
        &self,
        name: &str,
        owners: &[String],
        workers: &BTreeMap<String, String>,
    ) -> Option<BTreeMap<u32, u64>> {
        let wanted: std::collections::BTreeSet<&String> = owners.iter().collect();
        let (_, answers) = self.answers(workers, &wanted).await;
        let mut queued = BTreeMap::new();
        for (worker, tasks) in &answers {
            let share = tasks.as_ref().and_then(|ts| ts.iter().find(|t| t.name == name && !t.finished));
            for p in share.and_then(|t| t.partitions.as_ref()).into_iter().flatten() {
                if owners.get(p.part as usize) == Some(worker) {
                    queued.insert(p.part, p.queued);
                }
            }
        }
        (queued.len() == owners.len()).then_some(queued)
    }

    /// The wanted workers' answers, and when they were sampled (Unix milliseconds): the last
    /// pull's while it is fresh and has them all, else a new pull. Concurrent callers share
    /// one pull.
    async fn answers(
        &self,
        workers: &BTreeMap<String, String>,
        wanted: &std::collections::BTreeSet<&String>,
    ) -> (i64, BTreeMap<String, Option<Vec<WorkerTask>>>) {
        let mut last = self.last.lock().await;
        let fresh = last.as_ref().filter(|(at, _, answers)| {
            at.elapsed() < FRESH && wanted.iter().all(|w| answers.contains_key(*w))
        });
        if let Some((_, sampled_ms, answers)) = fresh {
            return (*sampled_ms, answers.clone());
        }
        let answers = self.pull(workers, wanted).await;
        let sampled_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        *last = Some((Instant::now(), sampled_ms, answers.clone()));
        (sampled_ms, answers)
    }

    /// Each wanted worker's `GET /tasks` answer (`None`: it did not answer), in parallel.
    async fn pull(
        &self,
        workers: &BTreeMap<String, String>,
        wanted: &std::collections::BTreeSet<&String>,
    ) -> BTreeMap<String, Option<Vec<WorkerTask>>> {
        let mut pulls = JoinSet::new();
        for (id, address) in workers.iter().filter(|(id, _)| wanted.contains(id)) {
            let (client, id, url) = (self.client.clone(), id.clone(), format!("http://{address}/tasks"));
            pulls.spawn(async move {
                let tasks = async {
                    let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
                    let body = resp
                        .error_for_status()
                        .map_err(|e| e.to_string())?
                        .bytes()
                        .await
                        .map_err(|e| e.to_string())?;
                    serde_json::from_slice::<Vec<WorkerTask>>(&body).map_err(|e| e.to_string())
                };
                match tasks.await {
                    Ok(t) => (id, Some(t)),
                    Err(e) => {
                        tracing::debug!(worker = %id, error = %e, "cannot pull task figures");
                        (id, None)
                    }
                }
            });
        }
        let mut by_worker: BTreeMap<String, Option<Vec<WorkerTask>>> = BTreeMap::new();
        while let Some(done) = pulls.join_next().await {
            if let Ok((id, tasks)) = done {
                by_worker.insert(id, tasks);
            }
        }
        by_worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's `/tasks` on 127.0.0.1 answering `body` to every request (the fixture's
    /// scripted server; dropped, it stops).
    async fn worker(body: &'static str) -> crawler_fixture::Fixture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let script = [("/tasks".to_owned(), vec![crawler_fixture::Page::body("application/json", body)])];
        crawler_fixture::Fixture::start_scripted(Default::default(), listener, script.into_iter().collect())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_split_task_is_finished_only_when_every_share_says_so() {
        let done = r#"[{"name":"t","pages":5,"items":5,"errors":0,"queued":0,"started_at":"2026-01-01T00:00:00Z","finished":true}]"#;
        let w1 = worker(done).await;
        let w1_addr = w1.addr().to_string();
        // w2's address refuses connections (a worker not answering, or its share starting).
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let w2 = gone.local_addr().unwrap().to_string();
        drop(gone);
        let workers = BTreeMap::from([("w1".to_owned(), w1_addr), ("w2".to_owned(), w2)]);
        let split = || Assigned {
            name: "t".into(),
            worker: "w1".into(),
            shares: vec!["w1".into(), "w2".into()],
            creation_time: 1,
        };
        let figures = Stats::default().figures(vec![split()], workers.clone()).await;
        // One share reported finished, the other said nothing: still running (it said
        // finished before, with the one share's figures).
        assert_eq!(figures[0].state, "running");
        assert_eq!(figures[0].pages, 5);
        // Whole, on w1 alone: finished.
        let whole = Assigned { shares: Vec::new(), ..split() };
        let figures = Stats::default().figures(vec![whole], workers).await;
        assert_eq!(figures[0].state, "finished");
    }
}
