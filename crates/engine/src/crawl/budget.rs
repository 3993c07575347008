//! A crawl's page budget (`max_pages`). Counted here; in a split run the budget is the
//! run's, shared by its owners: each takes pages from it in the shared store as it goes
//! ([`crate::Sink::take_pages`]), so together they dispatch at most `max_pages`.

use tokio::task::JoinSet;

use super::{store_failed, writer_gone, Ctx};
use crate::store::{TakeReply, Taken};

/// Pages asked for at a time: an eighth of a worker's part of the budget, within these bounds.
const TAKE_MIN: u64 = 1;
const TAKE_MAX: u64 = 256;

pub(super) struct Budget {
    /// `max_pages` (0: no budget).
    max: u64,
    /// Requests dispatched so far in the run (a resumed run's handled ones included).
    dispatched: u64,
    shared: Option<Shared>,
}

struct Shared {
    /// Workers sharing the run.
    share: u32,
    /// Pages taken and not dispatched yet.
    allowance: u64,
    /// A take came back empty: the run's budget is spent.
    spent: bool,
    /// A take found the run over.
    over: bool,
    /// Pages asked for at a time: fewer as the budget runs low (a `2 x share`-th of what the
    /// last take left), so that when it is spent no owner holds many it will not use.
    chunk: u64,
    takes: JoinSet<Option<TakeReply>>,
}

impl Budget {
    /// The budget of a crawl; `share`: the workers of a split run (`None`: not split).
    pub(super) fn new(max: u64, share: Option<u32>) -> Budget {
        let shared = share.filter(|_| max > 0).map(|share| Shared {
            share: share.max(1),
            allowance: 0,
            spent: false,
            over: false,
            chunk: (max / (8 * u64::from(share.max(1)))).clamp(TAKE_MIN, TAKE_MAX),
            takes: JoinSet::new(),
        });
        Budget { max, dispatched: 0, shared }
    }

    /// Counts the requests a resumed run handled before (a budget counted here covers the
    /// whole run).
    pub(super) fn count_handled(&mut self, handled: u64) {
        self.dispatched = handled;
    }

    /// Whether one more request may be dispatched.
    pub(super) fn allows(&self) -> bool {
        match &self.shared {
            Some(s) => s.allowance > 0,
            None => self.max == 0 || self.dispatched < self.max,
        }
    }

    /// Whether no request will ever be allowed again.
    pub(super) fn exhausted(&self) -> bool {
        match &self.shared {
            Some(s) => s.spent && s.allowance == 0,
            None => !self.allows(),
        }
    }

    /// A request was dispatched.
    pub(super) fn spend(&mut self) {
        self.dispatched += 1;
        if let Some(s) = &mut self.shared {
            s.allowance = s.allowance.saturating_sub(1);
        }
    }

    /// Dispatched requests that were not fetched after all (left to the run's next owner):
    /// their pages are this share's again.
    pub(super) fn refund(&mut self, n: u64) {
        self.dispatched = self.dispatched.saturating_sub(n);
        if let Some(s) = &mut self.shared {
            s.allowance += n;
        }
    }

