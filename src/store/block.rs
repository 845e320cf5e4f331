//! The framing of a log block: several consecutive stored events in one sled value.
//!
//! A block is written once, by the append that made its events durable, and never changed. Its
//! sled key is the seq of its first event (8 bytes, big-endian), and the event at position `i`
//! has seq `first + i`. The value is:
//!
//! - one byte, the block format ([`BLOCK_FORMAT`]);
//! - the number of events, as an LEB128 varint (at least 1);
//! - for each event, its length as an LEB128 varint and then its stored JSON, byte for byte what
//!   [`crate::domain::Event::seal_encoded`] produced and the hash chain covers.
//!
//! Keeping many events in one value is what makes the log cheap to write and to read: sled spends
//! about as much CPU on a key as on many kilobytes of value, so one key per commit batch instead of
//! one per event saves most of that cost on the write path, and a replay iterates a few thousand
//! keys instead of a million.

use super::codec::{Dec, Enc};

/// The format byte every block starts with. A different framing must take a new number, so that
/// a build never misreads a block written by another.
pub const BLOCK_FORMAT: u8 = 1;

/// Why a block's framing cannot be read. The payloads inside are checked by the event decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block format {0} is unknown to this build")]
    UnknownFormat(u8),
    #[error("block is empty")]
    Empty,
    #[error("block framing ends inside event {index} of {count}")]
    Truncated { index: u64, count: u64 },
    #[error("block has {0} bytes after its last event")]
    Trailing(usize),
}

/// Frames `events`, oldest first, as one block.
pub fn encode<'a>(events: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Enc::default();
    out.u8(BLOCK_FORMAT);
    out.u64(events.len() as u64);
    for event in events {
        out.bytes(event);
    }
    out.0
}

/// The events of a block, oldest first, without copying them.
pub fn decode(block: &[u8]) -> Result<Vec<&[u8]>, BlockError> {
    let mut d = Dec(block);
    let format = d.u8().map_err(|_| BlockError::Empty)?;
    if format != BLOCK_FORMAT {
        return Err(BlockError::UnknownFormat(format));
    }
    let count = d.u64().map_err(|_| BlockError::Truncated { index: 0, count: 0 })?;
    if count == 0 {
        return Err(BlockError::Empty);
    }
    // Every event takes at least one length byte, so a count beyond the bytes left is damage;
    // checking first keeps a corrupt count from reserving a huge vector.
    if count > d.0.len() as u64 {
        return Err(BlockError::Truncated { index: d.0.len() as u64, count });
    }
    let mut events = Vec::with_capacity(count as usize);
    for index in 0..count {
        events.push(d.bytes().map_err(|_| BlockError::Truncated { index, count })?);
    }
    if !d.0.is_empty() {
        return Err(BlockError::Trailing(d.0.len()));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framing_is_pinned() {
        let events: [&[u8]; 3] = [b"{}", b"", &[b'x'; 200]];
        let block = encode(events.iter().copied());
        // Format 1, three events, then each length (200 takes two varint bytes) and its bytes.
        assert_eq!(&block[..6], &[1, 3, 2, b'{', b'}', 0]);
        assert_eq!(&block[6..8], &[0xc8, 0x01]);
        assert_eq!(block.len(), 8 + 200);
        assert_eq!(decode(&block).unwrap(), events);
    }

    #[test]
    fn damaged_framing_is_refused_not_misread() {
        let block = encode([b"abc".as_slice(), b"de"].into_iter());
        assert_eq!(decode(&[]), Err(BlockError::Empty));
        assert_eq!(decode(&[2, 1, 0]), Err(BlockError::UnknownFormat(2)));
        assert_eq!(decode(&[1, 0]), Err(BlockError::Empty));
        assert_eq!(
            decode(&block[..block.len() - 1]),
            Err(BlockError::Truncated { index: 1, count: 2 })
        );
        let mut padded = block.clone();
        padded.push(0);
        assert_eq!(decode(&padded), Err(BlockError::Trailing(1)));
        // A count far beyond the bytes present.
        assert!(matches!(decode(&[1, 0xff, 0xff, 0x03, 0]), Err(BlockError::Truncated { .. })));
        // Every truncation of a good block is refused.
        for end in 0..block.len() {
            assert!(decode(&block[..end]).is_err(), "cut at {end} was accepted");
        }
    }
}
