//! A compact binary encoding of the projection records, for the checkpoint and the snapshots. The
//! log's block framing ([`super::block`]) uses its varints too, with errors of its own.
//!
//! Both are derived data that this build alone writes and reads, so they need no self-describing
//! format: JSON made loading a checkpoint of 100,000 monitors and 164,000 incidents cost about two
//! seconds, most of it parsing field names, times and hex. Here every record is its fields in a
//! fixed order: integers as LEB128 varints, strings and lists with a varint length first, uuids
//! and digests as raw bytes, times as seconds and nanoseconds, optional values behind a 0/1 byte
//! and enums as one byte. A change to any record's shape must bump the format of whatever stores
//! it (the checkpoint's `FORMAT`, the snapshots' `SNAPSHOT_FORMAT`), so that old data is rebuilt
//! rather than misread.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{
    ApiToken, ApiTokenId, Digest256, IdempotentRun, Incident, IncidentId, IncidentRef,
    IncidentStatus, Integration, IntegrationId, Metrics, Monitor, MonitorStatus, MonitorUid, Role,
    Seq, Transition, Verdict,
};

/// Appends encoded values to a byte buffer.
#[derive(Default)]
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn uuid(&mut self, v: &Uuid) {
        self.0.extend_from_slice(v.as_bytes());
    }

    pub fn digest(&mut self, v: &Digest256) {
        self.0.extend_from_slice(&v.0);
    }

    pub fn time(&mut self, v: &DateTime<Utc>) {
        // Zigzag, so that times before 1970 stay short too.
        let s = v.timestamp();
        self.u64(((s << 1) ^ (s >> 63)) as u64);
        self.u64(u64::from(v.timestamp_subsec_nanos()));
    }

    pub fn opt<T>(&mut self, v: Option<&T>, put: impl FnOnce(&mut Enc, &T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                put(self, v);
            }
        }
    }
}

/// Reads values back in the order they were encoded. Every failure is a
/// [`StoreError::BadCheckpoint`]: the data is derived, and the caller rebuilds it.
pub(crate) struct Dec<'a>(pub &'a [u8]);

fn bad(what: &str) -> StoreError {
    StoreError::BadCheckpoint(format!("binary projection record: {what}"))
}

type R<T> = Result<T, StoreError>;

impl<'a> Dec<'a> {
    pub fn u64(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or_else(|| bad("ends inside a number"))?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("number longer than 64 bits"))
    }

    pub fn u32(&mut self) -> R<u32> {
        u32::try_from(self.u64()?).map_err(|_| bad("number out of range"))
    }

    pub fn u8(&mut self) -> R<u8> {
        let (&b, rest) = self.0.split_first().ok_or_else(|| bad("ends early"))?;
        self.0 = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn bytes(&mut self) -> R<&'a [u8]> {
        let n = usize::try_from(self.u64()?).map_err(|_| bad("length out of range"))?;
        self.take(n)
    }

    pub fn string(&mut self) -> R<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }

    pub fn uuid(&mut self) -> R<Uuid> {
        Ok(Uuid::from_slice(self.take(16)?).expect("16 bytes"))
    }

    pub fn digest(&mut self) -> R<Digest256> {
        Ok(Digest256(self.take(32)?.try_into().expect("32 bytes")))
    }

    pub fn time(&mut self) -> R<DateTime<Utc>> {
        let z = self.u64()?;
        let s = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let nanos = self.u32()?;
        DateTime::from_timestamp(s, nanos).ok_or_else(|| bad("time out of range"))
    }

    pub fn opt<T>(&mut self, get: impl FnOnce(&mut Dec<'a>) -> R<T>) -> R<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => get(self).map(Some),
            _ => Err(bad("bad option tag")),
        }
    }

    pub fn seq(&mut self) -> R<Seq> {
        self.u64().map(Seq)
    }

    pub fn monitor_uid(&mut self) -> R<MonitorUid> {
        let s = std::str::from_utf8(self.bytes()?).map_err(|_| bad("uid is not UTF-8"))?;
        MonitorUid::parse(s).map_err(|_| bad("invalid monitor uid"))
    }

    /// Succeeds only when every byte was read: a longer record is another shape.
    pub fn finish(&self) -> R<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

fn status_byte(s: IncidentStatus) -> u8 {
    match s {
        IncidentStatus::Open => 0,
        IncidentStatus::Acknowledged => 1,
        IncidentStatus::Resolved => 2,
    }
}

