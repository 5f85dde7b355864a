//! The arithmetic of AppendEntries sizing: what fits the budget, and how the window
//! shrinks on failures and grows back.

use super::*;

const KIB: usize = 1024;

#[test]
fn entries_that_fit_the_budget_are_counted_from_the_first() {
    let budget = 64 * KIB;
    // The envelope takes APPEND_ENVELOPE_BYTES; three 20 KiB entries fit, a fourth does not.
    let sizes = [20 * KIB; 10];
    assert_eq!(entries_within(sizes, budget), Some(3));
    assert_eq!(entries_within([20 * KIB; 3], budget), None, "all fit");
    assert_eq!(entries_within([], budget), None, "a heartbeat fits");
}

#[test]
fn a_first_entry_over_the_budget_is_still_sent_alone() {
    assert_eq!(entries_within([100 * KIB, 1, 1], 64 * KIB), Some(1));
}

#[test]
fn the_budget_counts_the_envelope() {
    let budget = 10 * KIB;
    let exact = budget - APPEND_ENVELOPE_BYTES;
    assert_eq!(entries_within([exact], budget), None);
    assert_eq!(entries_within([exact, 1], budget), Some(1));
}

#[test]
fn a_failed_batch_is_retried_with_half_as_many_entries() {
    let mut window = Window::default();
    assert_eq!(window.begin(300), (None, Ok(())));
    assert_eq!(window.failed(300), Some(150));
    // openraft asks for the full range again once its own hint expires: held to 150.
    assert_eq!(window.begin(300), (None, Err(150)));
    assert_eq!(window.begin(150), (None, Ok(())));
    assert_eq!(window.failed(150), Some(75));
    assert_eq!(window.begin(100), (None, Err(75)));
}

#[test]
fn a_single_entry_cannot_be_split() {
    let mut window = Window::default();
    assert_eq!(window.begin(1), (None, Ok(())));
    assert_eq!(window.failed(1), None);
    assert_eq!(window.begin(5), (None, Ok(())), "no window from one entry");
    assert_eq!(window.failed(2), Some(1));
    assert_eq!(window.begin(2), (None, Err(1)));
    window.begin(1).1.unwrap();
    assert_eq!(window.failed(1), None);
    assert_eq!(
        window.begin(2),
        (None, Err(1)),
        "a refused entry says nothing of the peer"
    );
}

#[test]
fn after_a_pause_the_window_grows_back_as_appends_succeed() {
    let mut window = Window::default();
    // A paused follower: every append times out, down to a single entry.
    for entries in [300, 150, 75, 37, 18, 9, 4, 2] {
        window.begin(entries).1.unwrap();
        assert_eq!(window.failed(entries), Some(entries / 2));
    }
    window.begin(1).1.unwrap();
    assert_eq!(window.failed(1), None, "one entry: an ordinary timeout");
    assert_eq!(window.begin(2), (None, Err(1)));
    // Running again: each run of successes doubles it, up to no window at all.
    let mut cap = 1;
    while cap < 300 {
        for _ in 0..GROW_AFTER {
            assert_eq!(window.begin(cap + 1), (None, Err(cap)));
            window.begin(cap).1.unwrap();
            window.succeeded(cap, 300);
        }
        cap *= 2;
    }
    assert_eq!(window.begin(300), (None, Ok(())));
}

#[test]
fn an_append_dropped_at_the_hard_timeout_counts_as_failed() {
    let mut window = Window::default();
    assert_eq!(window.begin(40), (None, Ok(())));
    // openraft dropped the call: neither succeeded nor failed was called.
    assert_eq!(window.begin(40), (Some(40), Err(20)));
    assert_eq!(window.begin(20), (None, Ok(())));
    window.succeeded(20, 300);
    assert_eq!(window.begin(0), (None, Ok(())), "a heartbeat");
    window.succeeded(0, 300);
    assert_eq!(
        window.begin(0),
        (None, Ok(())),
        "nothing was left in flight"
    );
}

#[test]
fn the_window_grows_back_after_successes_and_then_goes() {
    let mut window = Window::default();
    window.begin(64).1.unwrap();
    assert_eq!(window.failed(64), Some(32));
    for round in 0..GROW_AFTER {
        assert_eq!(window.begin(64), (None, Err(32)), "round {round}");
        window.begin(32).1.unwrap();
        window.succeeded(32, 300);
    }
    assert_eq!(window.begin(64), (None, Ok(())), "doubled to 64");
    window.succeeded(64, 300);
    // Smaller successes do not grow it.
    for _ in 0..10 {
        window.begin(3).1.unwrap();
        window.succeeded(3, 300);
    }
    assert_eq!(window.begin(65), (None, Err(64)));
    // Doubling up to openraft's own limit removes the window.
    let mut window = Window::default();
    window.begin(300).1.unwrap();
    window.failed(300);
    for _ in 0..GROW_AFTER {
        window.begin(150).1.unwrap();
        window.succeeded(150, 300);
    }
    assert_eq!(window.begin(300), (None, Ok(())));
}

#[test]
fn every_split_reason_is_exported_from_the_start() {
    let metrics = AppendMetrics::default();
    let mut registry = Registry::with_prefix("t");
    metrics.register(&mut registry);
    metrics.split(Split::Timeout);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    for reason in ["budget", "window", "timeout", "failure"] {
        assert!(
            text.contains(&format!(
                "t_raft_append_splits_total{{reason=\"{reason}\"}}"
            )),
            "{text}"
        );
    }
    assert_eq!(metrics.splits(Split::Timeout), 1);
}
