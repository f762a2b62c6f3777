//! Which moves cut over together in one round: a pure decision, unit-tested.
//!
//! A fenced cutover drains its source shard's change logs as a whole, so two cutovers of one
//! source at once would drain the same logs twice over; moves of one source therefore cut over
//! one after another, and moves of different sources side by side, up to `parallel` at once.
//!
//! Nor does a round hold a move whose destination is another of its moves' source. The flips of
//! a round reach the in-memory routing of the drains only once the round ends, so a fenced drain
//! of shard X that ran while a move into X flipped would take the entries the application wrote
//! at X after that flip (reverse sync's, to the old owner) for keys that do not move, drop them,
//! and delete them from the log: the old owner would miss those writes.

use std::collections::{HashMap, HashSet};

/// What one round of the cutover loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    /// Every move has flipped.
    Done,
    /// Nothing unflipped is allowed to switch yet: keep catching up, at a slower pace.
    Hold,
    /// Allowed moves wait for their sources' backlogs to shrink: catch up again at once.
    CatchUp,
    /// Cut these moves (indexes) over now, side by side.
    Cut(Vec<usize>),
}

/// One move as the decision sees it.
pub struct Candidate<'a> {
    pub source: &'a str,
    pub destination: &'a str,
    pub flipped: bool,
    pub allowed: bool,
}

/// Picks, in move order, the unflipped allowed moves whose source is ready (its backlog
/// drains well within the fence), at most one per source, none whose source is another's
/// destination or the other way round, and `parallel` in all.
pub fn pick(moves: &[Candidate<'_>], ready: &HashMap<String, bool>, parallel: usize) -> Pick {
    if moves.iter().all(|m| m.flipped) {
        return Pick::Done;
    }
    let mut sources: HashSet<&str> = HashSet::new();
    let mut destinations: HashSet<&str> = HashSet::new();
    let mut any_allowed = false;
    let mut out = Vec::new();
    for (i, m) in moves.iter().enumerate() {
        if m.flipped || !m.allowed {
            continue;
        }
        any_allowed = true;
        if out.len() >= parallel.max(1)
            || !ready.get(m.source).copied().unwrap_or(false)
            || sources.contains(m.source)
            || destinations.contains(m.source)
            || sources.contains(m.destination)
        {
            continue;
        }
        sources.insert(m.source);
        destinations.insert(m.destination);
        out.push(i);
    }
    match (any_allowed, out.is_empty()) {
        (false, _) => Pick::Hold,
        (true, true) => Pick::CatchUp,
        (true, false) => Pick::Cut(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A move into a shard no candidate moves out of.
    fn c(source: &str, flipped: bool, allowed: bool) -> Candidate<'_> {
        Candidate {
            source,
            destination: "new",
            flipped,
            allowed,
        }
    }

    fn ready(shards: &[(&str, bool)]) -> HashMap<String, bool> {
        shards.iter().map(|(s, r)| (s.to_string(), *r)).collect()
    }

    #[test]
    fn different_sources_cut_over_side_by_side_one_source_in_turn() {
        let moves = [
            c("s0", false, true),
            c("s0", false, true),
            c("s1", false, true),
            c("s2", false, true),
        ];
        let r = ready(&[("s0", true), ("s1", true), ("s2", true)]);
        assert_eq!(pick(&moves, &r, 8), Pick::Cut(vec![0, 2, 3]));
        assert_eq!(pick(&moves, &r, 2), Pick::Cut(vec![0, 2]));
        // --parallel 1 (or 0) is the sequential cutover.
        assert_eq!(pick(&moves, &r, 1), Pick::Cut(vec![0]));
        assert_eq!(pick(&moves, &r, 0), Pick::Cut(vec![0]));
    }

    #[test]
    fn a_source_not_ready_waits_and_others_go_ahead() {
        let moves = [c("s0", false, true), c("s1", false, true)];
        let r = ready(&[("s0", false), ("s1", true)]);
        assert_eq!(pick(&moves, &r, 4), Pick::Cut(vec![1]));
        let r = ready(&[("s0", false)]);
        assert_eq!(pick(&moves, &r, 4), Pick::CatchUp);
    }

    #[test]
    fn flipped_and_unswitched_moves_are_not_picked() {
        let moves = [
            c("s0", true, true),
            c("s1", false, false),
            c("s0", false, true),
        ];
        let r = ready(&[("s0", true), ("s1", true)]);
        // A flipped move does not hold its source back.
        assert_eq!(pick(&moves, &r, 4), Pick::Cut(vec![2]));
        let moves = [c("s0", true, true), c("s1", false, false)];
        assert_eq!(pick(&moves, &r, 4), Pick::Hold);
        let moves = [c("s0", true, true), c("s1", true, false)];
        assert_eq!(pick(&moves, &r, 4), Pick::Done);
    }

    #[test]
    fn regression_reverse_entries_dropped_by_a_concurrent_drain_of_the_destination() {
        // Three shards to four: every shard is a source and a destination.
        let mv = |source, destination| Candidate {
            source,
            destination,
            flipped: false,
            allowed: true,
        };
        let moves = [
            mv("s0", "s1"),
            mv("s1", "s0"),
            mv("s1", "s2"),
            mv("s2", "s0"),
            mv("s2", "s3"),
            mv("s3", "s0"),
        ];
        let r = ready(&[("s0", true), ("s1", true), ("s2", true), ("s3", true)]);
        // s0 -> s1 is picked: nothing out of s1 (its drain would meet s0 -> s1's flip) and
        // nothing into s0 (s0's own drain runs this round).
        assert_eq!(pick(&moves, &r, 8), Pick::Cut(vec![0, 4]));
        // Once those flipped, moves out of s1, s2 and s3 may go, side by side into s0.
        let mut later = moves;
        later[0].flipped = true;
        later[4].flipped = true;
        assert_eq!(pick(&later, &r, 8), Pick::Cut(vec![1, 3, 5]));
    }
}
