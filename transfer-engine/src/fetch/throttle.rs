//! A bandwidth limit: one budget of bytes per second shared by every session of a copy, so
//! that parallel sessions together stay under the limit (Barman's `bandwidth_limit`; rsync's
//! `--bwlimit` applies to each rsync process alone).

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far ahead of the budget a reader may run before it sleeps (smooths small reads).
const BURST: Duration = Duration::from_millis(50);

/// A shared rate limit.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: f64,
    /// When the bytes counted so far will have been paid for.
    paid_until: Mutex<Instant>,
}

impl Throttle {
    /// A limit of `kib_per_second` KiB/s (the unit of Barman's `bandwidth_limit` and rsync's
    /// `--bwlimit`).
    pub fn from_kib_per_second(kib_per_second: u64) -> Arc<Throttle> {
        Arc::new(Throttle {
            bytes_per_second: (kib_per_second.max(1) * 1024) as f64,
            paid_until: Mutex::new(Instant::now()),
        })
    }

    /// Counts `bytes` and sleeps as long as the budget requires.
    pub fn consume(&self, bytes: usize) {
        let now = Instant::now();
        let due = {
            let mut paid_until = self.paid_until.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*paid_until).max(now);
            *paid_until = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
            *paid_until
        };
        if let Some(ahead) = due.checked_duration_since(now + BURST) {
            std::thread::sleep(ahead);
        }
    }
}

/// A reader whose bytes are paid for from a [`Throttle`].
pub struct ThrottledReader<R> {
    inner: R,
    throttle: Arc<Throttle>,
}

impl<R: Read> ThrottledReader<R> {
    /// Reads from `inner`, paying for each read from `throttle`.
    pub fn new(inner: R, throttle: Arc<Throttle>) -> Self {
        ThrottledReader { inner, throttle }
    }
}

impl<R: Read> Read for ThrottledReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Small reads keep the pacing smooth at low rates.
        let limit = buf.len().min(64 * 1024);
        let read = self.inner.read(&mut buf[..limit])?;
        self.throttle.consume(read);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_sharing_a_throttle_stay_under_its_rate() {
        // 512 KiB/s shared by two readers moving 256 KiB each: about one second in total.
        let throttle = Throttle::from_kib_per_second(512);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let throttle = throttle.clone();
                scope.spawn(move || {
                    let data = vec![0u8; 256 * 1024];
                    let mut reader = ThrottledReader::new(&data[..], throttle);
                    io::copy(&mut reader, &mut io::sink()).unwrap();
                });
            }
        });
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.85..3.0).contains(&elapsed),
            "512 KiB at 512 KiB/s took {elapsed:.2} s"
        );
    }
}
