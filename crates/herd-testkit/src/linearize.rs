//! A linearizability checker for recorded histories of concurrent operations.
//!
//! A history is linearizable when every operation can be given a single instant between its call
//! and its return at which it took effect, such that applying the operations one by one in the
//! order of those instants, starting from [`Model::init`], produces exactly the recorded outputs.
//!
//! # Algorithm
//!
//! The search is the one of Wing & Gong, with Lowe's memoization, in the form Porcupine uses:
//!
//! - Every operation contributes a *call* entry and (when it returned) a *return* entry. All
//!   entries are sorted by time into a doubly linked list; at equal times calls come first, so
//!   two operations whose return and call share a timestamp count as concurrent.
//! - An operation can be placed next (linearized at the current point) exactly when its call
//!   entry lies before the first return entry still in the list: it was called before every
//!   operation not yet placed had returned, so nothing forces those to precede it.
//! - The search walks the list from the front. At a call entry it asks the model whether the
//!   operation is possible in the current state with its recorded output. If so it *lifts* the
//!   operation (unlinks its call and return entries), pushes the previous state on a stack and
//!   starts again from the front. If not it moves on to the next entry.
//! - Reaching a return entry means the operation it belongs to can no longer be postponed and none
//!   of the placeable operations worked: the most recent placement is undone (its entries are
//!   relinked, which is cheap because undoing happens in exactly the reverse order of lifting)
//!   and the walk continues after that operation's call entry.
//! - Lowe's memoization: the outcome of the rest of the search depends only on *which* operations
//!   were placed (a bitset) and the model state reached, not on the order they were placed in.
//!   Each such configuration is explored at most once, which turns the factorial search into one
//!   bounded by the number of distinct (set, state) pairs.
//! - A nondeterministic step may lead to several states. Each is a configuration of its own; they
//!   are tried in turn before the operation is unplaced again.
//! - The history is linearizable once every operation with a known outcome is placed; it is not
//!   once the stack is empty and the walk hits a return entry.
//!
//! # Unknown outcomes
//!
//! An operation whose outcome is unknown (a request that timed out, a connection reset) may have
//! taken effect at any time after its call, or never. As in Jepsen and Porcupine it is treated as
//! returning at +∞ with whatever output the model allows ([`Model::step_unknown`]): it has a call
//! entry but no return entry, so it never forces anything, can be placed anywhere after its call,
//! and need not be placed at all for the history to count as linearizable. Placing an unknown
//! operation that leaves the state unchanged is skipped outright: leaving it unplaced keeps every
//! option the placement would have given (it can still be placed later, and being unplaced it
//! blocks nothing), so such a placement never helps, and skipping it keeps a pile of timed-out
//! reads from multiplying the search.
//!
//! # Bounds
//!
//! The problem is NP-complete in general. The search counts its steps (one per placement attempt
//! or undo) and answers [`CheckResult::Unknown`] once a budget is exceeded, rather than running
//! for hours. A linearizable register history whose writes write distinct values is checked in
//! close to linear time. Refuting a history costs more, because every order of the operations
//! before the violation is explored: with eight concurrent clients, a violation a thousand
//! operations in takes on the order of a million steps (a fraction of a second, some tens of MB).

use std::collections::HashMap;
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;

/// Steps [`check`] allows before giving up with [`CheckResult::Unknown`].
pub const DEFAULT_BUDGET: u64 = 5_000_000;

/// How many of the last operations of the longest linearizable prefix a failure report shows.
const REPORT_TAIL: usize = 8;

/// A sequential specification of the object under test.
///
/// The state must be a plain value (cloneable, comparable and hashable) because the checker
/// remembers which states it has already explored.
pub trait Model {
    /// The object's state between operations.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asked for.
    type Input: Debug;
    /// What the client was told.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The states the object can be in after applying `input` to `state` and answering `output`.
    ///
    /// Empty when that answer is impossible in that state. A deterministic model returns at most
    /// one state (returning an `Option` is the natural choice); a nondeterministic one returns
    /// every possibility and the checker tries each.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> impl IntoIterator<Item = Self::State>;

