//! Shared, immutable values of the critical store: names (permissions, role
//! ids, statuses), name lists (a role's permissions, a user's roles) and user
//! access shapes (status + roles), each kept once per process.
//!
//! Why: the store's values repeat. A million users share a few hundred
//! distinct (status, roles) pairs; the tenants of a pool share the product's
//! operation codes and permission names. Storing each user's access as one
//! pointer to a shared shape, and each role's permissions as one pointer to a
//! shared list, turns ~500 small allocations per small tenant into a few
//! pointers, and a user's access into 8 bytes.
//!
//! Concurrency: the process-wide sets are behind one `Mutex`, held for a hash
//! lookup (never across an await). A full load goes through a [`Local`] front
//! cache instead, which takes the lock once per *distinct* value, not once per
//! row. Values are `Arc`s: equal contents compare equal whether or not they
//! were interned (so a value made without the interner is still correct, only
//! not shared).
//!
//! Memory: an entry that only the interner still holds (`strong_count == 1`)
//! is garbage; [`purge`] runs by itself whenever a set has doubled since its
//! last purge, so what released tenants and replaced values used is given
//! back without a timer.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};

/// An interned name.
pub type Name = Arc<str>;
/// An interned list of names.
pub type Names = Arc<[Name]>;

/// A user's access as the store keeps it: one shared (status, roles) shape.
/// Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Access(Arc<Shape>);

#[derive(PartialEq, Eq, Hash)]
struct Shape {
    /// `active`, `suspended`, ...
    status: Name,
    /// Role ids.
    roles: Names,
}

impl Access {
    /// The interned access for `status` and `roles`.
    pub fn new<S: AsRef<str>>(status: &str, roles: &[S]) -> Access {
        let status = name(status);
        let roles = names(roles);
        GLOBAL.shape(Shape { status, roles })
    }

    /// `active`, `suspended`, ...
    pub fn status(&self) -> &str {
        &self.0.status
    }

    /// Role ids.
    pub fn roles(&self) -> &[Name] {
        &self.0.roles
    }

    /// The address of the shared shape: equal for clones of one interned
    /// access (a store's table of distinct shapes keys on it; it holds the
    /// access, so the address is not reused while it is a key).
    pub fn shape_addr(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The shared role list (for a new access with another status).
    pub fn role_list(&self) -> &Names {
        &self.0.roles
    }

    /// The interned access for `status` and an already interned role list.
    pub fn with_roles(status: &str, roles: Names) -> Access {
        GLOBAL.shape(Shape {
            status: name(status),
            roles,
        })
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("status", &self.status())
            .field("roles", &self.roles())
            .finish()
    }
}

/// One process-wide set with its purge threshold.
struct Set<T> {
    /// The interned values.
    items: HashSet<T, foldhash::fast::FixedState>,
    /// Purge when `items` grows past this.
    purge_at: usize,
}

/// Below this size a set is never purged (purging costs a pass over it).
const PURGE_FLOOR: usize = 4096;

impl<T: Eq + Hash + Clone> Set<T> {
    fn new() -> Self {
        Set {
            items: HashSet::default(),
            purge_at: PURGE_FLOOR,
        }
    }

    /// The interned copy of `v` (inserting `v` when there is none).
    fn get_or_insert(&mut self, v: T, unused: impl Fn(&T) -> bool) -> T {
        if let Some(held) = self.items.get(&v) {
            return held.clone();
        }
        if self.items.len() >= self.purge_at {
            self.items.retain(|x| !unused(x));
            self.purge_at = (self.items.len() * 2).max(PURGE_FLOOR);
        }
        self.items.insert(v.clone());
        v
    }
}

struct Global {
    names: Mutex<Set<Name>>,
    lists: Mutex<Set<Names>>,
    shapes: Mutex<Set<Arc<Shape>>>,
}

static GLOBAL: LazyLock<Global> = LazyLock::new(|| Global {
    names: Mutex::new(Set::new()),
    lists: Mutex::new(Set::new()),
    shapes: Mutex::new(Set::new()),
});

impl Global {
    fn name(&self, s: &str) -> Name {
        let mut set = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = set.items.get(s) {
            return held.clone();
        }
        set.get_or_insert(Name::from(s), |x| Arc::strong_count(x) == 1)
    }

    fn list(&self, v: Names) -> Names {
        self.lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(v, |x| Arc::strong_count(x) == 1)
    }

