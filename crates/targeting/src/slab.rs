//! Dense ids for clusters, groups and bundles, and cheap hashing of them.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

pub type Id = u32;

/// A multiplicative hasher for dense `u32` ids: far cheaper than SipHash,
/// and ids are not attacker-controlled.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type IdSet = HashSet<Id, BuildHasherDefault<IdHasher>>;
pub type IdMap<V> = HashMap<Id, V, BuildHasherDefault<IdHasher>>;

/// A vector of slots with a free list, so ids stay small and reusable.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<Id>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> Id {
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(value);
                id
            }
            None => {
                self.slots.push(Some(value));
                Id::try_from(self.slots.len() - 1).expect("fewer than 2^32 objects")
            }
        }
    }

    pub fn remove(&mut self, id: Id) -> Option<T> {
        let value = self.slots.get_mut(id as usize)?.take();
        if value.is_some() {
            self.free.push(id);
        }
        value
    }

    /// Panics on a dangling id: the index never holds one.
    pub fn get(&self, id: Id) -> &T {
        self.slots[id as usize].as_ref().expect("live id")
    }

    pub fn get_mut(&mut self, id: Id) -> &mut T {
        self.slots[id as usize].as_mut().expect("live id")
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}
