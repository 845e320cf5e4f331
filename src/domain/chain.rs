//! Checks that a sequence of events is the unbroken hash chain the writer produced: seqs 1, 2, 3
//! without gaps, each event's hash covering its content, each linking to the hash before it.

use super::event::Event;
use super::ids::{Digest256, Seq};

/// The first way in which a log is not the chain the writer wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {expected} is missing (the next stored event is {found})")]
    Missing { expected: Seq, found: Seq },
    #[error("event {seq} was altered: its content does not match its hash")]
    Altered { seq: Seq },
    #[error("event {seq} does not link to the event before it")]
    Unlinked { seq: Seq },
}

impl ChainError {
    /// The first seq at which the chain is broken.
    pub fn seq(&self) -> Seq {
        match self {
            ChainError::Missing { expected, .. } => *expected,
            ChainError::Altered { seq } | ChainError::Unlinked { seq } => *seq,
        }
    }
}

/// Walks the log in order, one event at a time.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    head: Seq,
    head_hash: Digest256,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { head: Seq::ZERO, head_hash: Digest256::GENESIS }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, event: &Event) -> Result<(), ChainError> {
        let expected = self.head.next();
        if event.seq != expected {
            return Err(ChainError::Missing { expected, found: event.seq });
        }
        if event.computed_hash() != event.hash {
            return Err(ChainError::Altered { seq: event.seq });
        }
        if event.prev_hash != self.head_hash {
            return Err(ChainError::Unlinked { seq: event.seq });
        }
        self.head = event.seq;
        self.head_hash = event.hash;
        Ok(())
    }

    /// The last event checked, and its hash.
    pub fn head(&self) -> (Seq, Digest256) {
        (self.head, self.head_hash)
    }
}
