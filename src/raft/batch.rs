//! A batching stage: callers queue items, one task gathers every item waiting at that
//! moment into a batch, runs it, and hands each caller its own answer.
//!
//! Nothing waits on purpose: a lone item starts a batch of one at once. Batching comes
//! from the bound on batches running at once: while they all run, items arriving queue
//! up, and the next batch takes them together. So a quiet node adds no latency, and a
//! busy one pays the per-batch costs once for many items.
//!
//! An item whose caller stopped waiting before its batch began (its deadline passed, or
//! its client went away) is dropped, not run: it was already answered with a refusal,
//! and an overloaded node that ran such items anyway would spend itself on writes nobody
//! waits for, while those still waited for time out behind them in turn.

use std::future::Future;

use futures_util::stream::{FuturesUnordered, StreamExt};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

/// How large batches grow and how many run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// Most bytes of items in one batch, as the callers count them; a batch of one item
    /// may be larger (its caller has checked it against its own cap).
    pub(super) max_bytes: usize,
    /// Most items in one batch (at least one).
    pub(super) max_items: usize,
    /// Batches running at once (at least one).
    pub(super) in_flight: usize,
}

/// An item waiting for a batch, with where its answer goes.
struct Queued<K, I, O> {
    key: K,
    item: I,
    bytes: usize,
    reply: oneshot::Sender<O>,
}

/// The queue in front of one batching task; cheap to share, the task ends when it is
/// dropped (after the batches running then have answered).
pub(super) struct Batcher<K, I, O> {
    queue: mpsc::UnboundedSender<Queued<K, I, O>>,
}

impl<K, I, O> Batcher<K, I, O>
where
    K: PartialEq + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// Starts the gathering task on `runtime`. `run` gets the items of one batch, all with
    /// the same key, and returns one answer per item, in order.
    /// Items dropped because their caller had stopped waiting are counted in `abandoned`.
    pub(super) fn start<F, Fut>(
        runtime: &tokio::runtime::Handle,
        shape: Shape,
        abandoned: Counter,
        run: F,
    ) -> Self
    where
        F: Fn(K, Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::unbounded_channel();
        runtime.spawn(gather(waiting, shape, abandoned, run));
        Self { queue }
    }

    /// Queues `item`, of `bytes`, for the next batch of items with key `key`, and waits
    /// for its answer; `None` when the task has stopped or the batch gave no answer for it.
    /// The queue is bounded by its callers: each waits here for its own item.
    pub(super) async fn submit(&self, key: K, item: I, bytes: usize) -> Option<O> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued {
                key,
                item,
                bytes,
                reply,
            })
            .ok()?;
        answer.await.ok()
    }
}

