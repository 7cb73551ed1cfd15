//! Values kept per worker thread, so that a connection pool is only ever
//! used from the thread whose runtime runs its connections. The worker
//! threads themselves are started by [`crate::server::workers`]; this module
//! sits below it so that pools can use it without depending on the server.

use std::cell::Cell;

thread_local! {
    /// This thread's worker index; `None` off the workers.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the calling thread as worker `index` for the rest of its life.
pub fn enter(index: usize) {
    CURRENT.set(Some(index));
}

/// The calling thread's worker index; `None` off the workers.
pub fn current() -> Option<usize> {
    CURRENT.get()
}

/// One `T` per worker thread and one for every other thread.
#[derive(Debug)]
pub struct PerWorker<T>(Box<[T]>);

impl<T> PerWorker<T> {
    pub fn new(workers: usize, make: impl FnMut() -> T) -> Self {
        Self(std::iter::repeat_with(make).take(workers + 1).collect())
    }

    /// This thread's `T`.
    pub fn get(&self) -> &T {
        let index = current().map_or(0, |i| i + 1);
        &self.0[index % self.0.len()]
    }
}
