//! The business day a transaction belongs to: day D runs from the cut-off of day D-1 (UTC) to
//! the cut-off of day D. With the default cut-off 00:00 that is the calendar day in UTC.

use time::{Date, Duration, OffsetDateTime, Time};

/// Why a cut-off text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cut-off must be a UTC time of day as HH:MM or HH:MM:SS, e.g. \"22:00\" or \"20:55:30\"")]
pub struct BadCutoff;

/// The configured end of the business day, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff(Time);

impl Cutoff {
    /// Parses "HH:MM" or "HH:MM:SS" (the clearing files' own spelling,
    /// [`mps_settlement::clearing::parse_cutoff`]).
    pub fn parse(text: &str) -> Result<Self, BadCutoff> {
        mps_settlement::clearing::parse_cutoff(text).map(Self).ok_or(BadCutoff)
    }

    /// The business day of an instant: after the cut-off, the next calendar day.
    pub fn business_day(&self, at: OffsetDateTime) -> Date {
        let at = at.to_offset(time::UtcOffset::UTC);
        let since_midnight = self.0 - Time::MIDNIGHT;
        if since_midnight.is_zero() || at.time() < self.0 { at.date() } else { at.date() + Duration::days(1) }
    }

    /// When business day `day` ends: the cut-off on that date, or the midnight after it for
    /// cut-off 00:00. The first instant of the next business day.
    pub fn day_end(&self, day: Date) -> OffsetDateTime {
        let date = if self.0 == Time::MIDNIGHT { day + Duration::days(1) } else { day };
        date.with_time(self.0).assume_utc()
    }

    /// The cut-off as HH:MM, or HH:MM:SS when it is not on the minute.
    pub fn as_text(&self) -> String {
        mps_settlement::clearing::cutoff_text(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_day_ends_where_the_next_begins() {
        for text in ["00:00", "22:00", "06:30", "20:55:30", "23:59:59", "00:00:01"] {
            let cutoff = Cutoff::parse(text).unwrap();
            assert_eq!(cutoff.as_text(), text);
            let day = time::macros::date!(2026 - 11 - 30);
            let end = cutoff.day_end(day);
            assert_eq!(cutoff.business_day(end - Duration::nanoseconds(1)), day, "{text}");
            assert_eq!(cutoff.business_day(end), day + Duration::days(1), "{text}");
        }
    }

    #[test]
    fn midnight_cutoff_is_the_calendar_day() {
        let cutoff = Cutoff::parse("00:00").unwrap();
        assert_eq!(cutoff.business_day(datetime!(2026-11-26 23:59 UTC)).to_string(), "2026-11-26");
        assert_eq!(cutoff.business_day(datetime!(2026-11-27 00:00 UTC)).to_string(), "2026-11-27");
    }

    #[test]
    fn evening_cutoff_moves_late_payments_to_the_next_day() {
        let cutoff = Cutoff::parse("22:00").unwrap();
        assert_eq!(cutoff.business_day(datetime!(2026-11-26 21:59 UTC)).to_string(), "2026-11-26");
        assert_eq!(cutoff.business_day(datetime!(2026-11-26 22:00 UTC)).to_string(), "2026-11-27");
        assert_eq!(cutoff.business_day(datetime!(2026-12-31 23:00 UTC)).to_string(), "2027-01-01");
    }

    #[test]
    fn a_cutoff_with_seconds_ends_the_day_on_that_second() {
        let cutoff = Cutoff::parse("20:55:30").unwrap();
        assert_eq!(cutoff.business_day(datetime!(2026-11-30 20:55:29.999 UTC)).to_string(), "2026-11-30");
        assert_eq!(cutoff.business_day(datetime!(2026-11-30 20:55:30 UTC)).to_string(), "2026-12-01");
        assert_eq!(cutoff.day_end(time::macros::date!(2026 - 11 - 30)), datetime!(2026-11-30 20:55:30 UTC));
        // Just after midnight: the day that began at yesterday's cut-off ends today.
        let early = Cutoff::parse("00:00:15").unwrap();
        assert_eq!(early.business_day(datetime!(2026-11-30 23:59:58 UTC)).to_string(), "2026-12-01");
        assert_eq!(early.business_day(datetime!(2026-12-01 00:00:14 UTC)).to_string(), "2026-12-01");
        assert_eq!(early.day_end(time::macros::date!(2026 - 12 - 01)), datetime!(2026-12-01 00:00:15 UTC));
    }

    #[test]
    fn on_the_minute_seconds_are_the_same_cutoff() {
        assert_eq!(Cutoff::parse("22:00:00"), Cutoff::parse("22:00"));
        assert_eq!(Cutoff::parse("22:00:00").unwrap().as_text(), "22:00");
        assert_eq!(
            Cutoff::parse("00:00:00").unwrap().day_end(time::macros::date!(2026 - 11 - 30)),
            datetime!(2026-12-01 00:00 UTC)
        );
    }

    #[test]
    fn bad_cutoffs_are_refused() {
        for text in
            ["24:00", "7:00", "07:60", "0700", "", "aa:bb", "07:00:60", "07:00:5", "07:00:", "07:00:00:00", "07:00:0a"]
        {
            assert_eq!(Cutoff::parse(text), Err(BadCutoff), "{text}");
        }
    }
}
