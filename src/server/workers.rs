//! The data path's threads: one single-threaded runtime per core.
//!
//! A connection is served start to finish on one worker, and the pooled
//! upstream and validate connections its requests use belong to that worker
//! too (see [`crate::worker_local::PerWorker`]), so a request never wakes another thread. A
//! work-stealing scheduler would move tasks between cores and pay a futex
//! wake-up for each hand-off; at an edge proxy's request rates that costs more
//! than the balance it buys. Balance comes from placing each new connection
//! on the worker with the fewest open ones.
//!
//! Accept loops, the admin listener, signals and timers of the control plane
//! stay on the runtime that called [`crate::server::start`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Hands connections to the workers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Workers {
    workers: Arc<[Worker]>,
    /// Where the search for the least-loaded worker starts, so that ties
    /// (all idle) spread round-robin.
    next: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    open: AtomicUsize,
}

/// Keeps the worker threads running; dropping it stops them, cancelling
/// whatever they still run.
#[derive(Debug)]
pub struct WorkerThreads {
    _stop: Vec<oneshot::Sender<()>>,
}

/// Starts `count` worker threads, each with its own runtime.
pub async fn start(count: usize) -> std::io::Result<(Workers, WorkerThreads)> {
    let mut workers = Vec::with_capacity(count);
    let mut stops = Vec::with_capacity(count);
    for index in 0..count {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, handle) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("gatekeeper-worker-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                crate::worker_local::enter(index);
                let _ = ready.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Connections still open are cut, not waited for: shutdown
                // has drained them already, or its grace period is over.
                runtime.shutdown_background();
            })?;
        let handle = handle
            .await
            .map_err(|_| std::io::Error::other("a worker thread died while starting"))??;
        workers.push(Worker {
            handle,
            open: AtomicUsize::new(0),
        });
        stops.push(stop);
    }
    Ok((
        Workers {
            workers: workers.into(),
            next: Arc::new(AtomicUsize::new(0)),
        },
        WorkerThreads { _stop: stops },
    ))
}

impl Workers {
    /// Runs `connection` on the worker with the fewest open connections.
    /// The future is first polled there, so it may register sockets with
    /// that worker's reactor.
    pub fn spawn<F>(&self, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let count = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let chosen = (0..count)
            .map(|i| (start + i) % count)
            .min_by_key(|&i| self.workers[i].open.load(Ordering::Relaxed))
            .unwrap_or(0);
        self.workers[chosen].open.fetch_add(1, Ordering::Relaxed);
        let counted = CountedConnection {
            workers: self.workers.clone(),
            index: chosen,
        };
        // `map` rather than an async block: an async block would hold the
        // connection future twice (as captured and as awaited), doubling
        // every connection's task.
        self.workers[chosen]
            .handle
            .spawn(connection.map(move |()| drop(counted)));
    }
}

/// Counts a connection as open on its worker until dropped (when the
/// connection ends, or is cut by the worker's shutdown).
struct CountedConnection {
    workers: Arc<[Worker]>,
    index: usize,
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.workers[self.index]
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker_local::{PerWorker, current};

    #[tokio::test]
    async fn connections_spread_over_the_workers_and_each_runs_on_its_own_thread() {
        let (workers, threads) = start(2).await.expect("workers start");
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let report = report.clone();
            let mut released = released.clone();
            // Stays open (counted) until released, like a connection.
            workers.spawn(async move {
                let me = (std::thread::current().name().map(str::to_owned), current());
                let _ = report.send(me);
                let _ = released.wait_for(|r| *r).await;
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(reports.recv().await.expect("a report"));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                (Some("gatekeeper-worker-0".to_owned()), Some(0)),
                (Some("gatekeeper-worker-0".to_owned()), Some(0)),
                (Some("gatekeeper-worker-1".to_owned()), Some(1)),
                (Some("gatekeeper-worker-1".to_owned()), Some(1)),
            ]
        );
        let _ = release.send(true);
        drop(threads);
    }

    #[tokio::test]
    async fn per_worker_gives_each_thread_its_own_value() {
        let (workers, _threads) = start(2).await.expect("workers start");
        let values = Arc::new(PerWorker::new(2, {
            let mut n = 0;
            move || {
                n += 1;
                n
            }
        }));
        assert_eq!(*values.get(), 1, "off the workers");
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..2 {
            let (values, report) = (values.clone(), report.clone());
            workers.spawn(async move {
                let _ = report.send(*values.get());
            });
        }
        let mut seen = [
            reports.recv().await.expect("a report"),
            reports.recv().await.expect("a report"),
        ];
        seen.sort();
        assert_eq!(seen, [2, 3]);
    }
}