fn status_of(b: u8) -> R<IncidentStatus> {
    match b {
        0 => Ok(IncidentStatus::Open),
        1 => Ok(IncidentStatus::Acknowledged),
        2 => Ok(IncidentStatus::Resolved),
        _ => Err(bad("bad incident status")),
    }
}

fn verdict_byte(v: Verdict) -> u8 {
    match v {
        Verdict::Failing => 0,
        Verdict::Passing => 1,
    }
}

fn verdict_of(b: u8) -> R<Verdict> {
    match b {
        0 => Ok(Verdict::Failing),
        1 => Ok(Verdict::Passing),
        _ => Err(bad("bad verdict")),
    }
}

fn transition_byte(t: Transition) -> u8 {
    match t {
        Transition::Opened => 0,
        Transition::Ongoing => 1,
        Transition::Resolved => 2,
        Transition::None => 3,
    }
}

fn transition_of(b: u8) -> R<Transition> {
    match b {
        0 => Ok(Transition::Opened),
        1 => Ok(Transition::Ongoing),
        2 => Ok(Transition::Resolved),
        3 => Ok(Transition::None),
        _ => Err(bad("bad transition")),
    }
}

fn put_metrics(e: &mut Enc, m: &Metrics) {
    e.u64(u64::from(m.failed_tests));
    e.u64(u64::from(m.errors));
    e.opt(m.passed_tests.as_ref(), |e, v| e.u64(u64::from(*v)));
    e.opt(m.warnings.as_ref(), |e, v| e.u64(u64::from(*v)));
    e.opt(m.request_count.as_ref(), |e, v| e.u64(u64::from(*v)));
    e.opt(m.total_latency.as_ref(), |e, v| e.u64(*v));
}

fn get_metrics(d: &mut Dec<'_>) -> R<Metrics> {
    Ok(Metrics {
        failed_tests: d.u32()?,
        errors: d.u32()?,
        passed_tests: d.opt(Dec::u32)?,
        warnings: d.opt(Dec::u32)?,
        request_count: d.opt(Dec::u32)?,
        total_latency: d.opt(Dec::u64)?,
    })
}

pub(crate) fn put_integration(e: &mut Enc, i: &Integration) {
    e.uuid(&i.id.0);
    e.str(&i.name);
    e.time(&i.created_at);
    e.u64(i.created_seq.0);
    e.digest(&i.token_hash);
    e.opt(i.revoked_at.as_ref(), Enc::time);
    e.opt(i.revoked_seq.as_ref(), |e, s| e.u64(s.0));
    e.opt(i.rotated_at.as_ref(), Enc::time);
    e.opt(i.previous_token_hash.as_ref(), Enc::digest);
    e.opt(i.previous_valid_until.as_ref(), Enc::time);
}

pub(crate) fn get_integration(d: &mut Dec<'_>) -> R<Integration> {
    Ok(Integration {
        id: IntegrationId(d.uuid()?),
        name: d.string()?,
        created_at: d.time()?,
        created_seq: d.seq()?,
        token_hash: d.digest()?,
        revoked_at: d.opt(Dec::time)?,
        revoked_seq: d.opt(Dec::seq)?,
        rotated_at: d.opt(Dec::time)?,
        previous_token_hash: d.opt(Dec::digest)?,
        previous_valid_until: d.opt(Dec::time)?,
    })
}

pub(crate) fn put_api_token(e: &mut Enc, t: &ApiToken) {
    e.uuid(&t.id.0);
    e.str(&t.name);
    e.u8(match t.role {
        Role::Reader => 0,
    });
    e.digest(&t.token_hash);
    e.time(&t.created_at);
    e.u64(t.created_seq.0);
    e.opt(t.revoked_at.as_ref(), Enc::time);
    e.opt(t.revoked_seq.as_ref(), |e, s| e.u64(s.0));
}

pub(crate) fn get_api_token(d: &mut Dec<'_>) -> R<ApiToken> {
    Ok(ApiToken {
        id: ApiTokenId(d.uuid()?),
        name: d.string()?,
        role: match d.u8()? {
            0 => Role::Reader,
            _ => return Err(bad("bad role")),
        },
        token_hash: d.digest()?,
        created_at: d.time()?,
        created_seq: d.seq()?,
        revoked_at: d.opt(Dec::time)?,
        revoked_seq: d.opt(Dec::seq)?,
    })
}

pub(crate) fn put_idempotent_run(e: &mut Enc, r: &IdempotentRun) {
    e.u64(r.seq.0);
    e.u8(verdict_byte(r.verdict));
    e.u8(transition_byte(r.transition));
    e.opt(r.incident.as_ref(), |e, i| {
        e.uuid(&i.id.0);
        e.u8(status_byte(i.status));
    });
}

