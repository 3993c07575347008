//! Assignment decisions, without I/O: which worker gets a new resource, and where the
//! resources of dead workers go.

use std::collections::{BTreeMap, BTreeSet};

/// The least-loaded live worker; ties go to the smallest id. `None` when no worker is alive.
/// `loads` counts resources per worker id (workers missing from it have none).
pub fn pick_worker<'a>(live: &'a BTreeSet<String>, loads: &BTreeMap<String, usize>) -> Option<&'a String> {
    live.iter().min_by_key(|w| (loads.get(*w).copied().unwrap_or(0), *w))
}

/// Moves every resource whose worker is not alive to the least-loaded live worker, one at a
/// time so the load stays even. Input: resource name -> assigned worker. Output: the moves,
/// in name order. With no live worker nothing moves.
pub fn plan_moves(assigned: &BTreeMap<String, String>, live: &BTreeSet<String>) -> Vec<(String, String)> {
    if live.is_empty() {
        return Vec::new();
    }
    let mut loads: BTreeMap<String, usize> = BTreeMap::new();
    for w in assigned.values().filter(|w| live.contains(*w)) {
        *loads.entry(w.clone()).or_default() += 1;
    }
    let mut moves = Vec::new();
    for (name, w) in assigned {
        if live.contains(w) {
            continue;
        }
        let to = pick_worker(live, &loads).expect("live is not empty").clone();
        *loads.entry(to.clone()).or_default() += 1;
        moves.push((name.clone(), to));
    }
    moves
}

/// The owners of a split task's partitions after a change of live workers: partitions of dead
/// (or no) owners go to the least-loaded live worker, then partitions move one at a time from
/// the most- to the least-loaded worker until no two differ by more than one. Every other
/// partition stays where it is, so a join or a leave moves as few as balance needs. Ties go to
/// the smallest worker id, so every master plans the same. With no live worker nothing moves.
pub fn plan_partitions(owners: &[String], live: &BTreeSet<String>) -> Vec<String> {
    if live.is_empty() {
        return owners.to_vec();
    }
    let mut out = owners.to_vec();
    let mut held: BTreeMap<&String, Vec<usize>> = live.iter().map(|w| (w, Vec::new())).collect();
    let mut orphans = Vec::new();
    for (p, o) in owners.iter().enumerate() {
        match held.get_mut(o) {
            Some(ps) => ps.push(p),
            None => orphans.push(p),
        }
    }
    for p in orphans {
        let to = *held.iter().min_by_key(|(w, ps)| (ps.len(), **w)).map(|(w, _)| w).expect("live");
        held.get_mut(to).expect("live").push(p);
        out[p] = to.clone();
    }
    loop {
        let (most, most_n) = held
            .iter()
            .max_by_key(|(w, ps)| (ps.len(), std::cmp::Reverse(**w)))
            .map(|(w, ps)| (*w, ps.len()))
            .expect("live");
        let (least, least_n) =
            held.iter().min_by_key(|(w, ps)| (ps.len(), **w)).map(|(w, ps)| (*w, ps.len())).expect("live");
        if most_n <= least_n + 1 {
            return out;
        }
        // The most-loaded worker gives up its highest partition.
        let p = held.get_mut(most).expect("live").pop().expect("not empty");
        held.get_mut(least).expect("live").push(p);
        out[p] = least.clone();
    }
}

/// The first owners of a new split task's `count` partitions: round robin over the live
/// workers, least-loaded first (`loads`: the share of other tasks' work each holds; ties to the
/// smallest id), so every worker gets `count / workers` or one more, and the extra ones (and
/// partition 0 onwards) go to the least-loaded. Empty with no live worker.
pub fn first_partitions(count: usize, live: &BTreeSet<String>, loads: &BTreeMap<String, f64>) -> Vec<String> {
    let mut order: Vec<&String> = live.iter().collect();
    order.sort_by(|a, b| {
        let (la, lb) = (loads.get(*a).copied().unwrap_or(0.0), loads.get(*b).copied().unwrap_or(0.0));
        la.total_cmp(&lb).then_with(|| a.cmp(b))
    });
    if order.is_empty() {
        return Vec::new();
    }
    (0..count).map(|p| order[p % order.len()].clone()).collect()
}

