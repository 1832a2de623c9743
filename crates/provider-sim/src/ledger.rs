//! The record of what the providers accepted: one entry per idempotency key, duplicates counted.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use signup_core::Channel;
use uuid::Uuid;

/// One delivery: the first accepted send of an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub key: String,
    pub channel: Channel,
    pub registration_id: Uuid,
    /// When the send reached the provider (before its latency), in UTC.
    pub received_at: DateTime<Utc>,
}

/// Counts for one channel, as `GET /ledger/summary` answers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCounts {
    /// Distinct idempotency keys accepted.
    pub delivered: u64,
    /// Accepted sends of a key already delivered (answered as success, not delivered again).
    pub duplicates: u64,
    /// Sends answered with an error, 429 or an outage 503.
    pub rejected: u64,
}

/// The ledger summary: counts per channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub email: ChannelCounts,
    pub sms: ChannelCounts,
    pub push: ChannelCounts,
}

impl Summary {
    pub fn channel(&self, channel: Channel) -> &ChannelCounts {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
            Channel::Push => &self.push,
        }
    }

    fn channel_mut(&mut self, channel: Channel) -> &mut ChannelCounts {
        match channel {
            Channel::Email => &mut self.email,
            Channel::Sms => &mut self.sms,
            Channel::Push => &mut self.push,
        }
    }
}

/// Whether an accepted send was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Delivered,
    Duplicate,
}

/// The ledger itself. Kept behind a mutex by the server; every operation is short.
#[derive(Debug, Default)]
pub struct Ledger {
    keys: HashSet<String>,
    deliveries: Vec<Delivery>,
    summary: Summary,
}

impl Ledger {
    /// Records an accepted send; a key seen before counts as a duplicate.
    pub fn accept(&mut self, delivery: Delivery) -> Accepted {
        let counts = self.summary.channel_mut(delivery.channel);
        if self.keys.contains(&delivery.key) {
            counts.duplicates += 1;
            return Accepted::Duplicate;
        }
        counts.delivered += 1;
        self.keys.insert(delivery.key.clone());
        self.deliveries.push(delivery);
        Accepted::Delivered
    }

    pub fn reject(&mut self, channel: Channel) {
        self.summary.channel_mut(channel).rejected += 1;
    }

    pub fn summary(&self) -> Summary {
        self.summary
    }

    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    /// Forgets everything (between runs).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(key: &str, channel: Channel) -> Delivery {
        Delivery {
            key: key.into(),
            channel,
            registration_id: Uuid::nil(),
            received_at: Utc::now(),
        }
    }

    #[test]
    fn repeated_keys_count_once() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.accept(delivery("a:email", Channel::Email)),
            Accepted::Delivered
        );
        assert_eq!(
            ledger.accept(delivery("a:email", Channel::Email)),
            Accepted::Duplicate
        );
        assert_eq!(
            ledger.accept(delivery("a:sms", Channel::Sms)),
            Accepted::Delivered
        );
        ledger.reject(Channel::Sms);
        let s = ledger.summary();
        assert_eq!(
            s.email,
            ChannelCounts {
                delivered: 1,
                duplicates: 1,
                rejected: 0
            }
        );
        assert_eq!(
            s.sms,
            ChannelCounts {
                delivered: 1,
                duplicates: 0,
                rejected: 1
            }
        );
        assert_eq!(ledger.deliveries().len(), 2);
        ledger.clear();
        assert_eq!(ledger.summary(), Summary::default());
    }
}
