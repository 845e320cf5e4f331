//! Projection snapshots: the whole folded state as of some seq, kept so that the state at any
//! past seq is the nearest snapshot at or before it plus a short fold, not a fold from event 1.
//!
//! Snapshots are derived data, like the checkpoint: they are rebuilt from the log whenever they
//! are missing, unreadable or of another format, and deleting them changes no answer, only its
//! speed. Each one is the state in the binary encoding of [`super::codec`], cut into values of at
//! most [`VALUE_TARGET`] (larger ones would make sled write its leaves to blob files of their
//! own) and written as one atomic sled batch, so a snapshot is there whole or not at all. Chunks
//! of any size read back: the number of chunks is stored, not their size.
//!
//! Tree `snapshots`: seq (u64 BE) + chunk number (u32 BE) -> bytes. Chunk 0 starts with the
//! number of chunks (u32 BE). The concatenated bytes are: format, applied seq, then every
//! integration, API token, idempotency key, monitor (each followed by its run seqs, as gaps from
//! the previous one) and incident, each list led by its length.

use super::codec::{self, Dec, Enc};
use super::{Store, StoreError, VALUE_TARGET};
use crate::domain::{IntegrationId, MonitorKey, Seq, State};

/// Bumped whenever the encoding changes; a snapshot of another format is ignored and rebuilt.
const SNAPSHOT_FORMAT: u64 = 1;

fn bad(what: &str) -> StoreError {
    StoreError::BadCheckpoint(format!("projection snapshot: {what}"))
}

fn key(seq: Seq, chunk: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// The whole state in the snapshot encoding.
fn encode(state: &State) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(1 << 20));
    e.u64(SNAPSHOT_FORMAT);
    e.u64(state.applied().0);
    e.u64(state.integrations().count() as u64);
    for i in state.integrations() {
        codec::put_integration(&mut e, i);
    }
    e.u64(state.api_tokens().count() as u64);
    for t in state.api_tokens() {
        codec::put_api_token(&mut e, t);
    }
    e.u64(state.idempotency_keys().count() as u64);
    for ((integration, key), first) in state.idempotency_keys() {
        e.uuid(&integration.0);
        e.str(key);
        codec::put_idempotent_run(&mut e, first);
    }
    e.u64(state.monitors().count() as u64);
    for m in state.monitors() {
        codec::put_monitor(&mut e, m);
        let runs = state.runs(&m.key());
        e.u64(runs.len() as u64);
        let mut previous = 0;
        for seq in runs {
            e.u64(seq.0 - previous);
            previous = seq.0;
        }
    }
    e.u64(state.incidents().count() as u64);
    for i in state.incidents() {
        codec::put_incident(&mut e, i);
    }
    e.0
}

/// A count read from the data, checked against the bytes left so that a corrupt count cannot
/// make a huge allocation: every item takes at least one byte.
fn count(d: &mut Dec<'_>) -> Result<usize, StoreError> {
    let n = d.u64()?;
    if n > d.0.len() as u64 {
        return Err(bad("count larger than the data"));
    }
    Ok(n as usize)
}

