//! Tests of the linearizability checker: hand-written histories with known answers, unknown
//! outcomes, search budgets, and randomized histories from a correct register (then corrupted).

use std::sync::{Barrier, Mutex};
use std::thread;

use super::*;
use crate::history::{History, Pending};
use crate::register::{Register, RegisterInput, RegisterOutput};

type Op = Operation<RegisterInput<u64>, RegisterOutput<u64>>;

fn read(client: usize, value: u64, call: u64, ret: u64) -> Op {
    Operation::returned(
        client,
        RegisterInput::Read,
        RegisterOutput::Value(value),
        call,
        ret,
    )
}

fn write(client: usize, value: u64, call: u64, ret: u64) -> Op {
    Operation::returned(
        client,
        RegisterInput::Write(value),
        RegisterOutput::Ok,
        call,
        ret,
    )
}

fn cas(client: usize, expected: u64, new: u64, ok: bool, call: u64, ret: u64) -> Op {
    let output = if ok {
        RegisterOutput::Ok
    } else {
        RegisterOutput::Fail
    };
    Operation::returned(
        client,
        RegisterInput::CompareAndSet { expected, new },
        output,
        call,
        ret,
    )
}

fn write_unknown(client: usize, value: u64, call: u64) -> Op {
    Operation::unknown(client, RegisterInput::Write(value), call)
}

fn cas_unknown(client: usize, expected: u64, new: u64, call: u64) -> Op {
    Operation::unknown(client, RegisterInput::CompareAndSet { expected, new }, call)
}

/// Checks a register history starting from 0; a witness, when there is one, is verified.
fn check_register(history: &[Op]) -> CheckResult<u64> {
    let model = Register::new(0);
    let result = check(&model, history);
    if let CheckResult::Linearizable { order } = &result {
        verify_witness(&model, history, order);
    }
    result
}

/// Asserts that `order` is a valid linearization of `history` for a deterministic model: it holds
/// every returned operation exactly once and unknown ones at most once, respects real time (an
/// operation that returned before another was called comes first), and replays to the recorded
/// outputs.
fn verify_witness<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    order: &[usize],
) {
    let mut count = vec![0; history.len()];
    for &i in order {
        count[i] += 1;
    }
    for (i, op) in history.iter().enumerate() {
        let expected = if op.is_returned() { 1..=1 } else { 0..=1 };
        assert!(
            expected.contains(&count[i]),
            "#{i} appears {} times",
            count[i]
        );
    }
    // b may follow a only if b had not returned before a was called: b.ret >= a.call for every
    // earlier a, i.e. b.ret >= the latest call time so far.
    let mut latest_call = 0;
    for &i in order {
        let op = &history[i];
        if let Some(ret) = op.ret() {
            assert!(
                ret >= latest_call,
                "#{i} placed after an operation called after it returned"
            );
        }
        latest_call = latest_call.max(op.call);
    }
    let mut state = model.init();
    for &i in order {
        let op = &history[i];
        let next = match op.output() {
            Some(output) => model.step(&state, &op.input, output).into_iter().next(),
            None => model.step_unknown(&state, &op.input).into_iter().next(),
        };
        state = next.unwrap_or_else(|| panic!("#{i} {op} is impossible in state {state:?}"));
    }
}