    fn shape(&self, s: Shape) -> Access {
        let mut set = self.shapes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = set.items.get(&s) {
            return Access(held.clone());
        }
        Access(set.get_or_insert(Arc::new(s), |x| Arc::strong_count(x) == 1))
    }
}

/// The interned `s`.
pub fn name(s: &str) -> Name {
    GLOBAL.name(s)
}

/// The interned list of `items` (each item interned too).
pub fn names<S: AsRef<str>>(items: &[S]) -> Names {
    let v: Names = items.iter().map(|s| name(s.as_ref())).collect();
    GLOBAL.list(v)
}

/// Frees what only the interner still holds, now (it also happens by itself
/// as the sets grow). Returns the number of entries left in all.
pub fn purge() -> usize {
    fn one<T: Eq + Hash + Clone>(m: &Mutex<Set<T>>, unused: impl Fn(&T) -> bool) -> usize {
        let mut set = m.lock().unwrap_or_else(|p| p.into_inner());
        set.items.retain(|x| !unused(x));
        set.items.shrink_to_fit();
        set.purge_at = (set.items.len() * 2).max(PURGE_FLOOR);
        set.items.len()
    }
    // Shapes first: they hold lists and names, lists hold names.
    one(&GLOBAL.shapes, |x| Arc::strong_count(x) == 1)
        + one(&GLOBAL.lists, |x| Arc::strong_count(x) == 1)
        + one(&GLOBAL.names, |x| Arc::strong_count(x) == 1)
}

/// A front cache for one full load: each distinct value takes the global lock
/// once; the rows after it hit this cache. Not shared between threads.
#[derive(Default)]
pub struct Local {
    /// Hash of (status, roles) → the shapes seen with that hash.
    shapes: std::collections::HashMap<u64, Vec<Access>, NoHash>,
    /// Names seen by this load.
    names: HashSet<Name, foldhash::fast::FixedState>,
}

/// The map above is keyed by a hash already.
#[derive(Default, Clone, Copy)]
struct NoHash;
impl BuildHasher for NoHash {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}
#[derive(Default)]
struct PassThrough(u64);
impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Local {
    /// The interned access for a snapshot row's status and roles.
    pub fn access<S: AsRef<str>>(&mut self, status: &str, roles: &[S]) -> Access {
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        status.hash(&mut h);
        roles.len().hash(&mut h);
        for r in roles {
            r.as_ref().hash(&mut h);
        }
        let key = h.finish();
        let bucket = self.shapes.entry(key).or_default();
        if let Some(a) = bucket.iter().find(|a| {
            a.status() == status
                && a.roles().len() == roles.len()
                && a.roles().iter().zip(roles).all(|(x, y)| &**x == y.as_ref())
        }) {
            return a.clone();
        }
        let a = Access::new(status, roles);
        bucket.push(a.clone());
        a
    }

    /// The interned list of a snapshot row's names.
    pub fn names<S: AsRef<str>>(&mut self, items: &[S]) -> Names {
        let v: Names = items.iter().map(|s| self.name(s.as_ref())).collect();
        GLOBAL.list(v)
    }

    /// The interned `s`.
    pub fn name(&mut self, s: &str) -> Name {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n = name(s);
        self.names.insert(n.clone());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let a = Access::new("active", &["sales", "ops"]);
        let b = Access::new("active", &["sales".to_string(), "ops".to_string()]);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a.roles()[0].as_ref(), "sales");
        let c = Access::new("suspended", &["sales", "ops"]);
        assert_ne!(a, c);
        assert!(Arc::ptr_eq(a.role_list(), c.role_list()), "one role list");
        let mut local = Local::default();
        let d = local.access("active", &["sales", "ops"]);
        assert!(Arc::ptr_eq(&a.0, &d.0));
        let p = names(&["x.read", "x.*"]);
        let q = local.names(&["x.read", "x.*"]);
        assert!(Arc::ptr_eq(&p, &q));
    }

    #[test]
    fn unused_values_are_purged() {
        let unique = format!("purge-me-{}", rand::random::<u64>());
        let a = Access::new("active", &[unique.as_str()]);
        let weak = Arc::downgrade(&a.0);
        drop(a);
        purge();
        assert!(weak.upgrade().is_none(), "freed once nothing holds it");
    }
}
