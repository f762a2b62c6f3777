//! range → range: merge both maps' breakpoints; on each elementary interval both owners are
//! constant, so a move is the union of the intervals where (old, new) is its pair, with
//! adjacent intervals merged.

use std::collections::BTreeSet;

use super::measure::interval_measure;
use super::{Acc, Draft};
use crate::map::{Bound, RangeSpec};
use crate::plan::{KeyInterval, Segments};

/// Walks a sorted range list along increasing interval starts.
struct Cursor<'a> {
    ranges: &'a [RangeSpec],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn owner_at(&mut self, start: Option<&Bound>) -> &'a str {
        if let Some(s) = start {
            while self.at + 1 < self.ranges.len()
                && self.ranges[self.at + 1]
                    .from
                    .as_ref()
                    .is_some_and(|f| f <= s)
            {
                self.at += 1;
            }
        }
        &self.ranges[self.at].shard
    }
}

pub(crate) fn diff(old: &[RangeSpec], new: &[RangeSpec]) -> Vec<Draft> {
    let breaks: BTreeSet<&Bound> = old
        .iter()
        .chain(new)
        .filter_map(|r| r.from.as_ref())
        .collect();
    let starts: Vec<Option<&Bound>> = std::iter::once(None)
        .chain(breaks.into_iter().map(Some))
        .collect();
    let (mut a, mut b) = (Cursor { ranges: old, at: 0 }, Cursor { ranges: new, at: 0 });
    // (old, new, from, to) of the run being merged.
    let mut runs: Vec<(&str, &str, Option<&Bound>, Option<&Bound>)> = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().flatten();
        let (o, n) = (a.owner_at(start), b.owner_at(start));
        match runs.last_mut() {
            Some(last) if last.0 == o && last.1 == n => last.3 = end,
            _ => runs.push((o, n, start, end)),
        }
    }
    let mut acc = Acc::new();
    for (o, n, from, to) in runs {
        if o == n {
            continue;
        }
        let seg = acc.add(o, n, interval_measure(from, to), || Segments::Ranges {
            ranges: Vec::new(),
        });
        if let Segments::Ranges { ranges } = seg {
            ranges.push(KeyInterval {
                from: from.cloned(),
                to: to.cloned(),
            });
        }
    }
    acc.into_drafts()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(from: Option<i64>, to: Option<i64>, s: &str) -> RangeSpec {
        RangeSpec {
            from: from.map(Bound::Int),
            to: to.map(Bound::Int),
            shard: s.into(),
        }
    }

    #[test]
    fn splitting_a_range_moves_its_upper_part() {
        let old = [r(None, Some(100), "s0"), r(Some(100), None, "s1")];
        let new = [
            r(None, Some(50), "s0"),
            r(Some(50), Some(100), "s2"),
            r(Some(100), None, "s1"),
        ];
        let d = diff(&old, &new);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].source.as_str(), d[0].destination.as_str()),
            ("s0", "s2")
        );
        assert_eq!(
            d[0].segments,
            Segments::Ranges {
                ranges: vec![KeyInterval {
                    from: Some(Bound::Int(50)),
                    to: Some(Bound::Int(100))
                }]
            }
        );
        assert_eq!(d[0].fraction, 50.0 / super::super::measure::TWO_64);
    }

    #[test]
    fn adjacent_intervals_of_one_move_merge() {
        let old = [
            r(None, Some(10), "a"),
            r(Some(10), Some(20), "a"),
            r(Some(20), None, "b"),
        ];
        let new = [
            r(None, Some(5), "a"),
            r(Some(5), Some(15), "c"),
            r(Some(15), None, "c"),
        ];
        let d = diff(&old, &new);
        let ac = d
            .iter()
            .find(|m| m.destination == "c" && m.source == "a")
            .unwrap();
        assert_eq!(
            ac.segments,
            Segments::Ranges {
                ranges: vec![KeyInterval {
                    from: Some(Bound::Int(5)),
                    to: Some(Bound::Int(20))
                }]
            }
        );
    }
}
