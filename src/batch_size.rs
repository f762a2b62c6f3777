//! Adaptive copy batches (`--batch-time`, issue 15): pt-online-schema-change sizes its chunks
//! so that each takes about half a second, which keeps every statement short on a busy primary
//! whatever the rows weigh. reshard starts at `--batch-size` and, after each batch, moves the
//! size toward the one that would have taken `--batch-time`, at most doubling or halving per
//! batch so that one slow batch (a lock wait, a cold cache) does not swing it.

use std::time::Duration;

/// The fewest rows a batch is sized to: below this the per-batch overhead (the catalog record)
/// dominates.
pub const MIN_ROWS: usize = 10;
/// The most: two batches are in memory at a time (the one written and the next, read meanwhile).
pub const MAX_ROWS: usize = 50_000;

/// The size of the next batch after one of `size` rows took `took`, aiming at `target`.
pub fn next(size: usize, took: Duration, target: Duration) -> usize {
    let took = took.as_secs_f64().max(1e-4);
    let ratio = (target.as_secs_f64() / took).clamp(0.5, 2.0);
    ((size as f64 * ratio).round() as usize).clamp(MIN_ROWS, MAX_ROWS)
}

/// The most payload bytes a batch is sized to. Two batches are in memory at a time, each
/// several times its payload as decoded values and the write's buffer: at 50,000 rows of
/// ~300 bytes, a copy of 10^6 rows peaked at 130 MB resident.
pub const MAX_BYTES: u64 = 8 << 20;

/// `size`, lowered so that rows weighing what the last batch's did (`bytes` over `rows`) stay
/// under [`MAX_BYTES`], and never under [`MIN_ROWS`].
pub fn cap_bytes(size: usize, bytes: u64, rows: usize) -> usize {
    if rows == 0 || bytes == 0 {
        return size;
    }
    let per_row = (bytes / rows as u64).max(1);
    size.min((MAX_BYTES / per_row) as usize).max(MIN_ROWS)
}

/// Whether a change from `shown` to `now` is worth an event: a factor of two since the last.
pub fn worth_telling(shown: usize, now: usize) -> bool {
    now >= shown.saturating_mul(2) || now.saturating_mul(2) <= shown
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: Duration = Duration::from_millis(500);

    #[test]
    fn the_size_moves_toward_the_target_time_by_at_most_a_factor_of_two() {
        assert_eq!(next(1000, Duration::from_millis(250), HALF), 2000);
        assert_eq!(
            next(1000, Duration::from_millis(1), HALF),
            2000,
            "capped at double"
        );
        assert_eq!(next(1000, Duration::from_millis(400), HALF), 1250);
        assert_eq!(
            next(1000, Duration::from_secs(10), HALF),
            500,
            "capped at half"
        );
        assert_eq!(next(1000, HALF, HALF), 1000, "on target: unchanged");
        assert_eq!(next(12, Duration::from_secs(9), HALF), MIN_ROWS);
        assert_eq!(next(40_000, Duration::ZERO, HALF), MAX_ROWS);
    }

    #[test]
    fn rows_that_weigh_more_get_smaller_batches_and_it_settles() {
        // A table whose rows cost 0.1 ms each, then 1 ms each: the size settles near the
        // target's worth of each.
        let mut size = 1000;
        for _ in 0..20 {
            size = next(size, Duration::from_secs_f64(size as f64 * 1e-4), HALF);
        }
        assert!((4500..=5500).contains(&size), "{size}");
        for _ in 0..20 {
            size = next(size, Duration::from_secs_f64(size as f64 * 1e-3), HALF);
        }
        assert!((450..=550).contains(&size), "{size}");
    }

    #[test]
    fn wide_rows_get_batches_under_the_byte_bound() {
        // 300-byte rows: at most 8 MiB / 300 = 27,962 rows, whatever the timing asked.
        assert_eq!(cap_bytes(50_000, 300 * 1000, 1000), 27_962);
        assert_eq!(cap_bytes(5_000, 300 * 1000, 1000), 5_000, "under the bound");
        assert_eq!(cap_bytes(1_000, 64 << 20, 1), MIN_ROWS, "one huge row");
        assert_eq!(cap_bytes(1_000, 0, 0), 1_000, "nothing read yet");
    }

    #[test]
    fn only_a_doubling_or_halving_is_told() {
        assert!(worth_telling(1000, 2000) && worth_telling(1000, 500));
        assert!(!worth_telling(1000, 1900) && !worth_telling(1000, 600));
    }
}
