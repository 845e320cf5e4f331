//! Durable storage on sled: the append-only event log and the projection checkpoint. The only
//! module that imports sled.
//!
//! Layout of the sled database in `<data-dir>/log`:
//! - tree `blocks`: the log. Big-endian seq of a block's first event -> a block of consecutive
//!   stored events, see [`block`]. Written only by [`Store::insert`], one or more blocks per
//!   commit batch, never changed afterwards (the one removal is [`Store::discard`] of a batch
//!   whose fsync failed, which was never part of the log).
//! - tree `events`: the log as directories created before blocks hold it, one stored event per
//!   key (big-endian seq -> the event's stored JSON). Read, never written: every seq in it comes
//!   before every seq in `blocks`. Empty in directories created since.
//! - tree `projections`: the checkpoint, see `checkpoint.rs`.
//! - tree `snapshots`: whole projections as of past seqs, for time travel, see `snapshot.rs`.

pub mod block;
mod checkpoint;
mod codec;
mod snapshot;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::domain::{DecodeError, Event, Seq};

pub use checkpoint::{CheckpointBatch, Dirty};
pub use snapshot::SnapshotBatch;

/// Why the store failed. `Corrupt` names the first event that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage engine error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored event {seq} is corrupt: {reason}")]
    Corrupt { seq: Seq, reason: String },
    #[error("{0} is in use by another running incidentd")]
    Locked(PathBuf),
    #[error("the projection checkpoint is unreadable: {0}")]
    BadCheckpoint(String),
    #[error("event of {bytes} bytes exceeds the largest storable event ({max} bytes)")]
    TooLarge { bytes: usize, max: usize },
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Upper bound of sled's page cache in bytes. sled's own default (1 GiB) is far more than an
    /// incident engine needs.
    pub cache_capacity: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_capacity: 64 * 1024 * 1024 }
    }
}

/// sled segment size. sled writes anything larger than a quarter segment (2 MiB) to a separate
/// blob file that it never fsyncs; see [`VALUE_TARGET`] for how the store stays below that.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// The largest encoded event [`Store::append`] accepts. An event this large gets a block of its
/// own, and a leaf of 17 such blocks (see `VALUE_TARGET`) stays below sled's blob threshold, so
/// every event lives in the fsynced data file however the leaves around it are rewritten.
pub const MAX_EVENT_BYTES: usize = 96 * 1024;

/// An event in its stored form, checked to fit the store. Encoding happens once, before the
/// event is staged, so that an event too large to store is refused on its own rather than failing
/// the batch it would have joined.
#[derive(Debug, Clone)]
pub struct Encoded {
    seq: Seq,
    bytes: Vec<u8>,
}

impl Encoded {
    pub fn new(event: &Event) -> Result<Encoded, StoreError> {
        Encoded::from_sealed(event.seq, event.encode())
    }

    /// The bytes [`Event::seal_encoded`] produced for the event at `seq`, checked to fit.
    pub fn from_sealed(seq: Seq, bytes: Vec<u8>) -> Result<Encoded, StoreError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(StoreError::TooLarge { bytes: bytes.len(), max: MAX_EVENT_BYTES });
        }
        Ok(Encoded { seq, bytes })
    }
}

/// The size of the values the store writes in bulk: at most this many bytes of events per block (a
/// single larger event gets a block of its own), and snapshot chunks of this size.
///
/// sled keeps up to 17 entries in a leaf node and, every few updates, writes the whole leaf to its
/// log again (consolidation). A leaf written that way that is larger than a quarter segment goes
/// to a blob file of its own, which sled never fsyncs and which then has to be read back whole.
/// 17 values of this size, or of [`MAX_EVENT_BYTES`], stay well below that threshold (2 MiB).
const VALUE_TARGET: usize = 64 * 1024;

pub struct Store {
    db: sled::Db,
    blocks: sled::Tree,
    /// The log of directories created before blocks: read, never written.
    legacy_events: sled::Tree,
    projections: sled::Tree,
    snapshots: sled::Tree,
    /// sled's data file, opened separately so that appends can be fsynced (see [`Store::append`]).
    data_file: File,
}

