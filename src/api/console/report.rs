//! Figures the console derives from what the handlers read: availability and mean time to
//! resolve over a range, the ranges themselves, time inputs from forms, and durations written
//! for people. Pure: the current time comes in as an argument.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};

use crate::domain::{Incident, Metrics, Seq, Verdict};

/// One run of a monitor as the monitor page draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPoint {
    pub seq: Seq,
    pub at: DateTime<Utc>,
    pub metrics: Metrics,
}

impl RunPoint {
    pub fn passing(&self) -> bool {
        self.metrics.verdict() == Verdict::Passing
    }
}

/// The monitor page's time ranges. A closed set, so a link can never ask for a range the page
/// cannot draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Day,
    Week,
    Month,
    All,
}

impl Range {
    pub const ALL: [Range; 4] = [Range::Day, Range::Week, Range::Month, Range::All];

    pub fn parse(raw: Option<&str>) -> Option<Range> {
        match raw.unwrap_or("7d") {
            "24h" => Some(Range::Day),
            "7d" | "" => Some(Range::Week),
            "30d" => Some(Range::Month),
            "all" => Some(Range::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
            Range::All => "all",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Range::Day => "last 24 hours",
            Range::Week => "last 7 days",
            Range::Month => "last 30 days",
            Range::All => "all time",
        }
    }

    /// The start of the range when it ends at `now`; `None` for all time.
    pub fn start(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Range::Day => Some(now - Duration::hours(24)),
            Range::Week => Some(now - Duration::days(7)),
            Range::Month => Some(now - Duration::days(30)),
            Range::All => None,
        }
    }
}

/// Whether a run at `at` is within a range that starts at `from` (`None`: all time). The range
/// ends now, but a run recorded after `now` (the clock stepped back) is still shown.
pub fn run_in_range(at: DateTime<Utc>, from: Option<DateTime<Utc>>) -> bool {
    from.is_none_or(|from| at >= from)
}

/// Whether a monitor page over a range starting at `from` lists an incident: while it is open,
/// and once resolved if it was resolved within the range.
pub fn incident_in_range(incident: &Incident, from: Option<DateTime<Utc>>) -> bool {
    from.is_none_or(|from| incident.resolved_at.is_none_or(|resolved| resolved >= from))
}

/// What a monitor did over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub passing: usize,
    /// Incidents resolved within the range.
    pub resolved: usize,
    /// Mean of (resolved - opened) over the incidents resolved within the range.
    pub mean_time_to_resolve: Option<Duration>,
}

impl Summary {
    /// Share of passing runs, in percent; `None` without runs.
    pub fn availability(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.passing as f64 * 100.0 / self.runs as f64)
    }
}

/// Summarizes `runs` (already limited to the range) and the incidents resolved at or after
/// `from`.
pub fn summarize(
    runs: &[RunPoint],
    incidents: &[Incident],
    from: Option<DateTime<Utc>>,
) -> Summary {
    let durations: Vec<Duration> = incidents
        .iter()
        .filter_map(|i| i.resolved_at.map(|resolved| (i.opened_at, resolved)))
        .filter(|(_, resolved)| from.is_none_or(|from| *resolved >= from))
        .map(|(opened, resolved)| resolved - opened)
        .collect();
    let mean_time_to_resolve = (!durations.is_empty()).then(|| {
        let total: i64 = durations.iter().map(Duration::num_milliseconds).sum();
        Duration::milliseconds(total / durations.len() as i64)
    });
    Summary {
        runs: runs.len(),
        passing: runs.iter().filter(|r| r.passing()).count(),
        resolved: durations.len(),
        mean_time_to_resolve,
    }
}

/// A duration as people say it, to two units: `45 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_duration(d: Duration) -> String {
    let total = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) =
        (total / 86_400, total % 86_400 / 3_600, total % 3_600 / 60, total % 60);
    match (days, hours, minutes) {
        (0, 0, 0) if d.num_milliseconds() < 1_000 && d.num_milliseconds() > 0 => {
            format!("{} ms", d.num_milliseconds())
        }
        (0, 0, 0) => format!("{seconds} s"),
        (0, 0, _) => format!("{minutes} min {seconds} s"),
        (0, _, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h"),
    }
}

