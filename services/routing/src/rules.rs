//! The rules in force: the node file, re-read when it changes. A file that does not load or
//! check is refused with a clear error in the log and a counted metric; the old rules stay.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use xinfang_shared::calendar::{Calendar, LiveCalendar};
use xinfang_shared::config::Settings;
use xinfang_shared::{runtime, CancellationToken};

use crate::metrics::Metrics;

/// How often the node file is checked for changes.
const POLL: Duration = Duration::from_secs(2);

/// Shared, reloadable settings, with the calendar they name (read once per load and when the
/// holiday schedules change, not per case).
#[derive(Clone)]
pub struct Rules {
    current: Arc<RwLock<Arc<Settings>>>,
    calendar: LiveCalendar,
    path: Option<PathBuf>,
    metrics: Metrics,
}

impl Rules {
    /// Rules from `settings`, reloaded from `path` when it changes.
    pub fn new(settings: Settings, path: Option<PathBuf>, metrics: Metrics) -> Result<Self, String> {
        let calendar = LiveCalendar::new(settings.calendar().map_err(|e| e.to_string())?);
        Ok(Self { current: Arc::new(RwLock::new(Arc::new(settings))), calendar, path, metrics })
    }

    /// The settings in force now.
    pub fn get(&self) -> Arc<Settings> {
        self.current.read().expect("rules lock").clone()
    }

    /// The holiday calendar in force now.
    pub fn calendar(&self) -> Arc<Calendar> {
        self.calendar.get()
    }

    /// Tries to load the node file again; on success the new rules are in force.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let fresh = Settings::load(Some(path)).map_err(|e| e.to_string())?;
        if fresh.node.code != self.get().node.code {
            return Err(format!("node.code changed to {}; restart the node to change it", fresh.node.code));
        }
        let calendar = fresh.calendar().map_err(|e| e.to_string())?;
        *self.current.write().expect("rules lock") = Arc::new(fresh);
        self.calendar.replace(calendar);
        Ok(())
    }

    /// Polls the node file's modification time until `shutdown`, and follows the holiday
    /// schedules its `calendar.path` names.
    pub async fn watch(self, shutdown: CancellationToken) {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = self.path.as_ref().and_then(modified);
        let mut calendar_refused = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            runtime::refresh_calendar(&self.get(), &self.calendar, &mut calendar_refused);
            let Some(path) = &self.path else { continue };
            let now = modified(path);
            if now == seen {
                continue;
            }
            seen = now;
            match self.reload() {
                Ok(()) => {
                    self.metrics.reloads.with_label_values(&["ok"]).inc();
                    tracing::info!(path = %path.display(), "routing rules reloaded");
                }
                Err(e) => {
                    self.metrics.reloads.with_label_values(&["refused"]).inc();
                    tracing::error!(path = %path.display(), error = %e, "new routing rules refused; the previous rules stay in force");
                }
            }
        }
    }
}
