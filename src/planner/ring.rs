//! ring → ring with the same hash: merge both rings' tokens. On an elementary arc
//! `[t_i, t_{i+1})` each ring's owner is the owner of its smallest token `>= t_{i+1}` (a key
//! belongs to the first token strictly greater than its digest); on the wrap arc
//! `[t_last, top) ∪ [0, t_first)` it is the owner of the ring's smallest token.

use super::measure::arc_measure;
use super::{Acc, Draft};
use crate::hashing::{token_hex, Token};
use crate::map::Partitioner;
use crate::plan::{Segments, TokenArc};

/// Walks one ring's sorted tokens along increasing arc ends.
struct Cursor<'a> {
    tokens: &'a [Token],
    owner: &'a [usize],
    at: usize,
}

impl Cursor<'_> {
    /// Owner of the first token `>= end`, wrapping to the smallest.
    fn owner_up_to(&mut self, end: &Token) -> usize {
        while self.at < self.tokens.len() && &self.tokens[self.at] < end {
            self.at += 1;
        }
        if self.at < self.tokens.len() {
            self.owner[self.at]
        } else {
            self.owner[0]
        }
    }
}

fn merged(a: &[Token], b: &[Token]) -> Vec<Token> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let t = if j >= b.len() || (i < a.len() && a[i] <= b[j]) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        if out.last() != Some(&t) {
            out.push(t);
        }
    }
    out
}

pub(crate) fn diff(old: &Partitioner, new: &Partitioner) -> Vec<Draft> {
    let (Some((hash, ta, oa)), Some((_, tb, ob))) = (old.ring(), new.ring()) else {
        return Vec::new();
    };
    let bits = hash.bits();
    let all = merged(ta, tb);
    let (Some(first), Some(last)) = (all.first(), all.last()) else {
        return Vec::new();
    };
    let zero: Token = [0; 20];
    let wrap = (oa[0], ob[0]);
    // Elementary arcs in increasing order: (from, to (None = top), old owner, new owner).
    let mut elementary: Vec<(Token, Option<Token>, usize, usize)> =
        Vec::with_capacity(all.len() + 1);
    if *first != zero {
        elementary.push((zero, Some(*first), wrap.0, wrap.1));
    }
    let (mut ca, mut cb) = (
        Cursor {
            tokens: ta,
            owner: oa,
            at: 0,
        },
        Cursor {
            tokens: tb,
            owner: ob,
            at: 0,
        },
    );
    for w in all.windows(2) {
        let end = &w[1];
        elementary.push((w[0], Some(*end), ca.owner_up_to(end), cb.owner_up_to(end)));
    }
    elementary.push((*last, None, wrap.0, wrap.1));

    let mut acc = Acc::new();
    let mut i = 0;
    while i < elementary.len() {
        let (from, mut to, o, n) = elementary[i];
        let mut fraction = arc_measure(&from, to.as_ref(), bits);
        i += 1;
        while i < elementary.len() && (elementary[i].2, elementary[i].3) == (o, n) {
            to = elementary[i].1;
            fraction += arc_measure(&elementary[i].0, to.as_ref(), bits);
            i += 1;
        }
        let (src, dst) = (&old.shards[o], &new.shards[n]);
        if src == dst {
            continue;
        }
        let seg = acc.add(src, dst, fraction, || Segments::Arcs {
            hash,
            arcs: Vec::new(),
        });
        if let Segments::Arcs { arcs, .. } = seg {
            arcs.push(TokenArc {
                from: token_hex(&from, bits),
                to: to.map(|t| token_hex(&t, bits)),
            });
        }
    }
    acc.into_drafts()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_dedups_and_sorts() {
        let t = |b: u8| [b; 20];
        assert_eq!(
            merged(&[t(1), t(3)], &[t(2), t(3), t(4)]),
            vec![t(1), t(2), t(3), t(4)]
        );
    }
}
