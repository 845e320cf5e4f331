//! Durable storage on sled: the append-only event log and the projection checkpoint. The only
//! module that imports sled.
//!
//! Layout of the sled database in `<data-dir>/log`:
//! - tree `events`: big-endian seq -> the event's stored JSON. Written only by [`Store::append`].
//! - tree `projections`: the checkpoint, see [`checkpoint`].
//! - tree `snapshots`: whole projections as of past seqs, for time travel, see [`snapshot`].

mod checkpoint;
mod codec;
mod snapshot;

use std::fs::File;
use std::path::{Path, PathBuf};

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

/// sled segment size. sled writes a value larger than a quarter segment to a separate blob file
/// that it never fsyncs, so segments are made large enough that no event is ever a blob.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// The largest encoded event [`Store::append`] accepts: safely below sled's blob threshold
/// (a quarter segment, less headers), so every event lives in the fsynced data file.
pub const MAX_EVENT_BYTES: usize = SEGMENT_SIZE / 4 - 64 * 1024;

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

pub struct Store {
    db: sled::Db,
    events: sled::Tree,
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
        let events = db.open_tree("events")?;
        let projections = db.open_tree("projections")?;
        let snapshots = db.open_tree("snapshots")?;
        let data_file = File::open(path.join("db"))?;
        // Make the data file's directory entries durable once, so that a power cut right after
        // the first start cannot lose the file itself.
        File::open(&path)?.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Store { db, events, projections, snapshots, data_file })
    }

    /// Appends events atomically and makes them durable before returning: [`Store::insert`]
    /// then [`Store::sync`].
    pub fn append(&self, events: &[Encoded]) -> Result<(), StoreError> {
        self.insert(events)?;
        self.sync()
    }

    /// Inserts events atomically, not yet durably: until [`Store::sync`] returns they may be lost
    /// in a crash, so nothing may be acknowledged or shown to readers before it.
    pub fn insert(&self, events: &[Encoded]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for event in events {
            batch.insert(&event.seq.to_be_bytes(), event.bytes.as_slice());
        }
        self.events.apply_batch(batch)?;
        Ok(())
    }

    /// Takes back events inserted but never made durable (their sync failed), best effort. They
    /// were never acknowledged nor shown to readers, so they were never part of the log.
    pub fn discard(&self, events: &[Event]) {
        let mut batch = sled::Batch::default();
        for event in events {
            batch.remove(&event.seq.to_be_bytes());
        }
        if let Err(e) = self.events.apply_batch(batch) {
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
        match self.events.last()? {
            None => Ok(None),
            Some((key, value)) => decode(&key, &value).map(Some),
        }
    }

    pub fn event(&self, seq: Seq) -> Result<Option<Event>, StoreError> {
        match self.events.get(seq.to_be_bytes())? {
            None => Ok(None),
            Some(value) => decode(&seq.to_be_bytes(), &value).map(Some),
        }
    }

    /// An event that must exist: a missing one means the log was damaged.
    pub fn event_required(&self, seq: Seq) -> Result<Event, StoreError> {
        self.event(seq)?
            .ok_or(StoreError::Corrupt { seq, reason: "it is missing from the log".to_owned() })
    }

    /// The stored bytes of one event, exactly as on disk.
    pub fn raw_event(&self, seq: Seq) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.events.get(seq.to_be_bytes())?.map(|v| v.to_vec()))
    }

    /// Events from `first` on, oldest first.
    pub fn events_from(&self, first: Seq) -> impl Iterator<Item = Result<Event, StoreError>> {
        self.events.range(first.to_be_bytes()..).map(|item| {
            let (key, value) = item?;
            decode(&key, &value)
        })
    }

    /// Calls `visit` with every event from `first` to `last` (to the end of the log when `None`),
    /// oldest first, and stops at the first error, its own or the store's.
    ///
    /// Reading and decoding on a second thread while `visit` folds on the caller's was measured
    /// and left out: on a replay of 200,000 events it took 3.9 to 5.9 s against 3.4 s on one
    /// thread. The events are allocated on one thread and folded (and freed) on the other, and
    /// glibc's malloc made up the difference with more than the second core gave back.
    pub fn scan<E: From<StoreError>>(
        &self,
        first: Seq,
        last: Option<Seq>,
        mut visit: impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        let range = match last {
            Some(last) if last < first => return Ok(()),
            Some(last) => self.events.range(first.to_be_bytes()..=last.to_be_bytes()),
            None => self.events.range(first.to_be_bytes()..),
        };
        for item in range {
            let (key, value) = item.map_err(StoreError::from)?;
            visit(&decode(&key, &value)?)?;
        }
        Ok(())
    }

    /// The number of events stored.
    pub fn event_count(&self) -> usize {
        self.events.len()
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

/// Decodes one stored event and checks that it sits under its own seq.
fn decode(key: &[u8], value: &[u8]) -> Result<Event, StoreError> {
    let seq = Seq::from_be_slice(key).ok_or_else(|| StoreError::Corrupt {
        seq: Seq::ZERO,
        reason: format!("log key of {} bytes is not a seq", key.len()),
    })?;
    let event = Event::decode(value)
        .map_err(|e: DecodeError| StoreError::Corrupt { seq, reason: e.to_string() })?;
    if event.seq != seq {
        return Err(StoreError::Corrupt { seq, reason: format!("holds event {}", event.seq) });
    }
    Ok(event)
}