    /// The states the object can be in after applying `input` to `state` with any output the
    /// model allows: the effects an operation with an unknown outcome may have had.
    fn step_unknown(
        &self,
        state: &Self::State,
        input: &Self::Input,
    ) -> impl IntoIterator<Item = Self::State>;
}

/// One recorded operation.
///
/// Times are nanoseconds on one monotonic clock shared by all clients (for example nanoseconds
/// since a common [`std::time::Instant`]); [`crate::History`] records them that way. The call time
/// must be taken before the request is sent and the return time after the answer arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued the operation; only used in reports.
    pub client: usize,
    /// What the client asked for.
    pub input: I,
    /// When the client issued it.
    pub call: u64,
    /// How it ended.
    pub outcome: Outcome<O>,
}

/// How an [`Operation`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The client got an answer.
    Returned {
        /// The answer.
        output: O,
        /// When it arrived.
        at: u64,
    },
    /// The client got no answer (a timeout, a reset connection): the operation may have taken
    /// effect at any time after its call, or never.
    Unknown,
}

impl<I, O> Operation<I, O> {
    /// An operation that was called at `call` and answered `output` at `ret`.
    pub fn returned(client: usize, input: I, output: O, call: u64, ret: u64) -> Self {
        Self {
            client,
            input,
            call,
            outcome: Outcome::Returned { output, at: ret },
        }
    }

    /// An operation that was called at `call` and whose outcome is unknown.
    pub fn unknown(client: usize, input: I, call: u64) -> Self {
        Self {
            client,
            input,
            call,
            outcome: Outcome::Unknown,
        }
    }

    /// The output, if the operation returned.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }

    /// The return time, if the operation returned.
    pub fn ret(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Returned { at, .. } => Some(at),
            Outcome::Unknown => None,
        }
    }

    /// Whether the operation returned (its outcome is known).
    pub fn is_returned(&self) -> bool {
        matches!(self.outcome, Outcome::Returned { .. })
    }
}

impl<I: Debug, O: Debug> fmt::Display for Operation<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Returned { output, at } => write!(
                f,
                "client {}: {:?} -> {:?} [{}..{}]",
                self.client, self.input, output, self.call, at
            ),
            Outcome::Unknown => write!(
                f,
                "client {}: {:?} -> ? [{}..]",
                self.client, self.input, self.call
            ),
        }
    }
}

/// The answer of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum CheckResult<S> {
    /// The history is linearizable.
    Linearizable {
        /// A witness: indices into the history in the order the operations took effect. Every
        /// returned operation appears once; an operation with an unknown outcome appears if it
        /// took effect in this witness and is absent if it never did.
        order: Vec<usize>,
    },
    /// No order of the operations explains the outputs.
    NotLinearizable(Box<Violation<S>>),
    /// The search exceeded its step budget before reaching an answer.
    Unknown {
        /// The budget that was exceeded.
        steps: u64,
    },
}

impl<S> CheckResult<S> {
    /// Whether the history was shown to be linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable { .. })
    }

    /// Whether the history was shown not to be linearizable.
    pub fn is_violation(&self) -> bool {
        matches!(self, Self::NotLinearizable(_))
    }
}

impl<S: Debug> CheckResult<S> {
    /// Panics with the failure report unless the history was shown to be linearizable.
    #[track_caller]
    pub fn assert_linearizable(&self) {
        if !self.is_linearizable() {
            panic!("{self}");
        }
    }
}

impl<S: Debug> fmt::Display for CheckResult<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linearizable { order } => {
                write!(f, "linearizable ({} operations took effect)", order.len())
            }
            Self::NotLinearizable(violation) => f.write_str(&violation.report),
            Self::Unknown { steps } => write!(
                f,
                "linearizability unknown: the search exceeded its budget of {steps} steps"
            ),
        }
    }
}

/// Why a history is not linearizable: where the search got furthest, and what could not follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<S> {
    /// The longest linearizable prefix found: indices into the history, in the order the
    /// operations took effect.
    pub prefix: Vec<usize>,
    /// The model state after that prefix.
    pub state: S,
    /// Operations with a known outcome that could have taken effect next after the prefix (they
    /// were called before the earliest remaining return) but with which no complete order exists.
    pub unplaced: Vec<usize>,
    /// The remaining operation with the earliest return: one of the placeable operations had to
    /// take effect before it returned.
    pub deadline: Option<usize>,
    /// A human-readable account of all of the above, with the operations spelled out.
    pub report: String,
}

