//! The regulation's clock (DOMAIN.md "Counting days"): the start day is not counted, a
//! period ends at 23:59:59 Asia/Shanghai of its last day, calendar-day periods roll past
//! holidays and rest days (民法典 Art. 203), working-day periods skip them and count
//! make-up working days (调休). Pure code; the schedules are data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;

use crate::time::{end_of_day, to_cst, Instant};

/// A period from the node file: `15d` (calendar days), `5wd` (working days), or a plain
/// duration `30s` / `10m` / `2h` for drills and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Days(u32),
    WorkingDays(u32),
    Exact(Duration),
}

impl Period {
    /// Parses `Nd`, `Nwd`, `Ns`, `Nm` or `Nh` with N ≥ 1.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u32 = num
            .parse()
            .ok()
            .filter(|n| *n >= 1 && *n <= 3650)
            .ok_or_else(|| format!("period {s:?}: expected a number 1–3650 then d, wd, s, m or h"))?;
        Ok(match unit {
            "d" => Self::Days(n),
            "wd" => Self::WorkingDays(n),
            "s" => Self::Exact(Duration::from_secs(n.into())),
            "m" => Self::Exact(Duration::from_secs(u64::from(n) * 60)),
            "h" => Self::Exact(Duration::from_secs(u64::from(n) * 3600)),
            _ => return Err(format!("period {s:?}: unit must be d, wd, s, m or h")),
        })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(n) => write!(f, "{n}d"),
            Self::WorkingDays(n) => write!(f, "{n}wd"),
            Self::Exact(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

/// One year's official schedule (国务院办公厅 放假安排).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YearSchedule {
    /// 放假: statutory holidays and the rest days joined to them.
    pub holidays: BTreeSet<NaiveDate>,
    /// 调休上班: weekend days that are working days.
    pub workdays: BTreeSet<NaiveDate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    year: i32,
    holidays: Vec<String>,
    workdays: Vec<String>,
}

/// The shipped schedules (`deploy/calendar/*.toml`), built into every binary.
pub const SHIPPED: &[&str] =
    &[include_str!("../../deploy/calendar/2025.toml"), include_str!("../../deploy/calendar/2026.toml")];

/// A due instant and whether it was computed without that year's official schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub at: Instant,
    /// True when a day counted lies in a year with no loaded schedule (weekends only).
    pub provisional: bool,
}

/// The holiday calendar: loaded yearly schedules; years without one count weekends only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeMap<i32, YearSchedule>,
}

impl Calendar {
    /// A calendar with the shipped schedules.
    pub fn shipped() -> Self {
        let mut cal = Self::default();
        for text in SHIPPED {
            cal.load_toml(text).expect("shipped calendars are valid");
        }
        cal
    }

    /// Loads (or replaces) one year from the TOML schedule format of `deploy/calendar/`.
    pub fn load_toml(&mut self, text: &str) -> Result<i32, String> {
        let file: ScheduleFile = toml::from_str(text).map_err(|e| format!("calendar: {e}"))?;
        let mut year = YearSchedule::default();
        for item in &file.holidays {
            for d in parse_days(item)? {
                year.holidays.insert(d);
            }
        }
        for item in &file.workdays {
            for d in parse_days(item)? {
                year.workdays.insert(d);
            }
        }
        if let Some(d) = year.holidays.iter().chain(&year.workdays).find(|d| d.year() != file.year) {
            return Err(format!("calendar {}: date {d} is in another year", file.year));
        }
        if let Some(d) = year.holidays.intersection(&year.workdays).next() {
            return Err(format!("calendar {}: {d} is both a holiday and a working day", file.year));
        }
        self.years.insert(file.year, year);
        Ok(file.year)
    }

    /// Years with a loaded schedule.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.keys().copied()
    }

    /// Whether `day` is a working day, and whether that answer is provisional.
    pub fn is_working_day(&self, day: NaiveDate) -> (bool, bool) {
        match self.years.get(&day.year()) {
            Some(y) if y.holidays.contains(&day) => (false, false),
            Some(y) if y.workdays.contains(&day) => (true, false),
            Some(_) => (!is_weekend(day), false),
            None => (!is_weekend(day), true),
        }
    }

    /// The due instant of `period` started by an event at `from`.
    pub fn due(&self, from: Instant, period: Period) -> Due {
        let start = to_cst(from).date_naive();
        match period {
            Period::Exact(d) => {
                Due { at: from + chrono::Duration::from_std(d).expect("period fits"), provisional: false }
            }
            Period::Days(n) => {
                let mut last = start + chrono::Days::new(n.into());
                let (mut working, mut provisional) = self.is_working_day(last);
                while !working {
                    last = last.succ_opt().expect("date in range");
                    let (w, p) = self.is_working_day(last);
                    working = w;
                    provisional |= p;
                }
                Due { at: end_of_day(last), provisional }
            }
            Period::WorkingDays(n) => {
                let mut day = start;
                let mut counted = 0;
                let mut provisional = false;
                while counted < n {
                    day = day.succ_opt().expect("date in range");
                    let (w, p) = self.is_working_day(day);
                    provisional |= p;
                    if w {
                        counted += 1;
                    }
                }
                Due { at: end_of_day(day), provisional }
            }
        }
    }
}