/// A swap of two partitions that evens out the work waiting at a split task's workers. The
/// worker with the most requests queued (`queued`: per partition) gives the partition that best
/// halves its gap to the worker with the fewest, which gives back its emptiest partition, so
/// every worker keeps as many partitions as before ([`plan_partitions`] stays satisfied). `None`
/// while the gap is under `min_gap` or under a fifth of the busiest worker's queue, or when no
/// swap closes a third of it. Ties go to the smallest worker id and partition.
pub fn plan_swap(owners: &[String], queued: &BTreeMap<u32, u64>, min_gap: u64) -> Option<(u32, u32)> {
    let mut loads: BTreeMap<&String, (u64, Vec<u32>)> = BTreeMap::new();
    for (p, o) in owners.iter().enumerate() {
        let entry = loads.entry(o).or_default();
        entry.0 += queued.get(&(p as u32)).copied().unwrap_or(0);
        entry.1.push(p as u32);
    }
    let (busy, (high, busy_parts)) = loads.iter().max_by_key(|(w, (l, _))| (*l, std::cmp::Reverse(*w)))?;
    let (idle, (low, idle_parts)) = loads.iter().min_by_key(|(w, (l, _))| (*l, *w))?;
    let gap = high - low;
    if busy == idle || gap < min_gap || gap * 5 < *high {
        return None;
    }
    let q = |p: &u32| queued.get(p).copied().unwrap_or(0);
    let back = *idle_parts.iter().min_by_key(|p| (q(p), **p))?;
    // The gap after the swap is |gap - 2 (q(give) - q(back))|.
    let after = |give: &u32| gap.abs_diff(2 * q(give).saturating_sub(q(&back)));
    let give = *busy_parts.iter().filter(|p| q(p) > q(&back)).min_by_key(|p| (after(p), **p))?;
    // Worth the two restarts only if it closes a third of the gap at least (a partition that
    // holds most of the gap by itself cannot be evened out by swapping).
    (gap.saturating_sub(after(&give)) * 3 >= gap).then_some((give, back))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn least_loaded_then_smallest_id() {
        let live = set(&["w2", "w1", "w3"]);
        let mut loads = BTreeMap::new();
        assert_eq!(pick_worker(&live, &loads).unwrap(), "w1");
        loads.insert("w1".to_string(), 2);
        loads.insert("w2".to_string(), 1);
        assert_eq!(pick_worker(&live, &loads).unwrap(), "w3");
        assert!(pick_worker(&set(&[]), &loads).is_none());
    }

    #[test]
    fn dead_workers_resources_move_evenly() {
        let assigned: BTreeMap<String, String> = [("a", "dead"), ("b", "dead"), ("c", "w1"), ("d", "dead")]
            .iter()
            .map(|(r, w)| (r.to_string(), w.to_string()))
            .collect();
        let moves = plan_moves(&assigned, &set(&["w1", "w2"]));
        assert_eq!(moves, [("a".into(), "w2".into()), ("b".into(), "w1".into()), ("d".into(), "w2".into())]);
        assert!(plan_moves(&assigned, &set(&[])).is_empty());
    }

    #[test]
    fn a_join_takes_a_fair_share_and_a_leave_hands_out_only_its_own() {
        let owners: Vec<String> = (0..8).map(|p| if p % 2 == 0 { "w1" } else { "w2" }.to_string()).collect();
        let joined = plan_partitions(&owners, &set(&["w1", "w2", "w3"]));
        assert_eq!(joined.iter().filter(|o| *o == "w3").count(), 2);
        assert_eq!(joined.iter().zip(&owners).filter(|(a, b)| a != b).count(), 2);
        let left = plan_partitions(&joined, &set(&["w1", "w3"]));
        for (p, (before, after)) in joined.iter().zip(&left).enumerate() {
            if before != "w2" {
                assert_eq!(before, after, "partition {p} moved without need");
            }
        }
        assert!(plan_partitions(&owners, &set(&[])) == owners);
        let fresh = plan_partitions(&vec![String::new(); 5], &set(&["a", "b"]));
        assert_eq!(fresh.iter().filter(|o| *o == "a").count(), 3);
    }

    #[test]
    fn a_new_task_goes_round_robin_least_loaded_first() {
        let live = set(&["w1", "w2", "w3"]);
        let loads: BTreeMap<String, f64> =
            [("w1".to_string(), 2.0), ("w2".to_string(), 0.5)].into_iter().collect();
        let owners = first_partitions(7, &live, &loads);
        assert_eq!(owners, ["w3", "w2", "w1", "w3", "w2", "w1", "w3"]);
        assert_eq!(plan_partitions(&owners, &live), owners, "already balanced");
        assert!(first_partitions(4, &set(&[]), &loads).is_empty());
    }

    #[test]
    fn a_swap_moves_work_from_the_busiest_to_the_idlest_worker() {
        let owners: Vec<String> = ["a", "a", "b", "b"].iter().map(|s| s.to_string()).collect();
        let queued: BTreeMap<u32, u64> = [(0, 900), (1, 500), (2, 0), (3, 100)].into_iter().collect();
        // a: 1400, b: 100; a gives 0 (900) for b's 2 (0)? gap after |1300 - 1800| = 500; giving 1
        // (500) leaves |1300 - 1000| = 300: better.
        assert_eq!(plan_swap(&owners, &queued, 100), Some((1, 2)));
        // Small gaps are left alone.
        let even: BTreeMap<u32, u64> = [(0, 500), (1, 500), (2, 450), (3, 500)].into_iter().collect();
        assert_eq!(plan_swap(&owners, &even, 100), None);
        assert_eq!(plan_swap(&owners, &queued, 5000), None);
        // One partition holds the gap: no swap can even it out, none is made.
        let dominant: BTreeMap<u32, u64> = [(0, 10_000), (1, 200), (2, 0), (3, 0)].into_iter().collect();
        assert_eq!(plan_swap(&owners, &dominant, 100), None);
    }

    proptest! {
        #[test]
        fn a_swap_keeps_the_counts_and_narrows_the_gap(
            owners in proptest::collection::vec(0u8..4, 2..40),
            queued in proptest::collection::vec(0u64..1000, 40),
        ) {
            let owners: Vec<String> = owners.into_iter().map(|w| format!("w{w}")).collect();
            let queued: BTreeMap<u32, u64> = queued.into_iter().enumerate().map(|(p, q)| (p as u32, q)).collect();
            let load = |o: &[String], w: &String| -> u64 {
                o.iter().enumerate().filter(|(_, x)| *x == w).map(|(p, _)| queued[&(p as u32)]).sum()
            };
            if let Some((give, back)) = plan_swap(&owners, &queued, 1) {
                let (from, to) = (owners[give as usize].clone(), owners[back as usize].clone());
                prop_assert_ne!(&from, &to);
                let mut after = owners.clone();
                after.swap(give as usize, back as usize);
                let count = |o: &[String], w: &String| o.iter().filter(|x| *x == w).count();
                prop_assert_eq!(count(&after, &from), count(&owners, &from));
                let (before_gap, after_gap) = (
                    load(&owners, &from).abs_diff(load(&owners, &to)),
                    load(&after, &from).abs_diff(load(&after, &to)),
                );
                prop_assert!((before_gap - after_gap) * 3 >= before_gap, "{} -> {}", before_gap, after_gap);
                // A balanced assignment stays balanced: the count planner undoes nothing.
                let live: BTreeSet<String> = owners.iter().cloned().collect();
                if plan_partitions(&owners, &live) == owners {
                    prop_assert_eq!(plan_partitions(&after, &live), after.clone());
                }
            }
        }

        #[test]
        fn partitions_end_balanced_within_one_with_the_fewest_moves(
            owners in proptest::collection::vec(0u8..6, 1..200),
            live in proptest::collection::btree_set(0u8..6, 1..6),
        ) {
            let owners: Vec<String> = owners.into_iter().map(|w| format!("w{w}")).collect();
            let live: BTreeSet<String> = live.into_iter().map(|w| format!("w{w}")).collect();
            let out = plan_partitions(&owners, &live);
            prop_assert_eq!(out.len(), owners.len());
            prop_assert!(out.iter().all(|o| live.contains(o)));
            let mut counts: BTreeMap<&String, usize> = live.iter().map(|w| (w, 0)).collect();
            for o in &out { *counts.get_mut(o).unwrap() += 1; }
            let (min, max) = (*counts.values().min().unwrap(), *counts.values().max().unwrap());
            prop_assert!(max <= min + 1, "unbalanced: {:?}", counts);
            // Fewest moves: every orphan moves once, and beyond that only what balance needs:
            // the `n % workers` workers holding the most may keep the ceiling, the others the
            // floor; whatever a worker holds above its target moves, nothing else.
            let n = owners.len();
            let (floor, extra) = (n / live.len(), n % live.len());
            let orphans = owners.iter().filter(|o| !live.contains(*o)).count();
            let mut before: Vec<usize> = live.iter().map(|w| owners.iter().filter(|o| *o == w).count()).collect();
            before.sort_unstable_by(|a, b| b.cmp(a));
            let excess: usize = before
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(if i < extra { floor + 1 } else { floor }))
                .sum();
            let moved = owners.iter().zip(&out).filter(|(a, b)| a != b).count();
            prop_assert_eq!(moved, orphans + excess);
            // Running it again changes nothing.
            prop_assert_eq!(plan_partitions(&out, &live), out);
        }

        #[test]
        fn moves_only_orphans_onto_live_workers_and_balance(
            assigned in proptest::collection::btree_map("[a-z]{1,4}", 0u8..6, 0..40),
            live in proptest::collection::btree_set(0u8..6, 0..5),
        ) {
            let assigned: BTreeMap<String, String> = assigned.into_iter().map(|(r, w)| (r, format!("w{w}"))).collect();
            let live: BTreeSet<String> = live.into_iter().map(|w| format!("w{w}")).collect();
            let moves = plan_moves(&assigned, &live);
            let orphans: Vec<&String> = assigned.iter().filter(|(_, w)| !live.contains(*w)).map(|(r, _)| r).collect();
            if live.is_empty() {
                prop_assert!(moves.is_empty());
            } else {
                prop_assert_eq!(moves.iter().map(|(r, _)| r).collect::<Vec<_>>(), orphans);
                prop_assert!(moves.iter().all(|(_, w)| live.contains(w)));
                // After the moves, the orphans are spread so that no worker that received one
                // ends more than one above the least-loaded worker.
                let mut after: BTreeMap<String, usize> = live.iter().map(|w| (w.clone(), 0)).collect();
                let mut final_assign = assigned.clone();
                for (r, w) in &moves { final_assign.insert(r.clone(), w.clone()); }
                for w in final_assign.values() { *after.get_mut(w).unwrap() += 1; }
                let min = *after.values().min().unwrap();
                for (_, w) in &moves {
                    prop_assert!(after[w] <= min + 1 || after[w] <= assigned.values().filter(|x| *x == w).count());
                }
            }
        }
    }
}
