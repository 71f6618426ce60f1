//! Recording a history from many concurrent clients (threads or async tasks).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::linearize::{self, CheckResult, Model, Operation, Outcome};

/// A shared, append-only record of operations, with one monotonic clock for all clients.
///
/// Cloning is cheap and every clone records into the same history, so each client task gets its
/// own clone. [`History::call`] records the call and returns a [`Pending`] token;
/// [`Pending::ret`] records the answer. A token dropped without an answer (the request timed out,
/// the task was cancelled) leaves the operation with an unknown outcome, and so does a check run
/// while the token is still alive.
///
/// The lock is held only to append or update one entry, never across an `.await`.
pub struct History<I, O> {
    shared: Arc<Shared<I, O>>,
}

struct Shared<I, O> {
    start: Instant,
    operations: Mutex<Vec<Operation<I, O>>>,
}

impl<I, O> Clone for History<I, O> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I, O> History<I, O> {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                start: Instant::now(),
                operations: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Nanoseconds since the history was created, on the clock all operations are timed with.
    pub fn now(&self) -> u64 {
        u64::try_from(self.shared.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` is about to issue `input`. Call this before sending the request,
    /// and answer the returned token after the response arrived.
    pub fn call(&self, client: usize, input: I) -> Pending<I, O> {
        let mut operations = self.lock();
        // Timed under the lock, so the order of the entries is the order of their call times.
        let call = self.now();
        operations.push(Operation::unknown(client, input, call));
        Pending {
            history: self.clone(),
            index: operations.len() - 1,
        }
    }

    /// How many operations were recorded (including those still pending).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A copy of the operations so far, in call order; pending ones have an unknown outcome.
    pub fn operations(&self) -> Vec<Operation<I, O>>
    where
        I: Clone,
        O: Clone,
    {
        self.lock().clone()
    }

    /// Checks the history so far with [`linearize::check`]. Pending operations count as having an
    /// unknown outcome. Recording waits while the check runs, so run it after the clients stop.
    pub fn check<M>(&self, model: &M) -> CheckResult<M::State>
    where
        M: Model<Input = I, Output = O>,
    {
        linearize::check(model, &self.lock())
    }

    /// Like [`History::check`], with an explicit step budget.
    pub fn check_with_budget<M>(&self, model: &M, budget: u64) -> CheckResult<M::State>
    where
        M: Model<Input = I, Output = O>,
    {
        linearize::check_with_budget(model, &self.lock(), budget)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Operation<I, O>>> {
        // A panicking client must not hide the history from the check.
        self.shared
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An operation that was called and has not been answered yet.
///
/// Answer it with [`Pending::ret`]; dropping it (or calling [`Pending::unknown`]) leaves its
/// outcome unknown: it may have taken effect at any time after its call, or never.
#[must_use = "answer the operation with `ret`, or drop it to leave its outcome unknown"]
pub struct Pending<I, O> {
    history: History<I, O>,
    index: usize,
}

impl<I, O> Pending<I, O> {
    /// Records the answer, timed now. Call this as soon as the response arrived.
    pub fn ret(self, output: O) {
        let at = self.history.now();
        let mut operations = self.history.lock();
        operations[self.index].outcome = Outcome::Returned { output, at };
    }

    /// Leaves the outcome unknown; the same as dropping the token, spelled out.
    pub fn unknown(self) {}

    /// The operation's index in the history (and in [`History::operations`]).
    pub fn index(&self) -> usize {
        self.index
    }
}