pub(crate) fn get_idempotent_run(d: &mut Dec<'_>) -> R<IdempotentRun> {
    Ok(IdempotentRun {
        seq: d.seq()?,
        verdict: verdict_of(d.u8()?)?,
        transition: transition_of(d.u8()?)?,
        incident: d
            .opt(|d| Ok(IncidentRef { id: IncidentId(d.uuid()?), status: status_of(d.u8()?)? }))?,
    })
}

pub(crate) fn put_monitor(e: &mut Enc, m: &Monitor) {
    e.uuid(&m.integration_id.0);
    e.str(m.monitor_uid.as_str());
    e.opt(m.name.as_ref(), |e, s| e.str(s));
    e.u8(match m.status {
        MonitorStatus::Passing => 0,
        MonitorStatus::Failing => 1,
    });
    e.u64(m.runs_seen);
    e.time(&m.last_run_at);
    e.u64(m.last_run_seq.0);
    put_metrics(e, &m.last_metrics);
    e.opt(m.open_incident.as_ref(), |e, i| e.uuid(&i.0));
}

pub(crate) fn get_monitor(d: &mut Dec<'_>) -> R<Monitor> {
    Ok(Monitor {
        integration_id: IntegrationId(d.uuid()?),
        monitor_uid: d.monitor_uid()?,
        name: d.opt(Dec::string)?.map(Arc::from),
        status: match d.u8()? {
            0 => MonitorStatus::Passing,
            1 => MonitorStatus::Failing,
            _ => return Err(bad("bad monitor status")),
        },
        runs_seen: d.u64()?,
        last_run_at: d.time()?,
        last_run_seq: d.seq()?,
        last_metrics: get_metrics(d)?,
        open_incident: d.opt(|d| d.uuid().map(IncidentId))?,
    })
}

pub(crate) fn put_incident(e: &mut Enc, i: &Incident) {
    e.uuid(&i.id.0);
    e.uuid(&i.integration_id.0);
    e.str(i.monitor_uid.as_str());
    e.opt(i.monitor_name.as_ref(), |e, s| e.str(s));
    e.u8(status_byte(i.status));
    e.time(&i.opened_at);
    e.u64(i.opened_seq.0);
    e.opt(i.resolved_at.as_ref(), Enc::time);
    e.opt(i.resolved_seq.as_ref(), |e, s| e.u64(s.0));
    e.u64(i.failing_runs);
    put_metrics(e, &i.last_metrics);
    e.opt(i.acknowledged_at.as_ref(), Enc::time);
    e.opt(i.acknowledged_by.as_ref(), |e, s| e.str(s));
    e.opt(i.acknowledged_seq.as_ref(), |e, s| e.u64(s.0));
    e.u64(i.actions.len() as u64);
    for s in &i.actions {
        e.u64(s.0);
    }
}

pub(crate) fn get_incident(d: &mut Dec<'_>) -> R<Incident> {
    Ok(Incident {
        id: IncidentId(d.uuid()?),
        integration_id: IntegrationId(d.uuid()?),
        monitor_uid: d.monitor_uid()?,
        monitor_name: d.opt(Dec::string)?.map(Arc::from),
        status: status_of(d.u8()?)?,
        opened_at: d.time()?,
        opened_seq: d.seq()?,
        resolved_at: d.opt(Dec::time)?,
        resolved_seq: d.opt(Dec::seq)?,
        failing_runs: d.u64()?,
        last_metrics: get_metrics(d)?,
        acknowledged_at: d.opt(Dec::time)?,
        acknowledged_by: d.opt(Dec::string)?,
        acknowledged_seq: d.opt(Dec::seq)?,
        actions: {
            let n = d.u64()?;
            // Each seq takes at least one byte, so a corrupt length cannot allocate much.
            if n > d.0.len() as u64 {
                return Err(bad("list longer than its record"));
            }
            (0..n).map(|_| d.seq()).collect::<R<Vec<Seq>>>()?
        },
    })
}

/// Encodes one record on its own.
pub(crate) fn record<T>(value: &T, put: impl FnOnce(&mut Enc, &T)) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(128));
    put(&mut e, value);
    e.0
}

/// Decodes one record that must fill `bytes` exactly.
pub(crate) fn read_record<T>(bytes: &[u8], get: impl FnOnce(&mut Dec<'_>) -> R<T>) -> R<T> {
    let mut d = Dec(bytes);
    let value = get(&mut d)?;
    d.finish()?;
    Ok(value)
}