fn is_weekend(day: NaiveDate) -> bool {
    matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
}

/// `2025-10-01` or an inclusive range `2025-10-01..2025-10-08`.
fn parse_days(item: &str) -> Result<Vec<NaiveDate>, String> {
    let day =
        |s: &str| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| format!("calendar: bad date {s:?}"));
    match item.split_once("..") {
        None => Ok(vec![day(item)?]),
        Some((a, b)) => {
            let (a, b) = (day(a)?, day(b)?);
            if b < a || (b - a).num_days() > 31 {
                return Err(format!("calendar: bad range {item:?}"));
            }
            Ok(a.iter_days().take_while(|d| *d <= b).collect())
        }
    }
}

/// The calendar in force in a running service, replaced whole when the holiday schedules
/// change (see `runtime::follow_calendar`): readers take an `Arc` and keep a consistent
/// calendar for as long as they hold it.
#[derive(Debug, Clone, Default)]
pub struct LiveCalendar(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Calendar>>>);

impl LiveCalendar {
    pub fn new(calendar: Calendar) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(calendar))))
    }

    /// The calendar in force now.
    pub fn get(&self) -> std::sync::Arc<Calendar> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `calendar` in force; false (and nothing changes) when it is the one in force.
    pub fn replace(&self, calendar: Calendar) -> bool {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        if **current == calendar {
            return false;
        }
        *current = std::sync::Arc::new(calendar);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::cst;
    use chrono::TimeZone;

    #[test]
    fn a_live_calendar_changes_only_when_the_schedules_do() {
        let live = LiveCalendar::new(Calendar::shipped());
        let held = live.get();
        assert!(!live.replace(Calendar::shipped()), "the same schedules change nothing");
        let mut next = Calendar::shipped();
        next.load_toml("year = 2027\nholidays = [\"2027-01-01\"]\nworkdays = []").unwrap();
        assert!(live.replace(next.clone()));
        assert_eq!(*live.get(), next);
        assert_eq!(*held, Calendar::shipped(), "a reader keeps the calendar it took");
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> Instant {
        cst().with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn periods_parse() {
        assert_eq!(Period::parse("15d"), Ok(Period::Days(15)));
        assert_eq!(Period::parse("5wd"), Ok(Period::WorkingDays(5)));
        assert_eq!(Period::parse("3s"), Ok(Period::Exact(Duration::from_secs(3))));
        assert_eq!(Period::parse("2m"), Ok(Period::Exact(Duration::from_secs(120))));
        for bad in ["", "d", "0d", "15", "15x", "-1d", "1.5d", "99999d"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domain_examples() {
        let cal = Calendar::shipped();
        // registered 2025-09-20 → 15 days → 10-05 is in the holiday → rolls to 10-09
        let due = cal.due(at(2025, 9, 20, 10), Period::Days(15));
        assert_eq!(rfc(due.at), "2025-10-09T23:59:59+08:00");
        assert!(!due.provisional);
        // routed 2025-09-26 (Fri) → 5 working days, 09-28 a make-up day → 10-10
        let due = cal.due(at(2025, 9, 26, 10), Period::WorkingDays(5));
        assert_eq!(rfc(due.at), "2025-10-10T23:59:59+08:00");
    }

    #[test]
    fn start_day_is_not_counted_and_time_zone_is_cst() {
        let cal = Calendar::shipped();
        // 2026-03-02 is a Monday; 23:30 UTC on 03-01 is already 03-02 in Shanghai
        let from = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 23, 30, 0).unwrap().fixed_offset();
        assert_eq!(rfc(cal.due(from, Period::Days(1)).at), "2026-03-03T23:59:59+08:00");
        assert_eq!(rfc(cal.due(from, Period::WorkingDays(1)).at), "2026-03-03T23:59:59+08:00");
    }

    #[test]
    fn years_without_schedule_are_provisional() {
        let cal = Calendar::shipped();
        let due = cal.due(at(2027, 3, 1, 9), Period::Days(15));
        assert!(due.provisional);
        let due = cal.due(at(2026, 12, 20, 9), Period::Days(15));
        assert!(due.provisional, "ends in 2027");
        assert!(!cal.due(at(2026, 11, 1, 9), Period::Days(15)).provisional);
    }

    #[test]
    fn bad_schedules_are_refused() {
        let mut cal = Calendar::default();
        assert!(cal.load_toml("year = 2027\nholidays = [\"2026-01-01\"]\nworkdays = []").is_err());
        assert!(cal.load_toml("year = 2027\nholidays = [\"2027-01-01\"]\nworkdays = [\"2027-01-01\"]").is_err());
        assert!(cal.load_toml("year = 2027\nholidays = [\"2027-13-01\"]\nworkdays = []").is_err());
        assert_eq!(cal.load_toml("year = 2027\nholidays = [\"2027-01-01..2027-01-03\"]\nworkdays = []"), Ok(2027));
    }

    fn rfc(t: Instant) -> String {
        crate::time::rfc3339(t)
    }

    /// The official schedules as printed in DOMAIN.md, typed in again here so the shipped
    /// TOML files and the parser are checked too.
    const OFFICIAL: &[(&str, &str)] = &[
        ("2025-01-01", "2025-01-01"),
        ("2025-01-28", "2025-02-04"),
        ("2025-04-04", "2025-04-06"),
        ("2025-05-01", "2025-05-05"),
        ("2025-05-31", "2025-06-02"),
        ("2025-10-01", "2025-10-08"),
        ("2026-01-01", "2026-01-03"),
        ("2026-02-15", "2026-02-23"),
        ("2026-04-04", "2026-04-06"),
        ("2026-05-01", "2026-05-05"),
        ("2026-06-19", "2026-06-21"),
        ("2026-09-25", "2026-09-27"),
        ("2026-10-01", "2026-10-07"),
    ];
    const MAKE_UP: &[&str] = &[
        "2025-01-26",
        "2025-02-08",
        "2025-04-27",
        "2025-09-28",
        "2025-10-11",
        "2026-01-04",
        "2026-02-14",
        "2026-02-28",
        "2026-05-09",
        "2026-09-20",
        "2026-10-10",
    ];

    /// An independent, deliberately plain model: a table of every day from 2025-01-01 to
    /// 2027-12-31 with its working flag; dues are found by walking the table.
    struct Table {
        days: Vec<(NaiveDate, bool)>,
    }

    impl Table {
        fn new() -> Self {
            let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
            let mut days = Vec::new();
            let mut day = d("2025-01-01");
            while day <= d("2027-12-31") {
                let holiday = OFFICIAL.iter().any(|(a, b)| d(a) <= day && day <= d(b));
                let make_up = MAKE_UP.iter().any(|m| d(m) == day);
                let weekend = day.weekday().number_from_monday() >= 6;
                days.push((day, make_up || (!weekend && !holiday)));
                day = day.succ_opt().unwrap();
            }
            Self { days }
        }

        fn index(&self, day: NaiveDate) -> usize {
            self.days.iter().position(|(d, _)| *d == day).unwrap()
        }

        fn calendar_days(&self, start: NaiveDate, n: usize) -> NaiveDate {
            let i = self.index(start) + n;
            self.days[i..].iter().find(|(_, working)| *working).unwrap().0
        }

        fn working_days(&self, start: NaiveDate, n: usize) -> NaiveDate {
            self.days[self.index(start) + 1..].iter().filter(|(_, working)| *working).nth(n - 1).unwrap().0
        }
    }

    #[test]
    fn exhaustive_over_both_shipped_years() {
        let cal = Calendar::shipped();
        let table = Table::new();
        let mut checked = 0;
        let mut start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        while start.year() <= 2026 {
            let from = cst().from_local_datetime(&start.and_hms_opt(10, 30, 0).unwrap()).unwrap();
            for n in 1..=60u32 {
                let due = cal.due(from, Period::Days(n));
                let want = table.calendar_days(start, n as usize);
                assert_eq!(due.at, end_of_day(want), "{start} + {n}d");
                assert_eq!(due.provisional, want.year() > 2026, "{start} + {n}d provisional");
                checked += 1;
            }
            for n in 1..=10u32 {
                let due = cal.due(from, Period::WorkingDays(n));
                let want = table.working_days(start, n as usize);
                assert_eq!(due.at, end_of_day(want), "{start} + {n}wd");
                assert_eq!(due.provisional, want.year() > 2026, "{start} + {n}wd provisional");
                checked += 1;
            }
            start = start.succ_opt().unwrap();
        }
        assert_eq!(checked, 730 * 70);
    }
}