fn violation(result: CheckResult<u64>) -> Violation<u64> {
    match result {
        CheckResult::NotLinearizable(v) => *v,
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(
        check_register(&[]),
        CheckResult::Linearizable { order: vec![] }
    );
}

#[test]
fn sequential_history_is_linearizable() {
    let history = [
        write(0, 1, 0, 10),
        read(1, 1, 20, 30),
        cas(0, 1, 2, true, 40, 50),
        read(1, 2, 60, 70),
        cas(1, 1, 3, false, 80, 90),
        read(0, 2, 100, 110),
    ];
    assert_eq!(
        check_register(&history),
        CheckResult::Linearizable {
            order: vec![0, 1, 2, 3, 4, 5]
        }
    );
}

#[test]
fn read_overlapping_a_write_may_see_old_or_new() {
    for seen in [0, 1] {
        let history = [write(0, 1, 0, 100), read(1, seen, 10, 20)];
        check_register(&history).assert_linearizable();
    }
}

#[test]
fn overlapping_writes_may_take_effect_in_either_order() {
    // Two writes overlap each other and two later, sequential reads: either order of the writes
    // explains the reads.
    for (first, second) in [(1, 2), (2, 1)] {
        let history = [
            write(0, 1, 0, 100),
            write(1, 2, 0, 100),
            read(2, first, 10, 20),
            read(2, second, 30, 40),
        ];
        check_register(&history).assert_linearizable();
    }
    // But a value cannot come back once it was overwritten.
    let history = [
        write(0, 1, 0, 100),
        write(1, 2, 0, 100),
        read(2, 1, 10, 20),
        read(2, 2, 30, 40),
        read(2, 1, 50, 60),
    ];
    assert!(check_register(&history).is_violation());
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // The read is called at the very instant the write returns: it may still see the old value.
    check_register(&[write(0, 1, 0, 10), read(1, 0, 10, 20)]).assert_linearizable();
    assert!(check_register(&[write(0, 1, 0, 10), read(1, 0, 11, 20)]).is_violation());
}

#[test]
fn compare_and_set_race_with_one_winner_is_linearizable() {
    for a_wins in [true, false] {
        let winner_value = if a_wins { 1 } else { 2 };
        let history = [
            read(0, 0, 0, 10),
            read(1, 0, 0, 10),
            cas(0, 0, 1, a_wins, 20, 40),
            cas(1, 0, 2, !a_wins, 20, 40),
            read(2, winner_value, 50, 60),
        ];
        check_register(&history).assert_linearizable();
    }
}

#[test]
fn lost_update_is_not_linearizable() {
    // Both clients read 0 and both saves with that version succeed.
    let history = [
        read(0, 0, 0, 10),
        read(1, 0, 0, 10),
        cas(0, 0, 1, true, 20, 40),
        cas(1, 0, 2, true, 20, 40),
    ];
    assert!(check_register(&history).is_violation());
    // The increment form: both write 0 + 1.
    let history = [
        read(0, 0, 0, 10),
        read(1, 0, 0, 10),
        cas(0, 0, 1, true, 20, 40),
        cas(1, 0, 1, true, 20, 40),
    ];
    assert!(check_register(&history).is_violation());
}

#[test]
fn unjustified_conflict_is_not_linearizable() {
    // Nothing else ran, so the save with the current version had to succeed.
    assert!(check_register(&[cas(0, 0, 1, false, 0, 10)]).is_violation());
}

#[test]
fn stale_read_after_completed_write_is_not_linearizable() {
    let history = [write(0, 1, 0, 10), read(1, 0, 20, 30)];
    let v = violation(check_register(&history));
    assert_eq!(v.prefix, vec![0]);
    assert_eq!(v.state, 1);
    assert_eq!(v.unplaced, vec![1]);
    assert_eq!(v.deadline, Some(1));
    assert!(
        v.report.contains("#1 client 1: Read -> Value(0) [20..30]"),
        "{v}"
    );
    assert!(v.report.contains("impossible in this state"), "{v}");
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let history = [write(0, 1, 0, 10), read(1, 7, 5, 30), read(0, 1, 40, 50)];
    let v = violation(check_register(&history));
    assert_eq!(v.unplaced, vec![1]);
}

#[test]
fn wrong_kind_of_answer_is_not_linearizable() {
    let history = [Operation::returned(
        0,
        RegisterInput::Read,
        RegisterOutput::Ok,
        0,
        10,
    )];
    assert!(check_register(&history).is_violation());
}

#[test]
fn unknown_write_may_explain_a_read() {
    let impossible = [read(1, 1, 20, 30)];
    assert!(check_register(&impossible).is_violation());
    let history = [write_unknown(0, 1, 0), read(1, 1, 20, 30)];
    assert_eq!(
        check_register(&history),
        CheckResult::Linearizable { order: vec![0, 1] }
    );
}

#[test]
fn unknown_write_may_never_take_effect() {
    let history = [
        write_unknown(0, 5, 0),
        read(1, 0, 10, 20),
        read(1, 0, 30, 40),
    ];
    assert_eq!(
        check_register(&history),
        CheckResult::Linearizable { order: vec![1, 2] }
    );
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call() {
    let history = [read(1, 1, 0, 10), write_unknown(0, 1, 20)];
    assert!(check_register(&history).is_violation());
}

#[test]
fn unknown_write_may_take_effect_late() {
    // Called early, seen only after a later write: it took effect after that write.
    let history = [
        write_unknown(0, 1, 0),
        write(1, 2, 10, 20),
        read(1, 2, 30, 40),
        read(1, 1, 50, 60),
    ];
    check_register(&history).assert_linearizable();
}

#[test]
fn unknown_compare_and_set_is_still_constrained() {
    // A timed-out save that did take effect: a later read sees it and a save based on it works.
    let history = [
        cas_unknown(0, 0, 1, 0),
        read(1, 1, 10, 20),
        cas(1, 1, 2, true, 30, 40),
        read(1, 2, 50, 60),
    ];
    check_register(&history).assert_linearizable();

    // A timed-out save racing a successful one with the same version: it can have taken effect
    // only if it went first, and then the successful one could not have succeeded.
    let base = [cas(0, 0, 1, true, 0, 10), cas_unknown(1, 0, 2, 0)];
    let mut saw_timed_out = base.to_vec();
    saw_timed_out.push(read(2, 2, 20, 30));
    assert!(check_register(&saw_timed_out).is_violation());
    let mut saw_winner = base.to_vec();
    saw_winner.push(read(2, 1, 20, 30));
    check_register(&saw_winner).assert_linearizable();
}

#[test]
fn unknown_reads_do_not_blow_up_the_search() {
    // Unknown operations without effect are never placed, so 200 of them cost nothing: the
    // violation is found well within a small budget.
    let mut history = vec![write(0, 1, 0, 10), read(1, 0, 1_000, 1_010)];
    for i in 0..200 {
        history.push(Operation::unknown(2 + i, RegisterInput::Read, i as u64));
    }
    assert!(check_with_budget(&Register::new(0), &history, 10_000).is_violation());
}

#[test]
fn budget_exceeded_is_unknown() {
    let history: Vec<Op> = (0..10).map(|i| write(i, i as u64 + 1, 0, 100)).collect();
    let mut history = history;
    history.push(read(10, 99, 200, 300));
    assert_eq!(
        check_with_budget(&Register::new(0), &history, 5),
        CheckResult::Unknown { steps: 5 }
    );
    // With enough budget the answer is definite.
    assert!(check_register(&history).is_violation());
}

#[test]
#[should_panic(expected = "before its call")]
fn return_before_call_panics() {
    let _ = check_register(&[read(0, 0, 10, 5)]);
}

#[test]
fn string_values() {
    let history = [
        Operation::returned(
            0,
            RegisterInput::CompareAndSet {
                expected: String::new(),
                new: "a".to_owned(),
            },
            RegisterOutput::Ok,
            0,
            10,
        ),
        Operation::returned(
            1,
            RegisterInput::Read,
            RegisterOutput::Value("a".to_owned()),
            20,
            30,
        ),
    ];
    check(&Register::new(String::new()), &history).assert_linearizable();
}

/// A counter whose `Add` adds 1 or 2, nondeterministically.
struct SloppyCounter;

#[derive(Clone, Debug)]
enum CounterInput {
    Add,
    Get,
}

impl Model for SloppyCounter {
    type State = u64;
    type Input = CounterInput;
    type Output = Option<u64>;

    fn init(&self) -> u64 {
        0
    }

    fn step(
        &self,
        state: &u64,
        input: &CounterInput,
        output: &Option<u64>,
    ) -> impl IntoIterator<Item = u64> {
        match (input, output) {
            // The larger step first, so histories that need the smaller one exercise backtracking
            // over alternative states.
            (CounterInput::Add, None) => vec![state + 2, state + 1],
            (CounterInput::Get, Some(v)) if v == state => vec![*state],
            _ => vec![],
        }
    }

    fn step_unknown(&self, state: &u64, input: &CounterInput) -> impl IntoIterator<Item = u64> {
        match input {
            CounterInput::Add => vec![state + 2, state + 1],
            CounterInput::Get => vec![*state],
        }
    }
}

#[test]
fn nondeterministic_model_tries_every_successor() {
    let add = |call| Operation::returned(0, CounterInput::Add, None, call, call + 10);
    let get = |v, call| Operation::returned(1, CounterInput::Get, Some(v), call, call + 10);
    let history = [add(0), get(1, 20), add(40), get(3, 60)];
    assert_eq!(
        check(&SloppyCounter, &history),
        CheckResult::Linearizable {
            order: vec![0, 1, 2, 3]
        }
    );
    assert!(check(&SloppyCounter, &[add(0), add(20), get(2, 40)]).is_linearizable());
    assert!(check(&SloppyCounter, &[add(0), add(20), get(4, 40)]).is_linearizable());
    assert!(check(&SloppyCounter, &[add(0), add(20), get(5, 40)]).is_violation());
    assert!(check(&SloppyCounter, &[add(0), add(20), get(1, 40)]).is_violation());
    // An unknown Add may have added 1, 2 or nothing.
    let unknown_add = Operation::unknown(2, CounterInput::Add, 0);
    for v in [0, 1, 2] {
        assert!(check(&SloppyCounter, &[unknown_add.clone(), get(v, 20)]).is_linearizable());
    }
    assert!(check(&SloppyCounter, &[unknown_add.clone(), get(3, 20)]).is_violation());
}

#[test]
fn history_records_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<History<RegisterInput<u64>, RegisterOutput<u64>>>();
    send_sync::<Pending<RegisterInput<u64>, RegisterOutput<u64>>>();

    let history: History<RegisterInput<u64>, RegisterOutput<u64>> = History::new();
    thread::scope(|s| {
        for client in 0..4 {
            let history = history.clone();
            s.spawn(move || {
                let p = history.call(client, RegisterInput::Read);
                p.ret(RegisterOutput::Value(0));
                // Timed out: dropped without an answer.
                drop(history.call(client, RegisterInput::Write(client as u64 + 1)));
            });
        }
    });
    let ops = history.operations();
    assert_eq!(ops.len(), 8);
    assert_eq!(history.len(), 8);
    assert!(ops.windows(2).all(|w| w[0].call <= w[1].call));
    let reads = ops.iter().filter(|op| op.input == RegisterInput::Read);
    assert!(
        reads
            .clone()
            .all(|op| op.ret().is_some_and(|ret| ret >= op.call))
    );
    assert_eq!(reads.count(), 4);
    assert!(
        ops.iter()
            .filter(|op| op.input != RegisterInput::Read)
            .all(|op| op.outcome == Outcome::Unknown)
    );
    history.check(&Register::new(0)).assert_linearizable();

    // A pending operation counts as unknown while its token is alive.
    let pending = history.call(9, RegisterInput::Write(42));
    history
        .call(9, RegisterInput::Read)
        .ret(RegisterOutput::Value(42));
    history.check(&Register::new(0)).assert_linearizable();
    pending.ret(RegisterOutput::Ok);
    history.check(&Register::new(0)).assert_linearizable();
}

/// The true register of the simulations, with the order operations really took effect in.
struct Truth {
    value: u64,
    /// (operation index, value before, value after), in the order applied.
    applied: Vec<(usize, u64, u64)>,
}

/// Applies operation `index` of the history atomically to `truth`. Callers record the call before
/// and the return after, so the interval encloses the critical section.
fn apply(truth: &Mutex<Truth>, index: usize, input: &RegisterInput<u64>) -> RegisterOutput<u64> {
    let mut t = truth.lock().unwrap();
    let before = t.value;
    let output = match *input {
        RegisterInput::Read => RegisterOutput::Value(before),
        RegisterInput::Write(v) => {
            t.value = v;
            RegisterOutput::Ok
        }
        RegisterInput::CompareAndSet { expected, new } if expected == before => {
            t.value = new;
            RegisterOutput::Ok
        }
        RegisterInput::CompareAndSet { .. } => RegisterOutput::Fail,
    };
    let after = t.value;
    t.applied.push((index, before, after));
    // Hold the lock a little longer so other clients queue up behind it and their intervals
    // overlap this one.
    thread::yield_now();
    output
}

/// `threads` clients each doing `per_thread` random reads, writes and compare-and-sets on a
/// correct register. Every written value is distinct.
fn simulate_register(threads: usize, per_thread: usize, seed: u64) -> (Vec<Op>, Truth) {
    let history = History::new();
    let truth = Mutex::new(Truth {
        value: 0,
        applied: Vec::new(),
    });
    let start = Barrier::new(threads);
    thread::scope(|s| {
        for client in 0..threads {
            let (history, truth, start) = (history.clone(), &truth, &start);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed + client as u64);
                start.wait();
                let mut last_read = 0;
                for i in 0..per_thread {
                    let unique = (client * per_thread + i + 1) as u64;
                    let input = match rng.u8(0..10) {
                        0..4 => RegisterInput::Read,
                        4..7 => RegisterInput::Write(unique),
                        _ => RegisterInput::CompareAndSet {
                            expected: last_read,
                            new: unique,
                        },
                    };
                    let pending = history.call(client, input.clone());
                    if rng.bool() {
                        thread::yield_now();
                    }
                    let output = apply(truth, pending.index(), &input);
                    if let RegisterOutput::Value(v) = output {
                        last_read = v;
                    }
                    if rng.bool() {
                        thread::yield_now();
                    }
                    pending.ret(output);
                }
            });
        }
    });
    (history.operations(), truth.into_inner().unwrap())
}