impl<S> fmt::Display for Violation<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.report)
    }
}

/// Checks `history` against `model` with the [`DEFAULT_BUDGET`].
///
/// # Panics
///
/// If an operation returns before it is called.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> CheckResult<M::State> {
    check_with_budget(model, history, DEFAULT_BUDGET)
}

/// Checks `history` against `model`, giving up with [`CheckResult::Unknown`] after `budget`
/// steps (placement attempts and undos).
///
/// # Panics
///
/// If an operation returns before it is called.
pub fn check_with_budget<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> CheckResult<M::State> {
    for (i, op) in history.iter().enumerate() {
        if let Some(ret) = op.ret() {
            assert!(
                ret >= op.call,
                "operation #{i} returns at {ret}, before its call at {}",
                op.call
            );
        }
    }
    Search::new(model, history).run(budget)
}

/// "No entry": the end of the list, or a call without a return entry.
const NIL: usize = usize::MAX;

/// One call or return entry in the time-ordered list.
struct Entry {
    /// Index of the operation in the history.
    op: usize,
    /// For a call entry: the index of its return entry, or [`NIL`] for an unknown outcome.
    /// For a return entry: [`NIL`].
    partner: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The entries as a doubly linked list over a vector; index 0 is a head sentinel.
///
/// Lifting unlinks an operation's entries but leaves their own `prev`/`next` untouched, so
/// relinking them in reverse order ("dancing links") restores the list exactly.
struct List {
    entries: Vec<Entry>,
}

impl List {
    fn new<I, O>(history: &[Operation<I, O>]) -> Self {
        // (time, 0 for a call / 1 for a return, operation): calls sort before returns at the same
        // time, so touching intervals count as concurrent.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(history.len() * 2);
        for (i, op) in history.iter().enumerate() {
            events.push((op.call, 0, i));
            if let Some(ret) = op.ret() {
                events.push((ret, 1, i));
            }
        }
        events.sort_unstable();

        let mut entries = Vec::with_capacity(events.len() + 1);
        entries.push(Entry {
            op: NIL,
            partner: NIL,
            is_call: false,
            prev: NIL,
            next: if events.is_empty() { NIL } else { 1 },
        });
        let mut call_entry = vec![NIL; history.len()];
        let count = events.len();
        for (k, &(_, kind, op)) in events.iter().enumerate() {
            let index = k + 1;
            if kind == 0 {
                call_entry[op] = index;
            } else {
                entries[call_entry[op]].partner = index;
            }
            entries.push(Entry {
                op,
                partner: NIL,
                is_call: kind == 0,
                prev: index - 1,
                next: if index == count { NIL } else { index + 1 },
            });
        }
        Self { entries }
    }

    fn first(&self) -> usize {
        self.entries[0].next
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.entries[i].prev, self.entries[i].next);
        self.entries[prev].next = next;
        if next != NIL {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, i: usize) {
        let (prev, next) = (self.entries[i].prev, self.entries[i].next);
        self.entries[prev].next = i;
        if next != NIL {
            self.entries[next].prev = i;
        }
    }

    /// Removes an operation (its call entry `call` and its return entry, if any).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.entries[call].partner;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes the most recent [`List::lift`], which must have been of `call`.
    fn unlift(&mut self, call: usize) {
        let ret = self.entries[call].partner;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// One placed operation on the search stack.
struct Frame<S> {
    /// Its call entry.
    entry: usize,
    /// The state before it took effect.
    prev: S,
    /// Successor states of a nondeterministic step not tried yet.
    untried: Vec<S>,
}

/// The deepest dead end met so far, for the failure report.
struct DeadEnd<S> {
    /// The placed operations, in order.
    prefix: Vec<usize>,
    /// The last few operations of the prefix with the state after each.
    tail: Vec<(usize, S)>,
    /// The state after the prefix.
    state: S,
    /// The operations whose call entries came before the first return entry.
    placeable: Vec<usize>,
    /// The operation of that first return entry.
    deadline: Option<usize>,
}

/// The state of one check: the entry list, the placed set, the current model state and the stack
/// of placements that led to it.
struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Operation<M::Input, M::Output>],
    list: List,
    /// Which operations are placed.
    placed: PlacedSet,
    /// Lowe's cache: every (placed set, state) configuration ever entered. Keyed by the set's
    /// [`PlacedSet::key`], with the few states seen for it in a short vector.
    seen: HashMap<Box<[u64]>, Vec<M::State>>,
    state: M::State,
    stack: Vec<Frame<M::State>>,
    /// Operations with a known outcome not yet placed.
    remaining: usize,
    deepest: Option<DeadEnd<M::State>>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, history: &'a [Operation<M::Input, M::Output>]) -> Self {
        let list = List::new(history);
        Self {
            model,
            history,
            placed: PlacedSet::new(history, &list),
            list,
            seen: HashMap::new(),
            state: model.init(),
            stack: Vec::new(),
            remaining: history.iter().filter(|op| op.is_returned()).count(),
            deepest: None,
        }
    }