    /// Pages taken from a shared budget and not used (given back when the share stops).
    pub(super) fn unused(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.allowance)
    }

    /// Whether a take found the run over.
    pub(super) fn run_over(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.over)
    }

    /// Asks the store for more of a shared budget when this share runs low, has requests
    /// waiting and room to send them (a share that is idle or saturated takes nothing, so the
    /// others can use it).
    pub(super) async fn top_up(&mut self, ctx: &Ctx, waiting: bool, room: bool) {
        let Some(s) = &mut self.shared else { return };
        if s.spent || !s.takes.is_empty() || !waiting || !room || s.allowance > s.chunk / 2 {
            return;
        }
        let Some(run) = &ctx.run else { return };
        match ctx.commits.take_pages(run.clone(), s.chunk, self.max, s.share).await {
            Ok(answer) => {
                s.takes.spawn(async move { answer.await.ok() });
            }
            Err(_) => writer_gone(ctx),
        }
    }

    /// Whether a take is out (its answer comes through [`Budget::answer`]).
    pub(super) fn taking(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| !s.takes.is_empty())
    }

    /// Waits for the answer to the take out (never returns while none is).
    pub(super) async fn answer(&mut self) -> Option<Option<TakeReply>> {
        match &mut self.shared {
            Some(s) if !s.takes.is_empty() => s.takes.join_next().await.map(|r| r.ok().flatten()),
            _ => std::future::pending().await,
        }
    }

    /// Takes in the answers that came back, without waiting.
    pub(super) fn take_answers(&mut self, ctx: &Ctx) {
        while let Some(done) = self.shared.as_mut().and_then(|s| s.takes.try_join_next()) {
            self.answered(ctx, done.ok().flatten());
        }
    }

    /// Waits for the answer to a take still out, so that what it granted is counted as
    /// unused (and given back) when the share stops.
    pub(super) async fn finish(&mut self, ctx: &Ctx) {
        if self.taking() {
            if let Some(reply) = self.answer().await {
                self.answered(ctx, reply);
            }
        }
    }

    /// Takes in what a take got.
    fn took(&mut self, t: Taken) {
        let Some(s) = &mut self.shared else { return };
        if t.over {
            s.over = true;
            s.spent = true;
        } else if t.granted == 0 {
            s.spent = true;
        } else {
            s.allowance += t.granted;
            s.chunk = s.chunk.min((t.left / (2 * u64::from(s.share))).max(1));
        }
    }

    /// Takes in an answer.
    pub(super) fn answered(&mut self, ctx: &Ctx, reply: Option<TakeReply>) {
        match reply {
            Some(Ok(t)) => self.took(t),
            Some(Err(e)) => store_failed(ctx, "take pages of the run's budget", &e),
            None => writer_gone(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_budget_counts_dispatches() {
        let mut b = Budget::new(3, None);
        b.count_handled(2);
        assert!(b.allows() && !b.exhausted());
        b.spend();
        assert!(!b.allows() && b.exhausted());
        let mut unlimited = Budget::new(0, Some(4));
        unlimited.count_handled(u64::MAX - 1);
        assert!(unlimited.allows() && !unlimited.exhausted());
    }

    #[test]
    fn requests_left_to_the_next_owner_are_given_back() {
        let mut b = Budget::new(1000, Some(2));
        b.shared.as_mut().unwrap().allowance = 2;
        b.spend();
        b.spend();
        assert!(!b.allows());
        // One of the two was dispatched but left unfetched by a drain.
        b.refund(1);
        assert_eq!(b.unused(), 1);
        let mut local = Budget::new(2, None);
        local.spend();
        local.spend();
        local.refund(1);
        assert!(local.allows());
    }

    #[test]
    fn a_shared_budget_allows_what_was_taken() {
        let mut b = Budget::new(1000, Some(2));
        assert!(!b.allows() && !b.exhausted(), "nothing taken yet");
        let s = b.shared.as_mut().unwrap();
        assert_eq!(s.chunk, 62);
        s.allowance = 2;
        b.spend();
        assert!(b.allows());
        b.spend();
        assert!(!b.allows() && !b.exhausted(), "more may be taken");
        b.shared.as_mut().unwrap().spent = true;
        assert!(b.exhausted());
        assert_eq!(b.unused(), 0);
    }

    #[test]
    fn takes_add_up_and_ask_for_less_as_the_budget_runs_low() {
        let mut b = Budget::new(1000, Some(2));
        b.took(Taken { granted: 62, left: 900, over: false });
        assert_eq!((b.unused(), b.shared.as_ref().unwrap().chunk), (62, 62));
        b.took(Taken { granted: 10, left: 40, over: false });
        assert_eq!((b.unused(), b.shared.as_ref().unwrap().chunk), (72, 10));
        b.took(Taken { granted: 1, left: 0, over: false });
        assert_eq!(b.shared.as_ref().unwrap().chunk, 1);
        assert!(!b.exhausted());
        b.took(Taken::default());
        assert!(!b.exhausted() && !b.run_over(), "spent, with pages still held");
        for _ in 0..73 {
            b.spend();
        }
        assert!(b.exhausted());
        let mut over = Budget::new(1000, Some(2));
        over.took(Taken { over: true, ..Taken::default() });
        assert!(over.run_over() && over.exhausted());
    }
}