#[test]
fn randomized_register_history_is_linearizable_and_corruptions_are_caught() {
    let (history, truth) = simulate_register(8, 200, 7);
    check_register(&history).assert_linearizable();

    // Refuting a history means exhausting every order of the operations before the corruption,
    // so corrupt an early quarter to keep the test fast.
    // Corruption 1: a read returns a value that was never written.
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].input == RegisterInput::Read)
        .collect();
    let victim = reads[reads.len() / 4];
    let mut corrupted = history.clone();
    corrupted[victim].outcome = Outcome::Returned {
        output: RegisterOutput::Value(u64::MAX),
        at: history[victim].ret().unwrap(),
    };
    let v = violation(check_register(&corrupted));
    assert!(v.unplaced.contains(&victim), "{v}");

    // Corruption 2: a read returns a value whose overwrite had completed before the read was
    // called. Values are never written twice, so that value could not be current any more.
    let mut stale = None;
    'find: for &r in &reads[reads.len() / 4..] {
        for &(w, before, after) in &truth.applied {
            if before != after && history[w].ret().unwrap() < history[r].call {
                stale = Some((r, before));
                break 'find;
            }
        }
    }
    let (r, old) = stale.expect("some read follows a completed overwrite");
    let mut corrupted = history.clone();
    corrupted[r].outcome = Outcome::Returned {
        output: RegisterOutput::Value(old),
        at: history[r].ret().unwrap(),
    };
    assert!(check_register(&corrupted).is_violation());
}