    fn run(mut self, budget: u64) -> CheckResult<M::State> {
        if self.remaining == 0 {
            return CheckResult::Linearizable { order: Vec::new() };
        }
        let mut cursor = self.list.first();
        let mut steps: u64 = 0;
        loop {
            steps += 1;
            if steps > budget {
                return CheckResult::Unknown { steps: budget };
            }
            if cursor != NIL && self.list.entries[cursor].is_call {
                // A placeable operation: try it in the current state.
                if self.try_place(cursor) {
                    if self.remaining == 0 {
                        let order = self.stack.iter().map(|f| self.op_of(f.entry)).collect();
                        return CheckResult::Linearizable { order };
                    }
                    cursor = self.list.first();
                } else {
                    cursor = self.list.entries[cursor].next;
                }
            } else {
                // A return entry (or, defensively, the end of the list): no placeable operation
                // works from here, so undo the latest placement and try what came after it.
                self.note_dead_end(cursor);
                match self.backtrack() {
                    Some(next) => cursor = next,
                    None => return CheckResult::NotLinearizable(Box::new(self.violation())),
                }
            }
        }
    }

    fn op_of(&self, entry: usize) -> usize {
        self.list.entries[entry].op
    }

    /// Tries to place the operation whose call entry is `entry`; on success it is lifted, the
    /// state advanced and a frame pushed.
    fn try_place(&mut self, entry: usize) -> bool {
        let op_index = self.op_of(entry);
        let op = &self.history[op_index];
        self.placed.insert(op_index);
        let key = self.placed.key();
        let found = match &op.outcome {
            Outcome::Returned { output, .. } => {
                let successors = self.model.step(&self.state, &op.input, output);
                first_unseen(successors, None, key, &mut self.seen)
            }
            Outcome::Unknown => {
                let successors = self.model.step_unknown(&self.state, &op.input);
                first_unseen(successors, Some(&self.state), key, &mut self.seen)
            }
        };
        let Some((next, untried)) = found else {
            self.placed.remove(op_index);
            return false;
        };
        let prev = std::mem::replace(&mut self.state, next);
        self.stack.push(Frame {
            entry,
            prev,
            untried,
        });
        self.list.lift(entry);
        if op.is_returned() {
            self.remaining -= 1;
        }
        true
    }

    /// Undoes the latest placement. If its step had another successor state not tried yet with
    /// this placed set, the operation stays placed in that state and the walk restarts from the
    /// front; otherwise it is unplaced and the walk continues after its call entry. `None` when
    /// nothing is left to undo.
    fn backtrack(&mut self) -> Option<usize> {
        let mut frame = self.stack.pop()?;
        let op_index = self.op_of(frame.entry);
        let unknown = !self.history[op_index].is_returned();
        while let Some(candidate) = frame.untried.pop() {
            if unknown && candidate == frame.prev {
                continue;
            }
            if insert_seen(&mut self.seen, self.placed.key(), &candidate) {
                self.state = candidate;
                self.stack.push(frame);
                return Some(self.list.first());
            }
        }
        self.state = frame.prev;
        self.placed.remove(op_index);
        self.list.unlift(frame.entry);
        if !unknown {
            self.remaining += 1;
        }
        Some(self.list.entries[frame.entry].next)
    }