fn decode(bytes: &[u8]) -> Result<State, StoreError> {
    let mut d = Dec(bytes);
    if d.u64()? != SNAPSHOT_FORMAT {
        return Err(bad("another format"));
    }
    let applied = d.seq()?;
    let integrations = (0..count(&mut d)?)
        .map(|_| codec::get_integration(&mut d))
        .collect::<Result<Vec<_>, _>>()?;
    let api_tokens =
        (0..count(&mut d)?).map(|_| codec::get_api_token(&mut d)).collect::<Result<Vec<_>, _>>()?;
    let idempotency = (0..count(&mut d)?)
        .map(|_| {
            let integration = IntegrationId(d.uuid()?);
            let key = d.string()?;
            Ok(((integration, key), codec::get_idempotent_run(&mut d)?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let n = count(&mut d)?;
    let mut monitors = Vec::with_capacity(n);
    let mut runs: Vec<(MonitorKey, Vec<Seq>)> = Vec::with_capacity(n);
    for _ in 0..n {
        let m = codec::get_monitor(&mut d)?;
        let mut seqs = Vec::with_capacity(count(&mut d)?);
        let mut previous = 0u64;
        for _ in 0..seqs.capacity() {
            previous = previous.checked_add(d.u64()?).ok_or_else(|| bad("run seq overflows"))?;
            seqs.push(Seq(previous));
        }
        runs.push((m.key(), seqs));
        monitors.push(m);
    }
    let incidents =
        (0..count(&mut d)?).map(|_| codec::get_incident(&mut d)).collect::<Result<Vec<_>, _>>()?;
    d.finish()?;
    Ok(State::from_parts(applied, integrations, monitors, runs, incidents)
        .with_api_tokens(api_tokens)
        .with_idempotency(idempotency))
}

/// A snapshot encoded and ready to write: one atomic sled batch.
pub struct SnapshotBatch(sled::Batch);

/// Decodes a snapshot that must hold the state at `seq`.
fn decode_at(bytes: &[u8], seq: Seq) -> Result<State, StoreError> {
    let state = decode(bytes)?;
    if state.applied() != seq {
        return Err(bad("holds another seq than its key"));
    }
    Ok(state)
}

impl Store {
    /// Writes a snapshot of `state` under the seq it covers, in one atomic batch. Needs no fsync:
    /// a snapshot lost in a crash is rebuilt from the log.
    pub fn save_snapshot(&self, state: &State) -> Result<(), StoreError> {
        self.apply_snapshot(Store::prepare_snapshot(state))
    }

    /// Writes a snapshot prepared by [`Store::prepare_snapshot`].
    pub fn apply_snapshot(&self, snapshot: SnapshotBatch) -> Result<(), StoreError> {
        self.snapshots.apply_batch(snapshot.0)?;
        Ok(())
    }

    /// Encodes a snapshot of `state` into a batch that [`Store::apply_snapshot`] writes later,
    /// perhaps on another thread, so that the state need not be kept until then.
    pub fn prepare_snapshot(state: &State) -> SnapshotBatch {
        let bytes = encode(state);
        let chunks = bytes.len().div_ceil(VALUE_TARGET).max(1);
        let n = u32::try_from(chunks).expect("fewer chunks than u32::MAX");
        let mut batch = sled::Batch::default();
        for (i, part) in bytes.chunks(VALUE_TARGET).enumerate() {
            let i = u32::try_from(i).expect("fewer chunks than u32::MAX");
            let value = if i == 0 {
                let mut first = Vec::with_capacity(4 + part.len());
                first.extend_from_slice(&n.to_be_bytes());
                first.extend_from_slice(part);
                first
            } else {
                part.to_vec()
            };
            batch.insert(&key(state.applied(), i), value);
        }
        SnapshotBatch(batch)
    }

    /// Writes a snapshot of `state` as [`Store::save_snapshot`] does and, in the same batch,
    /// deletes every other snapshot whose seq is not a multiple of `every`: those are left at
    /// shutdown for the next start, and only the newest is of use.
    pub fn save_head_snapshot(&self, state: &State, every: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in self.snapshots.iter().keys() {
            let key = item?;
            let seq = Seq::from_be_slice(&key[..8]).ok_or_else(|| bad("malformed key"))?;
            if seq != state.applied() && (every == 0 || seq.0 % every != 0) {
                batch.remove(key);
            }
        }
        self.snapshots.apply_batch(batch)?;
        self.save_snapshot(state)
    }

    /// The seq of the latest snapshot at or before `seq`, readable or not.
    pub fn snapshot_seq_at_or_before(&self, seq: Seq) -> Result<Option<Seq>, StoreError> {
        let upper = key(seq.next(), 0);
        match self.snapshots.range(..upper).next_back() {
            None => Ok(None),
            Some(item) => Ok(Seq::from_be_slice(&item?.0[..8])),
        }
    }

    /// The seqs of every snapshot, oldest first.
    pub fn snapshot_seqs(&self) -> Result<Vec<Seq>, StoreError> {
        let mut seqs = Vec::new();
        for item in self.snapshots.iter().keys() {
            let seq = Seq::from_be_slice(&item?[..8]).ok_or_else(|| bad("malformed key"))?;
            if seqs.last() != Some(&seq) {
                seqs.push(seq);
            }
        }
        Ok(seqs)
    }

    /// The snapshot taken at exactly `seq`, or `Ok(None)` when there is none. An unreadable one,
    /// or one of another format, is an error: the caller folds from an earlier point instead.
    pub fn load_snapshot(&self, seq: Seq) -> Result<Option<State>, StoreError> {
        let Some(bytes) = self.snapshot_bytes(seq)? else {
            return Ok(None);
        };
        decode_at(&bytes, seq).map(Some)
    }

    /// The concatenated chunks of the snapshot at `seq`.
    fn snapshot_bytes(&self, seq: Seq) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(first) = self.snapshots.get(key(seq, 0))? else {
            return Ok(None);
        };
        let (n, head) = first.split_at_checked(4).ok_or_else(|| bad("chunk 0 too short"))?;
        let n = u32::from_be_bytes(n.try_into().expect("4 bytes"));
        let mut bytes = head.to_vec();
        for i in 1..n {
            let part = self.snapshots.get(key(seq, i))?.ok_or_else(|| bad("a chunk is missing"))?;
            bytes.extend_from_slice(&part);
        }
        Ok(Some(bytes))
    }

    /// Deletes every snapshot.
    pub fn clear_snapshots(&self) -> Result<(), StoreError> {
        self.snapshots.clear()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A corrupt count cannot make the decoder allocate more than the data could hold.
    #[test]
    fn truncated_or_padded_snapshots_are_refused() {
        let bytes = encode(&State::default());
        assert_eq!(decode(&bytes).unwrap(), State::default());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut huge = Enc::default();
        huge.u64(SNAPSHOT_FORMAT);
        huge.u64(0);
        huge.u64(u64::MAX);
        assert!(decode(&huge.0).is_err());
    }
}