/// The R5 shape: every client reads the counter and saves `value + 1` with the version it read,
/// all clients in lockstep so that saves conflict. Some requests time out: the save may or may not
/// have been applied, and the client does not learn which.
fn simulate_increments(threads: usize, rounds: usize, seed: u64) -> Vec<Op> {
    let history = History::new();
    let truth = Mutex::new(Truth {
        value: 0,
        applied: Vec::new(),
    });
    let barrier = Barrier::new(threads);
    thread::scope(|s| {
        for client in 0..threads {
            let (history, truth, barrier) = (history.clone(), &truth, &barrier);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed + client as u64);
                for _ in 0..rounds {
                    let pending = history.call(client, RegisterInput::Read);
                    let output = apply(truth, pending.index(), &RegisterInput::Read);
                    let RegisterOutput::Value(v) = output else {
                        unreachable!()
                    };
                    pending.ret(output);
                    barrier.wait();
                    let save = RegisterInput::CompareAndSet {
                        expected: v,
                        new: v + 1,
                    };
                    let pending = history.call(client, save.clone());
                    if rng.u8(0..10) == 0 {
                        // Timed out: either the request or the answer was lost.
                        if rng.bool() {
                            apply(truth, pending.index(), &save);
                        }
                        drop(pending);
                    } else {
                        let output = apply(truth, pending.index(), &save);
                        pending.ret(output);
                    }
                    barrier.wait();
                }
            });
        }
    });
    history.operations()
}