/// A time typed into a form: RFC 3339, a `datetime-local` value (`2026-12-03T10:30`, read as
/// UTC), or a date. A bare date means the start of that day, or its end when `end_of_day`, so
/// that `to=2026-12-03` includes the whole of that day. An empty field means no bound. Every date
/// chrono can represent is accepted, up to +262142-12-31, whose end is chrono's last instant; a
/// later or unreadable one is an error.
pub fn parse_time_input(raw: &str, end_of_day: bool) -> Result<Option<DateTime<Utc>>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(Some(at.and_utc()));
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        // The last instant of the day is named, not computed as the next midnight less a
        // nanosecond: the day after chrono's last date does not exist, and adding to it panics.
        let at = if end_of_day {
            date.and_hms_nano_opt(23, 59, 59, 999_999_999)
        } else {
            date.and_hms_opt(0, 0, 0)
        };
        return Ok(Some(at.expect("every day has its first and last instant").and_utc()));
    }
    Err(format!("{raw:?} is not a time: use 2026-12-03, 2026-12-03T10:30 or RFC 3339"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IncidentId, IncidentStatus, IntegrationId, MonitorUid};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn run(seq: u64, failed: u32) -> RunPoint {
        RunPoint {
            seq: Seq(seq),
            at: at("2026-12-01T00:00:00Z") + Duration::minutes(seq as i64),
            metrics: Metrics {
                failed_tests: failed,
                errors: 0,
                passed_tests: None,
                warnings: None,
                request_count: None,
                total_latency: None,
            },
        }
    }

    fn incident(opened: &str, resolved: Option<&str>) -> Incident {
        incident_at(at(opened), resolved.map(at))
    }

    fn incident_at(opened: DateTime<Utc>, resolved: Option<DateTime<Utc>>) -> Incident {
        Incident {
            id: IncidentId(uuid::Uuid::nil()),
            integration_id: IntegrationId(uuid::Uuid::nil()),
            monitor_uid: MonitorUid::parse("m").unwrap(),
            monitor_name: None,
            status: if resolved.is_some() {
                IncidentStatus::Resolved
            } else {
                IncidentStatus::Open
            },
            opened_at: opened,
            opened_seq: Seq(1),
            resolved_at: resolved,
            resolved_seq: resolved.map(|_| Seq(2)),
            failing_runs: 1,
            last_metrics: run(1, 1).metrics,
            acknowledged_at: None,
            acknowledged_by: None,
            acknowledged_seq: None,
            actions: Vec::new(),
        }
    }

    #[test]
    fn summary_counts_passing_runs_and_resolved_incidents_in_range() {
        // Given runs, incidents and the range's start: expect this summary.
        type Case<'a> = (Vec<RunPoint>, Vec<Incident>, Option<&'a str>, Summary);
        let cases: Vec<Case> = vec![
            (
                vec![],
                vec![],
                None,
                Summary { runs: 0, passing: 0, resolved: 0, mean_time_to_resolve: None },
            ),
            (
                vec![run(1, 0), run(2, 3), run(3, 0), run(4, 0)],
                vec![
                    incident("2026-12-01T00:00:00Z", Some("2026-12-01T00:10:00Z")),
                    incident("2026-12-01T01:00:00Z", Some("2026-12-01T01:30:00Z")),
                    incident("2026-12-02T00:00:00Z", None),
                ],
                None,
                Summary {
                    runs: 4,
                    passing: 3,
                    resolved: 2,
                    mean_time_to_resolve: Some(Duration::minutes(20)),
                },
            ),
            (
                vec![run(2, 1)],
                vec![
                    incident("2026-11-01T00:00:00Z", Some("2026-11-01T00:10:00Z")),
                    incident("2026-12-01T00:59:00Z", Some("2026-12-01T01:01:00Z")),
                ],
                Some("2026-12-01T01:00:00Z"),
                Summary {
                    runs: 1,
                    passing: 0,
                    resolved: 1,
                    mean_time_to_resolve: Some(Duration::minutes(2)),
                },
            ),
        ];
        for (runs, incidents, from, expected) in cases {
            assert_eq!(summarize(&runs, &incidents, from.map(at)), expected);
        }
        let summary = summarize(&[run(1, 0), run(2, 1), run(3, 0), run(4, 0)], &[], None);
        assert_eq!(summary.availability(), Some(75.0));
        assert_eq!(summarize(&[], &[], None).availability(), None);
    }

    #[test]
    fn each_range_sums_up_only_its_own_runs_and_resolutions() {
        const HOUR: i64 = 60;
        const DAY: i64 = 24 * HOUR;
        let now = at("2026-12-04T12:00:00Z");
        let ago = |minutes: i64| now - Duration::minutes(minutes);
        // Newest first, as the monitor page reads them: minutes ago, and whether the run passed.
        let runs: Vec<RunPoint> = [
            (HOUR, true),
            (2 * HOUR, false),
            (12 * HOUR, true),
            (DAY, true), // exactly at the start of the last 24 hours, so within them
            (25 * HOUR, false),
            (3 * DAY, false),
            (6 * DAY, false),
            (7 * DAY - 1, true),
            (8 * DAY, true),
            (29 * DAY, true),
            (31 * DAY, false),
            (60 * DAY, false),
            (90 * DAY, false),
            (100 * DAY, false),
            (200 * DAY, false),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (minutes, passing))| RunPoint {
            at: ago(minutes),
            ..run(i as u64 + 1, u32::from(!passing))
        })
        .collect();
        // Opened and resolved, in minutes ago, with how long each took.
        let incidents = [
            incident_at(ago(3 * HOUR), Some(ago(2 * HOUR))), // 60 min
            incident_at(ago(26 * HOUR), Some(ago(23 * HOUR))), // 180 min
            incident_at(ago(25 * HOUR), Some(ago(DAY + 1))), // 59 min, just before the last 24 h
            incident_at(ago(5 * DAY), Some(ago(5 * DAY - 30))), // 30 min
            incident_at(ago(10 * DAY), Some(ago(9 * DAY))),  // 1 day
            incident_at(ago(40 * DAY), Some(ago(40 * DAY - 10))), // 10 min
            incident_at(ago(50 * DAY), None),                // still open: listed, no time
        ];
        // Range: runs, availability, resolved incidents, mean time to resolve (seconds, and as
        // the page writes it), incidents listed.
        for (range, runs_in_range, availability, resolved, mttr_s, mttr_text, listed) in [
            (Range::Day, 4, 75.0, 2, 120 * 60, "2 h 0 min", 3),
            (Range::Week, 8, 50.0, 4, 4_935, "1 h 22 min", 5),
            (Range::Month, 10, 60.0, 5, 21_228, "5 h 53 min", 6),
            (Range::All, 15, 40.0, 6, 17_790, "4 h 56 min", 7),
        ] {
            let from = range.start(now);
            let shown: Vec<RunPoint> =
                runs.iter().take_while(|r| run_in_range(r.at, from)).cloned().collect();
            let listed_incidents: Vec<Incident> =
                incidents.iter().filter(|i| incident_in_range(i, from)).cloned().collect();
            let summary = summarize(&shown, &listed_incidents, from);
            let label = range.label();
            assert_eq!(summary.runs, runs_in_range, "{label}");
            assert_eq!(summary.availability(), Some(availability), "{label}");
            assert_eq!(summary.resolved, resolved, "{label}");
            let mttr = summary.mean_time_to_resolve.expect("incidents were resolved");
            assert_eq!(mttr, Duration::seconds(mttr_s), "{label}");
            assert_eq!(human_duration(mttr), mttr_text, "{label}");
            assert_eq!(listed_incidents.len(), listed, "{label}");
        }
    }

    #[test]
    fn durations_read_like_speech() {
        for (seconds, text) in [
            (0, "0 s"),
            (45, "45 s"),
            (200, "3 min 20 s"),
            (7_500, "2 h 5 min"),
            (273_600, "3 d 4 h"),
            (-5, "0 s"),
        ] {
            assert_eq!(human_duration(Duration::seconds(seconds)), text);
        }
        assert_eq!(human_duration(Duration::milliseconds(250)), "250 ms");
    }

    #[test]
    fn time_inputs_accept_dates_local_times_and_rfc3339() {
        assert_eq!(parse_time_input("", false), Ok(None));
        assert_eq!(parse_time_input("2026-12-03", false), Ok(Some(at("2026-12-03T00:00:00Z"))));
        assert_eq!(
            parse_time_input("2026-12-03", true),
            Ok(Some(at("2026-12-03T23:59:59.999999999Z")))
        );
        assert_eq!(
            parse_time_input("2026-12-03T10:30", false),
            Ok(Some(at("2026-12-03T10:30:00Z")))
        );
        assert_eq!(
            parse_time_input("2026-12-03T10:30:00+01:00", false),
            Ok(Some(at("2026-12-03T09:30:00Z")))
        );
        assert!(parse_time_input("yesterday", false).unwrap_err().contains("\"yesterday\""));
        // chrono's last date is a whole day too; the year after it is not a time.
        assert_eq!(parse_time_input("+262142-12-31", true), Ok(Some(DateTime::<Utc>::MAX_UTC)));
        assert_eq!(
            parse_time_input("+262142-12-31", false),
            Ok(Some(NaiveDate::MAX.and_hms_opt(0, 0, 0).unwrap().and_utc()))
        );
        assert!(parse_time_input("+262143-01-01", true).is_err());
    }

    #[test]
    fn ranges_round_trip_through_their_names() {
        for range in Range::ALL {
            assert_eq!(Range::parse(Some(range.as_str())), Some(range));
        }
        assert_eq!(Range::parse(None), Some(Range::Week));
        assert_eq!(Range::parse(Some("1y")), None);
        let now = at("2026-12-03T00:00:00Z");
        assert_eq!(Range::Day.start(now), Some(at("2026-12-02T00:00:00Z")));
        assert_eq!(Range::All.start(now), None);
    }
}
