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

    proptest! {
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