#[test]
fn randomized_increments_with_timeouts_are_linearizable_and_lost_updates_are_caught() {
    let history = simulate_increments(6, 40, 11);
    assert!(history.iter().any(|op| op.outcome == Outcome::Unknown));
    check_register(&history).assert_linearizable();

    // Inject a lost update: a save that got a conflict is reported as successful although another
    // save with the same version succeeded too.
    let succeeded: std::collections::HashSet<u64> = history
        .iter()
        .filter_map(|op| match (&op.input, op.output()) {
            (RegisterInput::CompareAndSet { expected, .. }, Some(RegisterOutput::Ok)) => {
                Some(*expected)
            }
            _ => None,
        })
        .collect();
    let victim = history
        .iter()
        .position(|op| match (&op.input, op.output()) {
            (RegisterInput::CompareAndSet { expected, .. }, Some(RegisterOutput::Fail)) => {
                succeeded.contains(expected)
            }
            _ => false,
        })
        .expect("lockstep rounds produce conflicts");
    let mut corrupted = history.clone();
    let Outcome::Returned { output, .. } = &mut corrupted[victim].outcome else {
        unreachable!()
    };
    *output = RegisterOutput::Ok;
    let v = violation(check_register(&corrupted));
    assert!(!v.report.is_empty());
}