    /// Remembers the current dead end if it is the deepest so far; `cursor` is the first return
    /// entry (or [`NIL`]).
    fn note_dead_end(&mut self, cursor: usize) {
        if self
            .deepest
            .as_ref()
            .is_some_and(|d| d.prefix.len() >= self.stack.len())
        {
            return;
        }
        let prefix: Vec<usize> = self.stack.iter().map(|f| self.op_of(f.entry)).collect();
        // The state after frame k is the state before frame k + 1 (or the current one).
        let from = self.stack.len().saturating_sub(REPORT_TAIL);
        let tail = (from..self.stack.len())
            .map(|k| {
                let after = match self.stack.get(k + 1) {
                    Some(next) => next.prev.clone(),
                    None => self.state.clone(),
                };
                (prefix[k], after)
            })
            .collect();
        let mut placeable = Vec::new();
        let mut e = self.list.first();
        while e != cursor && e != NIL {
            placeable.push(self.op_of(e));
            e = self.list.entries[e].next;
        }
        self.deepest = Some(DeadEnd {
            prefix,
            tail,
            state: self.state.clone(),
            placeable,
            deadline: (cursor != NIL).then(|| self.op_of(cursor)),
        });
    }

    fn violation(self) -> Violation<M::State> {
        let DeadEnd {
            prefix,
            tail,
            state,
            placeable,
            deadline,
        } = self
            .deepest
            .expect("a failed search met at least one dead end");
        let history = self.history;
        let unknown_count = history.iter().filter(|op| !op.is_returned()).count();
        let (unplaced, optional): (Vec<usize>, Vec<usize>) = placeable
            .into_iter()
            .partition(|&i| history[i].is_returned());

        let mut report = String::new();
        let _ = writeln!(
            report,
            "history is not linearizable ({} operations, {unknown_count} with unknown outcome)",
            history.len()
        );
        let _ = writeln!(
            report,
            "longest linearizable prefix: {} operations{}",
            prefix.len(),
            if prefix.len() > tail.len() {
                format!(", the last {}:", tail.len())
            } else {
                ":".to_owned()
            }
        );
        for (i, after) in &tail {
            let _ = writeln!(report, "  #{i} {}  => state {after:?}", history[*i]);
        }
        let _ = writeln!(report, "state after the prefix: {state:?}");
        if unplaced.is_empty() {
            let _ = writeln!(
                report,
                "no operation with a known outcome could take effect next"
            );
        } else {
            let _ = writeln!(
                report,
                "operations that could take effect next, none of which leads to a complete order:"
            );
            for &i in &unplaced {
                let op = &history[i];
                let allowed = op.output().is_some_and(|out| {
                    self.model
                        .step(&state, &op.input, out)
                        .into_iter()
                        .next()
                        .is_some()
                });
                let why = if allowed {
                    "possible here, but every continuation fails"
                } else {
                    "impossible in this state"
                };
                let _ = writeln!(report, "  #{i} {op}  ({why})");
            }
        }
        if !optional.is_empty() {
            let _ = writeln!(
                report,
                "operations with unknown outcome that could also take effect next: {}",
                optional
                    .iter()
                    .map(|i| format!("#{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(i) = deadline {
            let _ = writeln!(
                report,
                "#{i} is the remaining operation that returned first (at {}): one of the above had \
                 to take effect by then",
                history[i].ret().unwrap_or(u64::MAX)
            );
        }
        Violation {
            prefix,
            state,
            unplaced,
            deadline,
            report,
        }
    }
}

/// Returns the first successor not yet seen with the current placed set (recording it as seen),
/// and the successors after it, still to be tried. `skip` is a state a successor must differ
/// from (the current state, for an operation with an unknown outcome).
fn first_unseen<S: Clone + Eq + Hash>(
    successors: impl IntoIterator<Item = S>,
    skip: Option<&S>,
    key: &[u64],
    seen: &mut HashMap<Box<[u64]>, Vec<S>>,
) -> Option<(S, Vec<S>)> {
    let mut successors = successors.into_iter();
    for candidate in successors.by_ref() {
        if skip.is_some_and(|s| *s == candidate) {
            continue;
        }
        if insert_seen(seen, key, &candidate) {
            // Deterministic models yield nothing more, and an empty Vec does not allocate.
            return Some((candidate, successors.collect()));
        }
    }
    None
}

/// Records the configuration (placed set with key `key`, state); false if it had been seen
/// before.
fn insert_seen<S: Clone + Eq + Hash>(
    seen: &mut HashMap<Box<[u64]>, Vec<S>>,
    key: &[u64],
    state: &S,
) -> bool {
    match seen.get_mut(key) {
        Some(states) if states.contains(state) => false,
        Some(states) => {
            states.push(state.clone());
            true
        }
        None => {
            seen.insert(key.into(), vec![state.clone()]);
            true
        }
    }
}

/// The set of placed operations: a bitset laid out so that its cache key stays short.
///
/// Operations with a known outcome get bits in call order; operations with an unknown outcome get
/// bits after them, from the next word boundary. The search places operations roughly in call
/// order, so the known part is a run of full words (everything long finished), a few mixed words
/// around the point the search has reached, then zeros (everything not called yet). The key
/// stores the run as a count and drops the zeros, so its length follows the number of concurrent
/// operations rather than the length of the history. Unknown outcomes live apart because one
/// that never takes effect would otherwise break the run for good.
///
/// The bounds of the run and of the nonzero words are kept up to date on every change (amortized
/// constant time), so building a key never scans the whole history.
struct PlacedSet {
    words: Vec<u64>,
    /// Words `..known_words` hold operations with a known outcome, the rest unknown ones.
    known_words: usize,
    /// The bit of each operation, by index in the history.
    bit: Vec<usize>,
    /// Words `..full` are all ones.
    full: usize,
    /// Words `known_end..known_words` are all zeros.
    known_end: usize,
    /// Words `unknown_end..` are all zeros.
    unknown_end: usize,
    /// Scratch space for [`PlacedSet::key`].
    key: Vec<u64>,
}

impl PlacedSet {
    fn new<I, O>(history: &[Operation<I, O>], list: &List) -> Self {
        let known = history.iter().filter(|op| op.is_returned()).count();
        let known_words = known.div_ceil(64);
        let mut bit = vec![0; history.len()];
        let (mut next_known, mut next_unknown) = (0, known_words * 64);
        // The list is in time order, so its call entries are in call order.
        for entry in list.entries.iter().filter(|e| e.is_call) {
            let next = if history[entry.op].is_returned() {
                &mut next_known
            } else {
                &mut next_unknown
            };
            bit[entry.op] = *next;
            *next += 1;
        }
        Self {
            words: vec![0; next_unknown.div_ceil(64)],
            known_words,
            bit,
            full: 0,
            known_end: 0,
            unknown_end: known_words,
            key: Vec::new(),
        }
    }

    fn insert(&mut self, op: usize) {
        let (w, mask) = (self.bit[op] / 64, 1 << (self.bit[op] % 64));
        self.words[w] |= mask;
        if w < self.known_words {
            while self.full < self.known_words && self.words[self.full] == u64::MAX {
                self.full += 1;
            }
            self.known_end = self.known_end.max(w + 1);
        } else {
            self.unknown_end = self.unknown_end.max(w + 1);
        }
    }

    fn remove(&mut self, op: usize) {
        let (w, mask) = (self.bit[op] / 64, 1 << (self.bit[op] % 64));
        self.words[w] &= !mask;
        if w < self.known_words {
            self.full = self.full.min(w);
            while self.known_end > 0 && self.words[self.known_end - 1] == 0 {
                self.known_end -= 1;
            }
        } else {
            while self.unknown_end > self.known_words && self.words[self.unknown_end - 1] == 0 {
                self.unknown_end -= 1;
            }
        }
    }

    /// A compact encoding of the set, equal for equal sets and different for different ones:
    /// `[full, len, known words full..full + len, unknown words up to the last nonzero one]`.
    fn key(&mut self) -> &[u64] {
        let known_end = self.known_end.max(self.full);
        self.key.clear();
        self.key.push(self.full as u64);
        self.key.push((known_end - self.full) as u64);
        self.key
            .extend_from_slice(&self.words[self.full..known_end]);
        self.key
            .extend_from_slice(&self.words[self.known_words..self.unknown_end]);
        &self.key
    }
}

#[cfg(test)]
mod tests;
