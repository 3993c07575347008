//! The [`SinkWriter`]: batches the commits of every running crawl into one transaction per
//! sink, so storage cost is paid per batch, not per page.
//!
//! Sinks are synchronous and run on a blocking thread; crawls never wait on storage I/O except
//! through the bounded channel's backpressure. A crash loses at most the commits not yet
//! written: the batch being written and the channel's `batch` more.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::{Commit, Polled, QueuedUrl, RunHandle, Sink, SinkError, Taken};

/// The answer to a refill: the spilled rows read back.
pub type RefillReply = Result<Vec<QueuedUrl>, SinkError>;

/// The answer to a poll of a split run's inbox.
pub type PollReply = Result<Polled, SinkError>;

/// The answer to a take of a split run's page budget.
pub type TakeReply = Result<Taken, SinkError>;

/// What crawls hand to the writer, in order.
enum Record {
    Commit(Commit),
    /// Spilled rows to read back, after every commit sent before it is written.
    Refill {
        run: Arc<RunHandle>,
        host: String,
        limit: usize,
        reply: oneshot::Sender<RefillReply>,
    },
    /// A split run's inbox to read, after every commit sent before it is written.
    Poll {
        run: Arc<RunHandle>,
        limit: usize,
        census: Option<u32>,
        reply: oneshot::Sender<PollReply>,
    },
    /// Pages of a split run's page budget to take (see [`Sink::take_pages`]).
    Take {
        run: Arc<RunHandle>,
        want: u64,
        max: u64,
        share: u32,
        reply: oneshot::Sender<TakeReply>,
    },
    /// Answered once every commit sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// A handle crawls use to hand commits to the writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CommitSender(mpsc::Sender<Record>);

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::Commit(c) => c.fmt(f),
            Record::Refill { run, host, .. } => write!(f, "refill of run {}, host {host}", run.id),
            Record::Poll { run, .. } => write!(f, "poll of run {}", run.id),
            Record::Take { run, want, .. } => write!(f, "take of {want} pages of run {}", run.id),
            Record::Flush(_) => write!(f, "flush"),
        }
    }
}

impl CommitSender {
    /// Queues a commit; waits while the writer is behind. Fails once the writer has failed.
    pub async fn send(&self, commit: Commit) -> Result<(), Commit> {
        self.0.send(Record::Commit(commit)).await.map_err(|e| match e.0 {
            Record::Commit(c) => c,
            _ => unreachable!("a commit was sent"),
        })
    }

    /// Asks the state store for up to `limit` spilled rows of `host` in `run`, read once every
    /// commit sent before this call is written. The answer comes on the returned channel
    /// (closed if the writer fails).
    pub async fn refill(
        &self,
        run: Arc<RunHandle>,
        host: &str,
        limit: usize,
    ) -> Result<oneshot::Receiver<RefillReply>, SinkError> {
        self.ask(|reply| Record::Refill { run, host: host.to_owned(), limit, reply }).await
    }

    /// Sends a request to the writer; its answer comes on the returned channel (closed if the
    /// writer fails).
    async fn ask<T>(
        &self,
        record: impl FnOnce(oneshot::Sender<T>) -> Record,
    ) -> Result<oneshot::Receiver<T>, SinkError> {
        let (reply, answer) = oneshot::channel();
        self.0.send(record(reply)).await.map_err(|_| writer_stopped())?;
        Ok(answer)
    }

    /// Whether the writer has stopped (a sink failed): nothing can be stored any more.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits until the writer has stopped: it failed, or every sender was dropped and it ended.
    pub async fn closed(&self) {
        self.0.closed().await
    }

    /// Waits until every commit sent before this call is written (or the writer has failed:
    /// then an error).
    pub async fn flush(&self) -> Result<(), SinkError> {
        self.ask(Record::Flush).await?.await.map_err(|_| writer_stopped())
    }

    /// Asks the state store for up to `want` pages of a split run's `max_pages` budget, shared
    /// by `share` owners. The answer (the pages granted) comes on the returned channel.
    pub async fn take_pages(
        &self,
        run: Arc<RunHandle>,
        want: u64,
        max: u64,
        share: u32,
    ) -> Result<oneshot::Receiver<TakeReply>, SinkError> {
        self.ask(|reply| Record::Take { run, want, max, share, reply }).await
    }

    /// Asks the state store for up to `limit` inbox rows of a split run's partitions, read once
    /// every commit sent before this call is written.
    pub async fn poll(
        &self,
        run: Arc<RunHandle>,
        limit: usize,
        census: Option<u32>,
    ) -> Result<oneshot::Receiver<PollReply>, SinkError> {
        self.ask(|reply| Record::Poll { run, limit, census, reply }).await
    }
}

fn writer_stopped() -> SinkError {
    SinkError { sink: "writer", message: "the writer has stopped".into() }
}

/// The answer of the first sink that keeps (or shares) crawl state to a request for it.
fn state_answer<T>(
    sinks: &mut [Box<dyn Sink>],
    ask: impl FnMut(&mut Box<dyn Sink>) -> Option<Result<T, SinkError>>,
    none: &str,
) -> Result<T, SinkError> {
    sinks.iter_mut().find_map(ask).unwrap_or_else(|| Err(SinkError { sink: "writer", message: none.into() }))
}

