//! Which moves cut over together in one round: a pure decision, unit-tested.
//!
//! A fenced cutover drains its source shard's change logs as a whole, so two cutovers of one
//! source at once would drain the same logs twice over; moves of one source therefore cut over
//! one after another, and moves of different sources side by side, up to `parallel` at once.

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
    pub flipped: bool,
    pub allowed: bool,
}

/// Picks, in move order, the unflipped allowed moves whose source is ready (its backlog
/// drains well within the fence), at most one per source and `parallel` in all.
pub fn pick(moves: &[Candidate<'_>], ready: &HashMap<String, bool>, parallel: usize) -> Pick {
    if moves.iter().all(|m| m.flipped) {
        return Pick::Done;
    }
    let mut sources: HashSet<&str> = HashSet::new();
    let mut any_allowed = false;
    let mut out = Vec::new();
    for (i, m) in moves.iter().enumerate() {
        if m.flipped || !m.allowed {
            continue;
        }
        any_allowed = true;
        if out.len() >= parallel.max(1)
            || !ready.get(m.source).copied().unwrap_or(false)
            || !sources.insert(m.source)
        {
            continue;
        }
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

    fn c(source: &str, flipped: bool, allowed: bool) -> Candidate<'_> {
        Candidate {
            source,
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
}
