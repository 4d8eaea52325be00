//! A value that requests read and a reload replaces: the tokens, the TLS certificate, the
//! text search sample. Readers take an `Arc` of the value of the moment and keep it for as
//! long as they need; a replacement never waits for them.

use std::sync::{Arc, RwLock};

/// The value in force, replaced as a whole.
#[derive(Debug, Default)]
pub struct Replaceable<T>(RwLock<Arc<T>>);

impl<T> Replaceable<T> {
    /// Holds `value` until it is replaced.
    pub fn new(value: T) -> Self {
        Replaceable(RwLock::new(Arc::new(value)))
    }

    /// The value as it is now.
    pub fn current(&self) -> Arc<T> {
        // The lock guards only a pointer swap, so a panic elsewhere cannot leave the value
        // half-written: a poisoned lock is still good to read.
        match self.0.read() {
            Ok(value) => value.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `value` in force for every reader from now on.
    pub fn replace(&self, value: T) {
        let value = Arc::new(value);
        match self.0.write() {
            Ok(mut current) => *current = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}