/// Batches commits into the sinks on a background task: a batch is written when it is full, when
/// no commit arrived for `linger`, when a refill asks for what was written, and when every sender
/// is gone.
pub struct SinkWriter {
    tx: Option<mpsc::Sender<Record>>,
    task: JoinHandle<Result<u64, SinkError>>,
}

impl SinkWriter {
    /// Starts the writer. `batch` is the number of commits per transaction.
    pub fn spawn(sinks: Vec<Box<dyn Sink>>, batch: usize, linger: Duration) -> SinkWriter {
        let batch = batch.max(1);
        let (tx, rx) = mpsc::channel(batch);
        let task = tokio::spawn(write_loop(sinks, rx, batch, linger));
        SinkWriter { tx: Some(tx), task }
    }

    /// A sender for one crawl.
    pub fn sender(&self) -> CommitSender {
        CommitSender(self.tx.clone().expect("sender taken only by close"))
    }

    /// Waits until every sender is dropped, writes the last partial batch, and returns the
    /// number of items stored (a fenced run's are not).
    pub async fn close(mut self) -> Result<u64, SinkError> {
        self.tx = None;
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(SinkError { sink: "writer", message: e.to_string() }),
        }
    }
}

async fn write_loop(
    mut sinks: Vec<Box<dyn Sink>>,
    mut rx: mpsc::Receiver<Record>,
    batch: usize,
    linger: Duration,
) -> Result<u64, SinkError> {
    let mut written = 0u64;
    let has_refill = |buf: &[Record]| buf.iter().any(|r| !matches!(r, Record::Commit(_)));
    loop {
        let mut buf: Vec<Record> = Vec::with_capacity(batch);
        // Wait, without a timer, for the first record of the next batch.
        if rx.recv_many(&mut buf, batch).await == 0 {
            return Ok(written);
        }
        // Fill it until it is full, every sender is gone, `linger` has passed, or a refill
        // waits for what is written.
        let deadline = tokio::time::Instant::now() + linger;
        let mut closed = false;
        while buf.len() < batch && !has_refill(&buf) {
            let room = batch - buf.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut buf, room)).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let (back, result) = tokio::task::spawn_blocking(move || {
            let r = write_records(&mut sinks, buf);
            (sinks, r)
        })
        .await
        .map_err(|e| SinkError { sink: "writer", message: e.to_string() })?;
        sinks = back;
        match result {
            Ok(n) => written += n,
            Err(e) => {
                tracing::error!(error = %e, "sink failed; stopping");
                return Err(e);
            }
        }
        if closed {
            return Ok(written);
        }
    }
}

const KEEPS_NONE: &str = "no store keeps crawl state";
const SHARES_NONE: &str = "no store shares crawl state";

/// Writes records in order: runs of commits as one batch per sink, a refill after the commits
/// before it. Returns the items stored.
fn write_records(sinks: &mut [Box<dyn Sink>], records: Vec<Record>) -> Result<u64, SinkError> {
    let mut items = 0;
    let mut group: Vec<Commit> = Vec::new();
    let mut flush = |sinks: &mut [Box<dyn Sink>], group: &mut Vec<Commit>| -> Result<(), SinkError> {
        if group.is_empty() {
            return Ok(());
        }
        sinks.iter_mut().try_for_each(|s| s.write(group))?;
        let fenced = |c: &Commit| c.run.as_ref().is_some_and(|r| r.is_fenced());
        items += group.iter().filter(|c| c.item.is_some() && !fenced(c)).count() as u64;
        group.clear();
        Ok(())
    };
    for record in records {
        match record {
            Record::Commit(c) => group.push(c),
            Record::Refill { run, host, limit, reply } => {
                flush(sinks, &mut group)?;
                let _ = reply.send(state_answer(sinks, |s| s.refill(&run, &host, limit), KEEPS_NONE));
            }
            Record::Flush(reply) => {
                flush(sinks, &mut group)?;
                let _ = reply.send(());
            }
            Record::Poll { run, limit, census, reply } => {
                flush(sinks, &mut group)?;
                let _ = reply.send(state_answer(sinks, |s| s.poll(&run, limit, census), SHARES_NONE));
            }
            Record::Take { run, want, max, share, reply } => {
                flush(sinks, &mut group)?;
                let _ =
                    reply.send(state_answer(sinks, |s| s.take_pages(&run, want, max, share), SHARES_NONE));
            }
        }
    }
    flush(sinks, &mut group)?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::item::Item;

    /// Records the batches it is given.
    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl Sink for Recorder {
        fn write(&mut self, batch: &[Commit]) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    fn item(i: usize) -> Commit {
        let item = Item {
            task: "t".into(),
            table: "book".into(),
            url: format!("http://h/{i}"),
            crawled_at: "2026-01-01T00:00:00Z".into(),
            fields: Vec::new(),
        };
        Commit { item: Some(item), ..Commit::default() }
    }

    #[tokio::test]
    async fn batches_are_full_and_the_last_partial_one_is_written_on_close() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let writer =
            SinkWriter::spawn(vec![Box::new(Recorder(batches.clone()))], 100, Duration::from_secs(60));
        let tx = writer.sender();
        for i in 0..250 {
            tx.send(item(i)).await.unwrap();
        }
        tx.send(Commit::default()).await.unwrap();
        drop(tx);
        // Items counted, not commits; nothing waited for the 60 s linger.
        assert_eq!(writer.close().await.unwrap(), 250);
        assert_eq!(*batches.lock().unwrap(), [100, 100, 51]);
    }
}
