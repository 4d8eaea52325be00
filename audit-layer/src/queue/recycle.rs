//! Record buffers passed back from the writer to the emitting threads for reuse.
//!
//! A queued record is one buffer, allocated on the emitting thread and dropped on the
//! writer thread. With glibc, a chunk freed by another thread goes back to the arena it
//! came from under that arena's lock, so the emitting thread's next `malloc` could wait
//! on the writer's `free`: a futex wake-up measured at about a tenth of an event's cost.
//! Instead, a dropped record's buffer joins a list of the dropping thread; a full list is
//! moved to a shared pool under one lock; an emitting thread takes buffers from its own
//! list, refilling it from the pool, likewise under one lock per [`MOVE`] buffers.
//!
//! What is kept is bounded: [`POOL_MAX_BYTES`] of buffers in the pool, `2 × MOVE` per
//! thread, none larger than [`BUFFER_MAX`] bytes. The pool holds a whole writer batch of
//! ordinary records (8,192 by default, a few hundred bytes each): a smaller pool freed
//! the rest of each batch, and the emitting threads then allocated as many anew (43 % of
//! the buffers, measured by `caller_latency`). No thread ever waits for the pool: when it
//! is busy, a buffer is allocated or freed as usual.

use std::cell::RefCell;
use std::sync::Mutex;

/// Buffers moved between a thread's list and the pool at a time.
const MOVE: usize = 64;
/// Bytes of buffers the shared pool keeps at most (their capacities).
const POOL_MAX_BYTES: usize = 8 << 20;
/// Buffers with more room than this are freed, not kept.
const BUFFER_MAX: usize = 2048;
/// New buffers are rounded up to a multiple of this, so that a reused buffer usually
/// fits the next record without growing.
const ROUND: usize = 128;

/// Buffers kept for any thread, and the sum of their capacities.
struct Pool {
    buffers: Vec<String>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    buffers: Vec::new(),
    bytes: 0,
});

thread_local! {
    static LOCAL: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `len` bytes: a reused one when there is one.
pub(crate) fn buffer(len: usize) -> String {
    let reused = LOCAL
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            if local.is_empty() {
                refill(&mut local);
            }
            local.pop()
        })
        .ok()
        .flatten();
    match reused {
        Some(mut buffer) => {
            buffer.clear();
            buffer.reserve(len);
            buffer
        }
        None => String::with_capacity(len.div_ceil(ROUND).max(1) * ROUND),
    }
}

fn refill(local: &mut Vec<String>) {
    // try_lock: waiting for the writer here would cost more than allocating.
    let Ok(mut pool) = POOL.try_lock() else {
        return;
    };
    let from = pool.buffers.len().saturating_sub(MOVE);
    let moved: usize = pool.buffers[from..].iter().map(String::capacity).sum();
    pool.bytes -= moved;
    local.extend(pool.buffers.drain(from..));
}

/// Keeps `buffer` for reuse, or frees it.
pub(crate) fn recycle(buffer: String) {
    if buffer.capacity() == 0 || buffer.capacity() > BUFFER_MAX {
        return;
    }
    let _ = LOCAL.try_with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return;
        };
        if local.capacity() == 0 {
            local.reserve_exact(2 * MOVE);
        }
        if local.len() >= 2 * MOVE {
            spill(&mut local);
        }
        if local.len() < 2 * MOVE {
            local.push(buffer);
        }
    });
}

fn spill(local: &mut Vec<String>) {
    let from = local.len().saturating_sub(MOVE);
    // try_lock here too: an emitting thread spills when it drops records (a full queue),
    // and no thread should wait for the pool; when it is busy the buffers are just freed.
    if let Ok(mut pool) = POOL.try_lock() {
        let moving: usize = local[from..].iter().map(String::capacity).sum();
        if pool.bytes + moving <= POOL_MAX_BYTES {
            pool.bytes += moving;
            pool.buffers.extend(local.drain(from..));
        }
    }
    // When the pool was full or busy, the buffers are freed here, outside its lock.
    local.truncate(from);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool is shared by the whole process, and a thread that finds it busy frees
    /// its buffers instead of waiting (by design): these tests take turns, so that one
    /// does not count another's buffers or lose its own to another's lock.
    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        static TURN: Mutex<()> = Mutex::new(());
        TURN.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn a_recycled_buffer_comes_back_empty_with_its_room() {
        let _turn = one_at_a_time();
        let mut first = buffer(100);
        first.push_str("old contents");
        let room = first.capacity();
        let address = first.as_ptr();
        recycle(first);
        let second = buffer(10);
        assert_eq!(second, "");
        assert_eq!(second.capacity(), room);
        assert_eq!(second.as_ptr(), address, "the same allocation, reused");
    }

    #[test]
    fn oversized_and_empty_buffers_are_not_kept() {
        let _turn = one_at_a_time();
        let kept = || LOCAL.with(|local| local.borrow().len());
        let before = kept();
        recycle(String::with_capacity(BUFFER_MAX + 1));
        recycle(String::new());
        assert_eq!(kept(), before);
        recycle(String::with_capacity(BUFFER_MAX));
        assert_eq!(kept(), before + 1);
    }

    #[test]
    fn a_whole_writer_batch_comes_back_to_the_emitting_threads() {
        let _turn = one_at_a_time();
        const BATCH: usize = 8192;
        // The writer's thread drops a batch of ordinary records...
        let returned: std::collections::HashSet<usize> = std::thread::spawn(|| {
            (0..BATCH)
                .map(|_| {
                    let buffer = String::with_capacity(384);
                    let address = buffer.as_ptr() as usize;
                    recycle(buffer);
                    address
                })
                .collect()
        })
        .join()
        .unwrap();
        // ...and an emitting thread gets them back, but for the few the writer's own list
        // kept (freed with its thread) and any another test took meanwhile. It takes more
        // than a batch, as buffers that other tests left in the shared pool come first.
        let reused = std::thread::spawn(move || {
            let taken: Vec<String> = (0..2 * BATCH).map(|_| buffer(300)).collect();
            taken
                .iter()
                .filter(|b| returned.contains(&(b.as_ptr() as usize)))
                .count()
        })
        .join()
        .unwrap();
        assert!(reused >= BATCH - 4 * MOVE, "{reused} of {BATCH} reused");
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_buffers() {
        let _turn = one_at_a_time();
        let kept = || LOCAL.with(|local| local.borrow().len());
        for _ in 0..10 * MOVE {
            recycle(String::with_capacity(16));
        }
        assert!(kept() <= 2 * MOVE, "{} kept", kept());
        assert!(kept() >= MOVE, "{} kept", kept());
    }
}