impl Store {
    /// Opens (or creates) the store in `dir`. Fails if another process holds it open.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("log");
        let config = sled::Config::new()
            .path(&path)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(options.cache_capacity)
            // Only `Store::sync` persists: sled's periodic background flush could otherwise make
            // durable an inserted batch whose fsync failed and whose senders were told so.
            .flush_every_ms(None);
        let db = open_locked(&config, &path)?;
        let blocks = db.open_tree("blocks")?;
        let legacy_events = db.open_tree("events")?;
        let projections = db.open_tree("projections")?;
        let snapshots = db.open_tree("snapshots")?;
        let data_file = File::open(path.join("db"))?;
        // Make the data file's directory entries durable once, so that a power cut right after
        // the first start cannot lose the file itself.
        File::open(&path)?.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Store { db, blocks, legacy_events, projections, snapshots, data_file })
    }

    /// Appends events atomically and makes them durable before returning: [`Store::insert`]
    /// then [`Store::sync`].
    pub fn append(&self, events: &[Encoded]) -> Result<(), StoreError> {
        self.insert(events)?;
        self.sync()
    }

    /// Inserts events atomically, not yet durably: until [`Store::sync`] returns they may be lost
    /// in a crash, so nothing may be acknowledged or shown to readers before it.
    ///
    /// `events` must be consecutive seqs following the head. They are packed into as few blocks
    /// as `VALUE_TARGET` allows.
    pub fn insert(&self, events: &[Encoded]) -> Result<(), StoreError> {
        if let Some(pair) = events.windows(2).find(|pair| pair[1].seq != pair[0].seq.next()) {
            // A block gives its events consecutive seqs; storing these would misplace them.
            let reason = format!("appended after event {} in one batch", pair[0].seq);
            return Err(StoreError::Corrupt { seq: pair[1].seq, reason });
        }
        let mut batch = sled::Batch::default();
        let mut rest = events;
        while let Some(first) = rest.first() {
            let mut bytes = 0;
            let mut n = 0;
            for event in rest {
                if n > 0 && bytes + event.bytes.len() > VALUE_TARGET {
                    break;
                }
                bytes += event.bytes.len();
                n += 1;
            }
            let (packed, tail) = rest.split_at(n);
            let value = block::encode(packed.iter().map(|event| event.bytes.as_slice()));
            batch.insert(&first.seq.to_be_bytes(), value);
            rest = tail;
        }
        self.blocks.apply_batch(batch)?;
        Ok(())
    }

    /// Takes back events inserted but never made durable (their sync failed), best effort. They
    /// were never acknowledged nor shown to readers, so they were never part of the log.
    pub fn discard(&self, events: &[Event]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        // The blocks of the failed batch are exactly those that start within its seqs.
        let mut batch = sled::Batch::default();
        for key in self.blocks.range(first.seq.to_be_bytes()..=last.seq.to_be_bytes()).keys() {
            match key {
                Ok(key) => batch.remove(key),
                Err(e) => {
                    tracing::error!(error = %e, "could not list events whose fsync failed");
                    return;
                }
            }
        }
        if let Err(e) = self.blocks.apply_batch(batch) {
            tracing::error!(error = %e, "could not take back events whose fsync failed");
        }
    }

    /// Makes everything inserted so far durable.
    ///
    /// sled 0.34's `flush()` ends in `sync_file_range(2)`, which writes the pages but neither the
    /// file's metadata nor the drive's volatile cache. After it, the data file is `fdatasync`ed
    /// through a descriptor of our own, which does both. One call serves every event inserted
    /// before it: that is the group commit.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(())
    }

    /// The last event of the log, if any.
    pub fn head(&self) -> Result<Option<Event>, StoreError> {
        if let Some((key, value)) = self.blocks.last()? {
            let (seq, bytes) = block_events(&key, &value)?.last().expect("a block is never empty");
            return decode_at(seq, bytes).map(Some);
        }
        match self.legacy_events.last()? {
            None => Ok(None),
            Some((key, value)) => decode_at(key_seq(&key)?, &value).map(Some),
        }
    }

    pub fn event(&self, seq: Seq) -> Result<Option<Event>, StoreError> {
        self.with_raw(seq, |bytes| decode_at(seq, bytes))
    }

    /// An event that must exist: a missing one means the log was damaged.
    pub fn event_required(&self, seq: Seq) -> Result<Event, StoreError> {
        self.event(seq)?
            .ok_or(StoreError::Corrupt { seq, reason: "it is missing from the log".to_owned() })
    }

    /// The stored bytes of one event, exactly as on disk.
    pub fn raw_event(&self, seq: Seq) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_raw(seq, |bytes| Ok(bytes.to_vec()))
    }

    /// Calls `read` with the stored bytes of the event at `seq`, if the log holds it.
    fn with_raw<T>(
        &self,
        seq: Seq,
        read: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        // Every legacy seq precedes every block, so a block starting at or before `seq` is the
        // only place it can be.
        if let Some((key, value)) = self.block_at_or_before(seq)? {
            let mut events = block_events(&key, &value)?;
            return events.find(|(at, _)| *at == seq).map(|(_, bytes)| read(bytes)).transpose();
        }
        self.legacy_events.get(seq.to_be_bytes())?.map(|value| read(&value)).transpose()
    }

    /// The block whose first seq is the greatest at or before `seq`: the one that holds `seq`,
    /// if any does.
    fn block_at_or_before(&self, seq: Seq) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        Ok(self.blocks.range(..=seq.to_be_bytes()).next_back().transpose()?)
    }

    /// Where a scan of the blocks from `seq` on starts: the key of the block that holds `seq`
    /// or, when no block starts at or before it, `seq`'s own key.
    fn block_start(&self, seq: Seq) -> Result<[u8; 8], StoreError> {
        match self.block_at_or_before(seq)? {
            Some((key, _)) => Ok(key_seq(&key)?.to_be_bytes()),
            None => Ok(seq.to_be_bytes()),
        }
    }

    /// Events from `first` on, oldest first.
    pub fn events_from(&self, first: Seq) -> impl Iterator<Item = Result<Event, StoreError>> {
        let legacy = self.legacy_events.range(first.to_be_bytes()..).map(|item| {
            let (key, value) = item?;
            decode_at(key_seq(&key)?, &value)
        });
        let (start, failed) = match self.block_start(first) {
            Ok(start) => (start, None),
            Err(e) => (first.to_be_bytes(), Some(Err(e))),
        };
        // One block is decoded at a time; it holds at most `VALUE_TARGET` bytes of events.
        let blocks = self.blocks.range(start..).flat_map(move |item| {
            let decoded: Vec<Result<Event, StoreError>> =
                match item.map_err(StoreError::from).and_then(|(key, value)| {
                    Ok(block_events(&key, &value)?
                        .filter(|(seq, _)| *seq >= first)
                        .map(|(seq, bytes)| decode_at(seq, bytes))
                        .collect())
                }) {
                    Ok(events) => events,
                    Err(e) => vec![Err(e)],
                };
            decoded
        });
        legacy.chain(failed).chain(blocks)
    }

    /// Calls `visit` with every event from `first` to `last` (to the end of the log when `None`),
    /// oldest first, and stops at the first error, its own or the store's.
    pub fn scan<E: From<StoreError>>(
        &self,
        first: Seq,
        last: Option<Seq>,
        mut visit: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        self.scan_prepared(first, last, |_| (), |event, ()| visit(event))
    }

    /// [`Store::scan`] with a first step per event, `prepare`, whose result `visit` receives with
    /// the event.
    ///
    /// The blocks are read and decoded, and `prepare` runs, on a second thread while `visit` runs
    /// on the caller's: in a replay the fold is the slower half, so what can be worked out from
    /// an event alone (a run's parsed payload) is best worked out in `prepare`. Each block's
    /// events go to the caller and come back to the decoding thread to be freed there, where they
    /// were allocated: freeing them on the caller's thread made glibc's malloc contend across its
    /// arenas, which cost more than the second core gave.
    pub fn scan_prepared<T: Send, E: From<StoreError>>(
        &self,
        first: Seq,
        last: Option<Seq>,
        prepare: impl Fn(&Event) -> T + Sync,
        mut visit: impl FnMut(&Event, T) -> Result<(), E>,
    ) -> Result<(), E> {
        if last.is_some_and(|last| last < first) {
            return Ok(());
        }
        let legacy = match last {
            Some(last) => self.legacy_events.range(first.to_be_bytes()..=last.to_be_bytes()),
            None => self.legacy_events.range(first.to_be_bytes()..),
        };
        for item in legacy {
            let (key, value) = item.map_err(StoreError::from)?;
            let event = decode_at(key_seq(&key)?, &value)?;
            let prepared = prepare(&event);
            visit(&event, prepared)?;
        }
        let start = self.block_start(first)?;
        let blocks = match last {
            Some(last) => self.blocks.range(start..=last.to_be_bytes()),
            None => self.blocks.range(start..),
        };
        // A block's events as far as they decode, then the error that stopped them, if any.
        type Decoded<T> = (Vec<Event>, Vec<T>, Option<StoreError>);
        let (to_caller, decoded) = mpsc::sync_channel::<Decoded<T>>(4);
        let (to_decoder, done) = mpsc::channel::<Vec<Event>>();
        let prepare = &prepare;
        std::thread::scope(|scope| {
            let decoder = std::thread::Builder::new().name("incidentd-decode".to_owned());
            let spawned = decoder.spawn_scoped(scope, move || {
                for item in blocks {
                    while let Ok(events) = done.try_recv() {
                        drop(events);
                    }
                    let (mut events, mut prepared) = (Vec::new(), Vec::new());
                    let read = item.map_err(StoreError::from).and_then(|(key, value)| {
                        let wanted = block_events(&key, &value)?.filter(|(seq, _)| {
                            *seq >= first && last.is_none_or(|last| *seq <= last)
                        });
                        for (seq, bytes) in wanted {
                            let event = decode_at(seq, bytes)?;
                            prepared.push(prepare(&event));
                            events.push(event);
                        }
                        Ok(())
                    });
                    let failure = read.err();
                    let failed = failure.is_some();
                    // The caller stopped (its own error, or an error sent before) when this fails.
                    if to_caller.send((events, prepared, failure)).is_err() || failed {
                        return;
                    }
                }
            });
            spawned.map_err(StoreError::Io)?;
            // `decoded` ends when the decoding thread does; dropping it on an early return stops
            // that thread at its next send.
            for (events, prepared, failure) in decoded {
                for (event, prepared) in events.iter().zip(prepared) {
                    visit(event, prepared)?;
                }
                if let Some(e) = failure {
                    return Err(e.into());
                }
                let _ = to_decoder.send(events);
            }
            Ok(())
        })
    }

    /// The number of events stored.
    pub fn event_count(&self) -> Result<usize, StoreError> {
        let mut count = self.legacy_events.len();
        for item in self.blocks.iter() {
            let (key, value) = item?;
            count += block_events(&key, &value)?.count();
        }
        Ok(count)
    }
}

