//! The client log of the manual upgrade procedure's test client (`lb-upgrade-test-cli`):
//!
//! ```text
//! Fri Aug 24 15:49:38 UTC 2018: Starting client service
//! Fri Aug 24 15:49:39 UTC 2018: Connectivity error: ...
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The `date` format of that client's log (`date` in the C locale, UTC).
pub const DATE_FORMAT: &str = "%a %b %e %H:%M:%S UTC %Y";

/// `ts` formatted like `Fri Aug 24 15:49:38 UTC 2018`.
pub(crate) fn log_date(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::UTC).strftime(DATE_FORMAT).to_string()
}

/// One log line, without the newline: `<date>: <message>`.
pub(crate) fn log_line(ts: Timestamp, message: &str) -> String {
    format!("{}: {message}", log_date(ts))
}

/// An append-only log file in that format.
#[derive(Debug)]
pub struct ProbeLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl ProbeLog {
    /// Opens (creating, appending) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `<date>: <message>` with the current time.
    pub fn write(&self, message: &str) -> std::io::Result<()> {
        let line = format!("{}\n", log_line(crate::clock::label_time(), message));
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(line.as_bytes())?;
        f.flush()
    }

    /// `<date>: Starting client service`
    pub fn starting(&self) -> std::io::Result<()> {
        self.write("Starting client service")
    }

    /// `<date>: Stopping client service`, on SIGTERM: a reader can tell the errors of a client
    /// whose own container is being stopped (swarm withdraws its service binding and waits 2 s
    /// before the signal; its DNS lookups can time out meanwhile) from a service interruption.
    pub fn stopping(&self) -> std::io::Result<()> {
        self.write("Stopping client service")
    }

    /// `<date>: Connectivity error: <detail>`
    pub(crate) fn connectivity_error(&self, detail: &str) -> std::io::Result<()> {
        self.write(&format!("Connectivity error: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_test_client() {
        let ts: Timestamp = "2018-08-24T15:49:38Z".parse().unwrap();
        assert_eq!(log_date(ts), "Fri Aug 24 15:49:38 UTC 2018");
        let ts: Timestamp = "2018-08-04T05:09:08Z".parse().unwrap();
        assert_eq!(log_date(ts), "Sat Aug  4 05:09:08 UTC 2018");
        assert_eq!(
            log_line(ts, "Starting client service"),
            "Sat Aug  4 05:09:08 UTC 2018: Starting client service"
        );
    }
}
