//! Where the decision reads the time: the system clock in service; a test sets another, so
//! that payments of several business days can be made in one run (clearing tests).

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;

/// The decision's clock.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> OffsetDateTime + Send + Sync>>);

impl Clock {
    /// The system clock (UTC).
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that reads `now` (tests).
    pub fn from_fn(now: impl Fn() -> OffsetDateTime + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(now)))
    }

    /// The time now.
    pub fn now(&self) -> OffsetDateTime {
        self.0.as_ref().map_or_else(OffsetDateTime::now_utc, |now| now())
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Clock(set)" } else { "Clock(system)" })
    }
}
