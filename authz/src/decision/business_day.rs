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
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

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
