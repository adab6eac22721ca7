//! The business day a transaction belongs to: day D runs from the cut-off of day D-1 (UTC) to
//! the cut-off of day D. With the default cut-off 00:00 that is the calendar day in UTC.

use time::{Date, Duration, OffsetDateTime, Time};

/// Why a cut-off text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cut-off must be a UTC time of day as HH:MM, e.g. \"22:00\"")]
pub struct BadCutoff;

/// The configured end of the business day, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff(Time);

impl Cutoff {
    /// Parses "HH:MM".
    pub fn parse(text: &str) -> Result<Self, BadCutoff> {
        let (hours, minutes) = text.split_once(':').ok_or(BadCutoff)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(BadCutoff);
        }
        let hours: u8 = hours.parse().map_err(|_| BadCutoff)?;
        let minutes: u8 = minutes.parse().map_err(|_| BadCutoff)?;
        Time::from_hms(hours, minutes, 0).map(Self).map_err(|_| BadCutoff)
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

    /// The cut-off as HH:MM.
    pub fn as_text(&self) -> String {
        format!("{:02}:{:02}", self.0.hour(), self.0.minute())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_day_ends_where_the_next_begins() {
        for text in ["00:00", "22:00", "06:30"] {
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
    fn bad_cutoffs_are_refused() {
        for text in ["24:00", "7:00", "07:60", "0700", "", "aa:bb"] {
            assert_eq!(Cutoff::parse(text), Err(BadCutoff), "{text}");
        }
    }
}
