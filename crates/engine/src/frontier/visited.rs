//! The visited set: one 64-bit word per URL seen in a run, which also remembers the URL's
//! best depth and whether its row waits spilled in the database.
//!
//! A word is the URL's dedup key with its low byte replaced: bit 7 says *spilled*, bits 0-6
//! hold the depth (127 stands for 127 or more). URLs are told apart by the remaining 56 bits
//! (at ten million URLs, the odds that two of them share those bits are below one in a
//! thousand). So a spilled URL found again closer to a seed is known to be waiting, and at
//! what depth, without keeping anything else per URL.

use hashbrown::HashTable;

const LOW: u64 = 0xFF;
const SPILLED: u64 = 0x80;
const DEPTH: u64 = 0x7F;

/// What the visited set knows of a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Its best depth so far, at most [`Mark::DEPTH_CAP`].
    pub depth: u32,
    /// Its best row waits spilled (in the database only).
    pub spilled: bool,
}

impl Mark {
    /// Depths from this one up are recorded as this one.
    pub const DEPTH_CAP: u32 = DEPTH as u32;

    /// A depth as the set records it.
    pub fn capped(depth: u32) -> u32 {
        depth.min(Self::DEPTH_CAP)
    }
}

#[derive(Default)]
pub(crate) struct Visited {
    table: HashTable<u64>,
}

fn id(key: u64) -> u64 {
    key & !LOW
}

/// The table's hash of an id: its low byte is zero, so the high half is folded in.
fn hash(word: u64) -> u64 {
    let id = id(word);
    id ^ (id >> 32)
}

fn mark(word: u64) -> Mark {
    Mark { depth: (word & DEPTH) as u32, spilled: word & SPILLED != 0 }
}

fn word(key: u64, m: Mark) -> u64 {
    id(key) | u64::from(Mark::capped(m.depth)) | if m.spilled { SPILLED } else { 0 }
}

impl Visited {
    /// What is known of `key`, if it was seen.
    pub fn get(&self, key: u64) -> Option<Mark> {
        let k = id(key);
        self.table.find(hash(k), |w| id(*w) == k).map(|w| mark(*w))
    }

    /// Records `key` with `m`, replacing what was known. Returns whether it was new.
    pub fn set(&mut self, key: u64, m: Mark) -> bool {
        let k = id(key);
        let w = word(key, m);
        match self.table.find_mut(hash(k), |x| id(*x) == k) {
            Some(slot) => {
                *slot = w;
                false
            }
            None => {
                self.table.insert_unique(hash(k), w, |x| hash(*x));
                true
            }
        }
    }

    /// Records `key`, known not to be in the set, with `m`.
    pub fn add_new(&mut self, key: u64, m: Mark) {
        debug_assert!(self.get(key).is_none());
        self.table.insert_unique(hash(id(key)), word(key, m), |x| hash(*x));
    }

    /// Records `key` with `m` unless it was seen. Returns whether it was new.
    pub fn insert(&mut self, key: u64, m: Mark) -> bool {
        if self.get(key).is_some() {
            return false;
        }
        self.add_new(key, m);
        true
    }

    /// A spilled row of `key` at `depth` is read back: whether it is still the URL's best one
    /// (no closer row was queued since); if so, the URL is no longer counted as spilled. One
    /// lookup.
    pub fn read_back(&mut self, key: u64, depth: u32) -> bool {
        let k = id(key);
        match self.table.find_mut(hash(k), |x| id(*x) == k) {
            Some(w) if mark(*w).depth < Mark::capped(depth) => false,
            Some(w) => {
                *w &= !SPILLED;
                true
            }
            None => true,
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: u64) {
        let k = id(key);
        if let Ok(entry) = self.table.find_entry(hash(k), |x| id(*x) == k) {
            entry.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_depth_and_spilled_per_key() {
        let mut v = Visited::default();
        let a = 0x1234_5678_9abc_def0;
        let b = a ^ 0x100; // differs above the low byte
        assert!(v.set(a, Mark { depth: 3, spilled: true }));
        assert!(v.insert(b, Mark { depth: 500, spilled: false }));
        assert!(!v.insert(a, Mark { depth: 0, spilled: false }));
        assert_eq!(v.get(a), Some(Mark { depth: 3, spilled: true }));
        assert_eq!(v.get(b), Some(Mark { depth: Mark::DEPTH_CAP, spilled: false }));
        assert!(!v.set(a, Mark { depth: 1, spilled: false }));
        assert_eq!(v.get(a), Some(Mark { depth: 1, spilled: false }));
        // The low byte is not part of a URL's identity.
        assert_eq!(v.get(a ^ 0x7F), Some(Mark { depth: 1, spilled: false }));
        assert_eq!(v.get(a ^ 0x1_0000_0000), None);
        assert_eq!(v.len(), 2);
        // Read back: a row deeper than the best is not the best; the best one is no longer
        // spilled.
        v.set(a, Mark { depth: 1, spilled: true });
        assert!(!v.read_back(a, 2));
        assert_eq!(v.get(a), Some(Mark { depth: 1, spilled: true }));
        assert!(v.read_back(a, 1));
        assert_eq!(v.get(a), Some(Mark { depth: 1, spilled: false }));
        assert!(v.read_back(0xdead_0000_0000_0000, 3), "a key never seen is kept");
        v.remove(a);
        assert_eq!((v.get(a), v.len()), (None, 1));
    }

    #[test]
    fn many_keys_stay_apart() {
        let mut v = Visited::default();
        let keys: Vec<u64> =
            (0..50_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 17)).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(v.insert(*k, Mark { depth: (i % 100) as u32, spilled: i % 2 == 0 }));
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(v.get(*k), Some(Mark { depth: (i % 100) as u32, spilled: i % 2 == 0 }));
        }
        assert_eq!(v.len(), keys.len());
    }
}