/// Takes waiting items into batches of `shape` and runs up to `shape.in_flight` of them
/// at once, until every sender is gone.
async fn gather<K, I, O, F, Fut>(
    mut waiting: mpsc::UnboundedReceiver<Queued<K, I, O>>,
    shape: Shape,
    abandoned: Counter,
    run: F,
) where
    K: PartialEq,
    F: Fn(K, Vec<I>) -> Fut,
    Fut: Future<Output = Vec<O>>,
{
    let mut running = FuturesUnordered::new();
    // An item taken from the queue that did not fit the batch before it.
    let mut held: Option<Queued<K, I, O>> = None;
    loop {
        if running.len() >= shape.in_flight.max(1) {
            // Every slot is busy: items arriving meanwhile queue up for the next batch.
            running.next().await;
            continue;
        }
        let first = match held.take() {
            Some(first) => first,
            None => tokio::select! {
                first = waiting.recv() => match first {
                    Some(first) => first,
                    None => break,
                },
                Some(()) = running.next(), if !running.is_empty() => continue,
            },
        };
        if first.reply.is_closed() {
            abandoned.inc();
            continue;
        }
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < shape.max_items {
            let Ok(next) = waiting.try_recv() else { break };
            if next.reply.is_closed() {
                abandoned.inc();
                continue;
            }
            if next.key != batch[0].key || bytes.saturating_add(next.bytes) > shape.max_bytes {
                held = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        let mut key = None;
        for queued in batch {
            key.get_or_insert(queued.key);
            replies.push(queued.reply);
            items.push(queued.item);
        }
        let Some(key) = key else { continue };
        let answers = run(key, items);
        running.push(async move {
            for (reply, answer) in replies.into_iter().zip(answers.await) {
                // A caller that stopped waiting no longer needs its answer.
                let _ = reply.send(answer);
            }
        });
    }
    // The queue is closed: let the batches under way answer.
    while running.next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A batcher whose batches wait for `gate` before answering each item doubled.
    fn doubling(
        shape: Shape,
        gate: Arc<tokio::sync::Semaphore>,
        abandoned: Counter,
    ) -> (Batcher<u8, u32, u32>, Seen) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let batcher = Batcher::start(
            &tokio::runtime::Handle::current(),
            shape,
            abandoned,
            move |_key, items: Vec<u32>| {
                log.lock().unwrap().push(items.clone());
                let gate = gate.clone();
                async move {
                    let _pass = gate.acquire().await.unwrap();
                    items.into_iter().map(|i| i * 2).collect()
                }
            },
        );
        (batcher, seen)
    }

    /// Submits from a task of its own, and lets it queue its item before returning (the
    /// test runtime runs one task at a time, in order).
    async fn submit(
        batcher: &Arc<Batcher<u8, u32, u32>>,
        key: u8,
        item: u32,
        bytes: usize,
    ) -> tokio::task::JoinHandle<Option<u32>> {
        let batcher = batcher.clone();
        let task = tokio::spawn(async move { batcher.submit(key, item, bytes).await });
        tokio::task::yield_now().await;
        task
    }

    const SHAPE: Shape = Shape {
        max_bytes: 100,
        max_items: 3,
        in_flight: 1,
    };

    /// A batcher of [`SHAPE`] whose first batch (item 1 alone, key 0) runs and holds the
    /// only slot until permits are added to the gate.
    async fn one_running() -> (
        Arc<Batcher<u8, u32, u32>>,
        Seen,
        Arc<tokio::sync::Semaphore>,
        tokio::task::JoinHandle<Option<u32>>,
    ) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (batcher, seen) = doubling(SHAPE, gate.clone(), Counter::default());
        let batcher = Arc::new(batcher);
        let first = submit(&batcher, 0, 1, 10).await;
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        (batcher, seen, gate, first)
    }

    #[tokio::test]
    async fn items_waiting_while_a_batch_runs_go_together_and_each_gets_its_own_answer() {
        let (batcher, seen, gate, first) = one_running().await;
        let mut waiting = Vec::new();
        for (k, i, b) in [(0, 2, 10), (0, 3, 10), (0, 4, 10), (0, 5, 10), (1, 6, 10)] {
            waiting.push(submit(&batcher, k, i, b).await);
        }
        gate.add_permits(100);
        assert_eq!(first.await.unwrap(), Some(2));
        let answers: Vec<_> = futures_util::future::join_all(waiting)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(answers, vec![Some(4), Some(6), Some(8), Some(10), Some(12)]);
        // At most three items a batch, and never two keys in one.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![1], vec![2, 3, 4], vec![5], vec![6]]
        );
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_byte_cap_but_a_lone_large_item_still_goes() {
        let (batcher, seen, gate, first) = one_running().await;
        let mut waiting = Vec::new();
        for (i, b) in [(2, 60), (3, 60), (4, 500)] {
            waiting.push(submit(&batcher, 0, i, b).await);
        }
        gate.add_permits(100);
        first.await.unwrap();
        for w in waiting {
            assert!(w.await.unwrap().is_some());
        }
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![1], vec![2], vec![3], vec![4]]
        );
    }

    #[tokio::test]
    async fn items_whose_callers_stopped_waiting_are_dropped_not_run() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let abandoned = Counter::default();
        let (batcher, seen) = doubling(SHAPE, gate.clone(), abandoned.clone());
        let batcher = Arc::new(batcher);
        let first = submit(&batcher, 0, 1, 10).await;
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let kept = submit(&batcher, 0, 2, 10).await;
        let gone = submit(&batcher, 0, 3, 10).await;
        let gone_too = submit(&batcher, 0, 4, 10).await;
        let last = submit(&batcher, 0, 5, 10).await;
        // Their callers stop waiting (a deadline, a client gone) while the first runs.
        for caller in [gone, gone_too] {
            caller.abort();
            assert!(caller.await.unwrap_err().is_cancelled());
        }
        gate.add_permits(100);
        assert_eq!(first.await.unwrap(), Some(2));
        assert_eq!(kept.await.unwrap(), Some(4));
        assert_eq!(last.await.unwrap(), Some(10));
        // The next batch took the two still waited for, and the dropped ones took no room.
        assert_eq!(*seen.lock().unwrap(), vec![vec![1], vec![2, 5]]);
        assert_eq!(abandoned.get(), 2);
    }

    #[tokio::test]
    async fn a_lone_item_does_not_wait_for_company() {
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let (batcher, seen) = doubling(SHAPE, gate, Counter::default());
        assert_eq!(batcher.submit(0, 21, 1).await, Some(42));
        assert_eq!(batcher.submit(0, 1, 1).await, Some(2));
        assert_eq!(*seen.lock().unwrap(), vec![vec![21], vec![1]]);
    }
}