/// How long `Store::open` waits for the data directory's lock. sled releases it only when its
/// last background writer thread has let go of the file, shortly after the previous handle in
/// this process was dropped; another process holding it keeps it for good.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_locked(config: &sled::Config, path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked(path.to_owned()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn key_seq(key: &[u8]) -> Result<Seq, StoreError> {
    Seq::from_be_slice(key).ok_or_else(|| StoreError::Corrupt {
        seq: Seq::ZERO,
        reason: format!("log key of {} bytes is not a seq", key.len()),
    })
}

/// The events of the block stored under `key`, oldest first, each with its seq; or the block
/// named as corrupt at its first seq.
fn block_events<'a>(
    key: &[u8],
    value: &'a [u8],
) -> Result<impl Iterator<Item = (Seq, &'a [u8])> + 'a, StoreError> {
    let first = key_seq(key)?;
    let corrupt = |reason: String| StoreError::Corrupt { seq: first, reason };
    let events = block::decode(value).map_err(|e| corrupt(e.to_string()))?;
    if first.0.checked_add(events.len() as u64).is_none() {
        return Err(corrupt("its events would pass the largest seq".to_owned()));
    }
    Ok(events.into_iter().enumerate().map(move |(i, bytes)| (Seq(first.0 + i as u64), bytes)))
}

/// Decodes one stored event and checks that it is the event that belongs at `seq`.
fn decode_at(seq: Seq, bytes: &[u8]) -> Result<Event, StoreError> {
    let event = Event::decode(bytes)
        .map_err(|e: DecodeError| StoreError::Corrupt { seq, reason: e.to_string() })?;
    if event.seq > seq {
        // Either it was taken out or events were swapped; nothing read so far tells which.
        let reason = format!("it is missing or out of place: its place holds event {}", event.seq);
        return Err(StoreError::Corrupt { seq, reason });
    }
    if event.seq != seq {
        return Err(StoreError::Corrupt { seq, reason: format!("holds event {}", event.seq) });
    }
    Ok(event)
}
