//! Due slots waiting for a free user.
//!
//! The dispatcher pushes each slot as it falls due; whichever user is free takes it. A `Notify`
//! wakes one waiting user per slot: tokio keeps its waiters in an intrusive list, so a user joins
//! and leaves it in constant time, where an MPMC channel's async receivers (flume's) cost a scan
//! of every waiting user each time one is served. With hundreds of users that scan was a tenth of
//! the driver's CPU.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::schedule::Slot;

/// Slots the dispatcher may hold ready before it waits for users: a backlog this deep already
/// means seconds of send lag at the rates where it can happen, and it keeps memory bounded.
pub const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct State {
    slots: VecDeque<Slot>,
    closed: bool,
}

/// A bounded queue of due slots with async waits on both ends.
#[derive(Debug, Default)]
pub struct SlotQueue {
    state: Mutex<State>,
    /// A slot was pushed, or the queue closed.
    ready: Notify,
    /// A slot was taken from a full queue.
    space: Notify,
}

impl SlotQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a due slot, waiting while the queue is full (every user busy for a long while).
    pub async fn push(&self, slot: Slot) {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = self.lock();
                if state.slots.len() < CAPACITY {
                    state.slots.push_back(slot);
                    drop(state);
                    self.ready.notify_one();
                    return;
                }
            }
            space.await;
        }
    }

    /// The oldest due slot, waiting for one; `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<Slot> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            // Registered before the check, so a push or a close between the two still wakes us.
            ready.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(slot) = state.slots.pop_front() {
                    let was_full = state.slots.len() + 1 == CAPACITY;
                    drop(state);
                    if was_full {
                        self.space.notify_one();
                    }
                    return Some(slot);
                }
                if state.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// No more slots: users drain what is queued, then [`SlotQueue::pop`] returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn slot(seq: u64) -> Slot {
        Slot {
            seq,
            at: Duration::ZERO,
            phone: false,
            device: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_slot_reaches_exactly_one_user_and_users_end_on_close() {
        let queue = Arc::new(SlotQueue::new());
        let users: Vec<_> = (0..50)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(s) = queue.pop().await {
                        got.push(s.seq);
                        if s.seq % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    got
                })
            })
            .collect();
        // More than the capacity, so the dispatcher side waits for room too.
        let total = 3 * CAPACITY as u64;
        for seq in 0..total {
            queue.push(slot(seq)).await;
        }
        queue.close();
        let mut all = Vec::new();
        for user in users {
            all.extend(user.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..total).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_closed_queue_still_hands_out_what_it_holds() {
        let queue = SlotQueue::new();
        queue.push(slot(1)).await;
        queue.close();
        assert_eq!(queue.pop().await.map(|s| s.seq), Some(1));
        assert!(queue.pop().await.is_none());
    }
}
