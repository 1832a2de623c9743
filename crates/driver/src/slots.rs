//! Due slots waiting for a free user.
//!
//! The dispatcher pushes each slot as it falls due; whichever user is free takes it. A `Notify`
//! wakes one waiting user per slot: tokio keeps its waiters in an intrusive list, so a user joins
//! and leaves it in constant time, where an MPMC channel's async receivers (flume's) cost a scan
//! of every waiting user each time one is served. With hundreds of users that scan was a tenth of
//! the driver's CPU.
//!
//! The queue also knows how many users are waiting in it, so the dispatcher can tell a slot that
//! found a free user from one that had to wait for a user to finish: the count of the latter
//! (`slots_waited_for_user` in the results) tells "the server kept every user busy" from "the
//! driver's CPU fell behind", which send lag alone cannot.

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
    /// Users waiting in [`SlotQueue::pop`] for a slot, woken or not yet.
    idle: usize,
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
    /// Returns whether the slot has to wait for a user: no user was waiting for it (each waiting
    /// user already has a slot queued ahead of this one).
    pub async fn push(&self, slot: Slot) -> bool {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = self.lock();
                if state.slots.len() < CAPACITY {
                    let waits = state.slots.len() >= state.idle;
                    state.slots.push_back(slot);
                    drop(state);
                    self.ready.notify_one();
                    return waits;
                }
            }
            space.await;
        }
    }

    /// The oldest due slot, waiting for one; `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<Slot> {
        let mut idle = Idle {
            queue: self,
            counted: false,
        };
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            // Registered before the check, so a push or a close between the two still wakes us.
            ready.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(slot) = state.slots.pop_front() {
                    idle.leave(&mut state);
                    let was_full = state.slots.len() + 1 == CAPACITY;
                    drop(state);
                    if was_full {
                        self.space.notify_one();
                    }
                    return Some(slot);
                }
                if state.closed {
                    idle.leave(&mut state);
                    return None;
                }
                if !idle.counted {
                    state.idle += 1;
                    idle.counted = true;
                }
            }
            ready.await;
        }
    }

    /// Whether no slot is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().slots.is_empty()
    }

    /// No more slots: users drain what is queued, then [`SlotQueue::pop`] returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }
}

/// A user counted as waiting in [`SlotQueue::pop`]; uncounted when it leaves, however it leaves
/// (a dropped `pop` future included).
struct Idle<'a> {
    queue: &'a SlotQueue,
    counted: bool,
}

impl Idle<'_> {
    fn leave(&mut self, state: &mut State) {
        if self.counted {
            state.idle -= 1;
            self.counted = false;
        }
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut state = self.queue.lock();
            self.leave(&mut state);
        }
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_slot_waits_for_a_user_only_when_none_is_waiting_for_it() {
        let queue = Arc::new(SlotQueue::new());
        // No user yet: the slot waits.
        assert!(queue.push(slot(0)).await);
        assert_eq!(queue.pop().await.map(|s| s.seq), Some(0));
        // Two users waiting: two slots find one each, the third waits.
        let users: Vec<_> = (0..2)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.pop().await.map(|s| s.seq) })
            })
            .collect();
        while queue.lock().idle < 2 {
            tokio::task::yield_now().await;
        }
        assert!(!queue.push(slot(1)).await);
        assert!(!queue.push(slot(2)).await);
        assert!(queue.push(slot(3)).await);
        let mut got = Vec::new();
        for user in users {
            got.push(user.await.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, vec![Some(1), Some(2)]);
        assert_eq!(
            queue.lock().idle,
            0,
            "users that took a slot are no longer waiting"
        );
        // A user that stops waiting (its pop dropped) is no longer counted.
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let _ = queue.pop().await; // takes slot 3
                queue.pop().await
            })
        };
        while queue.lock().idle < 1 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(queue.lock().idle, 0);
        assert!(queue.push(slot(4)).await);
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