/// Linearizability straight from the definition: try every order that respects real time (and
/// every subset of the operations with unknown outcome), without any pruning.
fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
    fn extend<M: Model>(
        model: &M,
        history: &[Operation<M::Input, M::Output>],
        placed: &mut Vec<bool>,
        state: &M::State,
    ) -> bool {
        let done = history
            .iter()
            .zip(placed.iter())
            .all(|(op, &p)| p || !op.is_returned());
        if done {
            return true;
        }
        for (i, op) in history.iter().enumerate() {
            // `op` may go next unless some other unplaced operation returned before it was called.
            let blocked = history.iter().enumerate().any(|(j, other)| {
                j != i && !placed[j] && other.ret().is_some_and(|ret| ret < op.call)
            });
            if placed[i] || blocked {
                continue;
            }
            let successors: Vec<M::State> = match op.output() {
                Some(output) => model.step(state, &op.input, output).into_iter().collect(),
                None => model.step_unknown(state, &op.input).into_iter().collect(),
            };
            for next in successors {
                placed[i] = true;
                let found = extend(model, history, placed, &next);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    extend(
        model,
        history,
        &mut vec![false; history.len()],
        &model.init(),
    )
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = fastrand::Rng::with_seed(3);
    let (mut linearizable, mut not) = (0, 0);
    for _ in 0..5_000 {
        let n = rng.usize(1..=7);
        let history: Vec<Op> = (0..n)
            .map(|client| {
                let call = rng.u64(0..20);
                let (input, output) = match rng.u8(0..3) {
                    0 => (RegisterInput::Read, RegisterOutput::Value(rng.u64(0..3))),
                    1 => (RegisterInput::Write(rng.u64(0..3)), RegisterOutput::Ok),
                    _ => (
                        RegisterInput::CompareAndSet {
                            expected: rng.u64(0..3),
                            new: rng.u64(0..3),
                        },
                        if rng.bool() {
                            RegisterOutput::Ok
                        } else {
                            RegisterOutput::Fail
                        },
                    ),
                };
                if rng.u8(0..5) == 0 {
                    Operation::unknown(client, input, call)
                } else {
                    Operation::returned(client, input, output, call, call + rng.u64(0..10))
                }
            })
            .collect();
        let expected = brute_force(&Register::new(0), &history);
        let result = check_register(&history);
        assert_eq!(result.is_linearizable(), expected, "{history:#?}\n{result}");
        assert!(!matches!(result, CheckResult::Unknown { .. }));
        if expected {
            linearizable += 1;
        } else {
            not += 1;
        }
    }
    // Both answers are well represented.
    assert!(
        linearizable > 1_000 && not > 1_000,
        "{linearizable} / {not}"
    );
}

#[test]
fn nondeterministic_model_agrees_with_brute_force() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut linearizable = 0;
    for _ in 0..1_000 {
        let n = rng.usize(1..=6);
        let history: Vec<Operation<CounterInput, Option<u64>>> = (0..n)
            .map(|client| {
                let call = rng.u64(0..20);
                let (input, output) = if rng.bool() {
                    (CounterInput::Add, None)
                } else {
                    (CounterInput::Get, Some(rng.u64(0..6)))
                };
                if rng.u8(0..5) == 0 {
                    Operation::unknown(client, input, call)
                } else {
                    Operation::returned(client, input, output, call, call + rng.u64(0..10))
                }
            })
            .collect();
        let expected = brute_force(&SloppyCounter, &history);
        assert_eq!(
            check(&SloppyCounter, &history).is_linearizable(),
            expected,
            "{history:#?}"
        );
        linearizable += usize::from(expected);
    }
    assert!((200..800).contains(&linearizable), "{linearizable}");
}
