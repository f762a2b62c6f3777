//! The fenced cutover of each move, its reverse (rollback), reverse sync, and the
//! reconciliation a run starts with. See docs/online.md.
//!
//! Cutover of move M (source S, destination D), each step recorded in the catalog:
//! `catching_up` → `fencing` (raise M's fence row on S, bounded by the remaining budget; drain
//! S's logs; verify M) → one catalog transaction flips M and bumps the routing version →
//! `flipped`. The fence row stays up on S: stale writers of M's keys there get the fence error.
//! Over budget or mismatch: the fence is lowered, the reason recorded, M goes back to
//! `catching_up`. A crash leaves either `fencing` (the next run lowers the fence) or
//! `flipped` (the flip committed); never half of each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::backend::{PkValues, Value};
use crate::capture::{Drained, Online};
use crate::cutover_pick::{pick, Candidate, Pick};
use crate::error::Stop;
use crate::failpoint;
use crate::job::MoveState;
use crate::preflight::Side;
use crate::retry::retry;
use crate::signals::StopFlag;
use crate::verify;

/// What the forward loop of one run keeps per move.
struct Forward {
    /// Keys each drain applied: the chunks whose recorded checksums they may have made stale.
    /// Collected from the start of this run: a pass left unfinished by a crash resumes on chunks
    /// recorded before any of this run's drains, and the crashed run did not drain while its
    /// pass ran.
    touched: Vec<verify::Touched>,
    /// Whether this run has verified the move in full outside the fence.
    passed: Vec<bool>,
    failures: Vec<u32>,
    /// When each shard's catch-up rate was last recorded.
    rate_noted: HashMap<String, Instant>,
}

/// Failed fence attempts of one move, in one run, before the job stops (resumable).
pub const MAX_FENCE_ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub enum Cutover {
    Flipped {
        fence_ms: u64,
    },
    /// The fence came down; the reason is recorded.
    Aborted(String),
}

/// Mismatches of one verification: (table, primary key JSON, what).
pub type Mismatches = Vec<(String, String, &'static str)>;

fn pk_id(pk: &PkValues) -> String {
    serde_json::to_string(pk).unwrap_or_default()
}

impl Online<'_> {
    /// Brings fences and states in line with the catalog after any crash: a flipped move's
    /// source is fenced and its destination is not; an unflipped move's source is not fenced.
    /// `fencing` becomes `catching_up`; `rolling_back` becomes `flipped`.
    pub async fn reconcile(&self) -> Result<()> {
        let rows = self.catalog.moves(self.job).await?;
        for (mi, m) in self.moves.iter().enumerate() {
            let Some(row) = rows.iter().find(|r| r.id == m.id) else {
                continue;
            };
            let src = self.backend(Side::From, &m.source)?;
            let dst = self.backend(Side::To, &m.destination)?;
            let pair = self.pairs[mi];
            if row.flipped {
                set_fence(src.as_ref(), pair, &m.id, true).await?;
                set_fence(dst.as_ref(), pair, &m.id, false).await?;
                if row.state == MoveState::RollingBack.as_str() {
                    self.catalog
                        .event(
                            self.job,
                            Some(&m.id),
                            "fence_lowered",
                            "rollback interrupted",
                        )
                        .await?;
                    self.catalog
                        .set_move_state(self.job, &m.id, MoveState::Flipped, None)
                        .await?;
                }
            } else if row.state == MoveState::Fencing.as_str() {
                set_fence(src.as_ref(), pair, &m.id, false).await?;
                self.catalog
                    .event(
                        self.job,
                        Some(&m.id),
                        "fence_lowered",
                        "cutover interrupted",
                    )
                    .await?;
                self.catalog
                    .set_move_state(self.job, &m.id, MoveState::CatchingUp, None)
                    .await?;
            } else if row.state == MoveState::CatchingUp.as_str() {
                set_fence(src.as_ref(), pair, &m.id, false).await?;
            }
        }
        Ok(())
    }

    /// Catch-up and cutover of every move, until all have flipped. Returns false when stopped
    /// by a signal (nothing left fenced).
    /// While `switch` is false (`apply --switch manual` before `reshard switch`), it keeps
    /// catching up without flipping.
    pub async fn run_forward(
        &mut self,
        max_fence: Duration,
        parallel: usize,
        stop: &StopFlag,
        switch: &crate::switch_gate::SwitchGate,
    ) -> Result<bool> {
        let rows = self.catalog.moves(self.job).await?;
        for m in &self.moves {
            if rows
                .iter()
                .any(|r| r.id == m.id && r.state == MoveState::Copied.as_str())
            {
                self.catalog
                    .set_move_state(self.job, &m.id, MoveState::CatchingUp, None)
                    .await?;
            }
        }
        let mut st = Forward {
            touched: vec![verify::Touched::new(); self.moves.len()],
            passed: vec![false; self.moves.len()],
            failures: vec![0; self.moves.len()],
            rate_noted: HashMap::new(),
        };
        let shards: Vec<String> = self.shards().into_iter().map(|(s, _)| s).collect();
        loop {
            if stop.requested() {
                return Ok(false);
            }
            let ready = self.catch_up_pass(&shards, &mut st, max_fence).await?;
            let candidates: Vec<Candidate> = (0..self.moves.len())
                .map(|i| Candidate {
                    source: &self.moves[i].source,
                    destination: &self.moves[i].destination,
                    flipped: self.flipped[i],
                    allowed: switch.allows(&self.moves[i].id),
                })
                .collect();
            match pick(&candidates, &ready, parallel) {
                Pick::Done => return Ok(true),
                Pick::Hold => {
                    // Caught up; the backlog stays small until the operator switches.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Pick::CatchUp => {}
                Pick::Cut(picked) => self.round(&picked, &mut st, max_fence).await?,
            }
        }
    }

    /// One catch-up pass over every shard; per shard, whether its backlog would drain well
    /// within the fence.
    async fn catch_up_pass(
        &self,
        shards: &[String],
        st: &mut Forward,
        max_fence: Duration,
    ) -> Result<HashMap<String, bool>> {
        let mut ready = HashMap::new();
        for s in shards {
            let started = Instant::now();
            // A second signal abandons a long catch-up (each entry is applied in a
            // transaction of its own and consumed after it) or verification (read-only).
            let d = crate::signals::or_hard_stop(self.drain(s, false)).await?;
            for (mi, t) in st.touched.iter_mut().enumerate() {
                self.add_touched(t, &d, mi);
            }
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            self.note_drain_rate(s, d.entries as u64, secs, &mut st.rate_noted)
                .await;
            // The pass ended with a short read on every log; predict draining what
            // arrived meanwhile at the same rate.
            let rate = (d.entries as f64 / secs).max(self.log_batch as f64);
            let predicted = d.entries as f64 / rate;
            ready.insert(s.clone(), predicted < max_fence.as_secs_f64() / 2.0);
        }
        Ok(ready)
    }

    /// The cutover attempts of the `picked` moves, side by side. Every attempt settles (no
    /// fence left up by a sibling's error) before the first error, if any, ends the run.
    async fn round(
        &mut self,
        picked: &[usize],
        st: &mut Forward,
        max_fence: Duration,
    ) -> Result<()> {
        let this = &*self;
        let passed = &st.passed;
        let attempts = st
            .touched
            .iter_mut()
            .enumerate()
            .filter(|(mi, _)| picked.contains(mi))
            .map(|(mi, t)| {
                let passed = passed[mi];
                async move { (mi, this.attempt(mi, max_fence, passed, t).await) }
            });
        let results = futures_util::future::join_all(attempts).await;
        let mut first_error = None;
        for (mi, res) in results {
            st.passed[mi] = true;
            match res {
                Ok((outcome, drained)) => {
                    if let Some(d) = &drained {
                        // The fenced drain applied the other moves of this source too.
                        for (mj, t) in st.touched.iter_mut().enumerate() {
                            if mj != mi {
                                self.add_touched(t, d, mj);
                            }
                        }
                    }
                    if let Err(e) = self.settle(mi, outcome, &mut st.failures[mi]) {
                        first_error.get_or_insert(e);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Records the outcome of one cutover attempt of move `mi`: a flip, or a lowered fence that
    /// counts against the move's attempts.
    fn settle(&mut self, mi: usize, outcome: Cutover, failures: &mut u32) -> Result<()> {
        let m = &self.moves[mi];
        match outcome {
            Cutover::Flipped { fence_ms } => {
                self.flipped[mi] = true;
                crate::progress::say(format!(
                    "reshard: move {} flipped ({} -> {}), fence {fence_ms} ms",
                    m.id, m.source, m.destination
                ));
            }
            Cutover::Aborted(why) => {
                *failures += 1;
                crate::progress::say(format!(
                    "reshard: move {}: fence lowered ({why}); catching up again",
                    m.id
                ));
                if *failures >= MAX_FENCE_ATTEMPTS {
                    anyhow::bail!(
                        "move {}: {failures} fence attempts failed (last: {why}); the job is \
                         resumable",
                        m.id
                    );
                }
            }
        }
        Ok(())
    }

    /// Verifies move `mi` outside the fence, then makes one fenced cutover attempt. Outside the
    /// fence: a full checksum pass once per run (`passed` false), then the chunks touched
    /// since, so that the fence re-checks only what the last moments changed. Mismatches here
    /// are writes still in flight; their keys come back through the drain, and the fenced pass
    /// decides. Returns what the fenced drain applied, for the other moves of the source.
    async fn attempt(
        &self,
        mi: usize,
        max_fence: Duration,
        passed: bool,
        touched: &mut verify::Touched,
    ) -> Result<(Cutover, Option<Drained>)> {
        let scope = if passed {
            verify::Scope::Touched(touched)
        } else {
            verify::Scope::Full
        };
        let fresh = !passed && self.pass_is_new(mi).await?;
        // Before the fence the passes wait on the job's throttle, like the copy.
        let v = verify::Verifier {
            paced: true,
            ..self.verifier()
        };
        crate::signals::or_hard_stop(verify::verify_move(&v, &self.moves[mi], scope)).await?;
        if fresh || passed {
            touched.clear();
        }
        self.cutover(mi, max_fence, touched).await
    }

    /// Records the rate one catch-up pass applied `shard`'s logs at, for `switch --dry-run`:
    /// only from passes with enough entries to time (an idle pass says nothing of the rate),
    /// and at most every few seconds per shard, to keep catalog writes off the hot loop.
    async fn note_drain_rate(
        &self,
        shard: &str,
        entries: u64,
        secs: f64,
        noted: &mut HashMap<String, Instant>,
    ) {
        const MIN_ENTRIES: u64 = 20;
        const EVERY: Duration = Duration::from_secs(5);
        if entries < MIN_ENTRIES || noted.get(shard).is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        noted.insert(shard.to_string(), Instant::now());
        let rate = (entries as f64 / secs).round() as u64;
        if let Err(e) = self.catalog.record_drain_rate(self.job, shard, rate).await {
            crate::progress::say(format!("reshard: warning: {e:#}"));
        }
    }

    /// One fenced cutover attempt of move `mi`. `since`: keys touched since the move's chunk
    /// checksums were last recorded (grows with what the fenced drain applies).
    pub async fn cutover(
        &self,
        mi: usize,
        max_fence: Duration,
        since: &mut verify::Touched,
    ) -> Result<(Cutover, Option<Drained>)> {
        let m = self.moves[mi].clone();
        let pair = self.pairs[mi];
        let dst = self.backend(Side::To, &m.destination)?;
        let fence = match self.raise(mi, max_fence).await? {
            Ok(f) => f,
            Err(why) => return Ok((Cutover::Aborted(why), None)),
        };
        failpoint::hit("fence_raised");
        let drained = match crate::signals::or_hard_stop(self.drain(&m.source, true)).await {
            Ok(d) => d,
            Err(e) => {
                self.lower(fence, &format!("drain failed: {e:#}")).await?;
                return Err(e);
            }
        };
        self.add_touched(since, &drained, mi);
        let over = |what: &str| {
            let ms = fence.at.elapsed().as_millis();
            (ms > max_fence.as_millis())
                .then(|| format!("{what} ran past --max-fence ({ms} ms > {max_fence:?})"))
        };
        if let Some(why) = over("the drain") {
            self.lower(fence, &why).await?;
            self.trim(&m.source, &drained).await?;
            return Ok((Cutover::Aborted(why), Some(drained)));
        }
        let v = self.verifier();
        let fenced = verify::verify_move(&v, &m, verify::Scope::Touched(since));
        let report = match crate::signals::or_hard_stop(fenced).await {
            Ok(r) => r,
            Err(e) => {
                self.lower(fence, &format!("verification failed: {e:#}"))
                    .await?;
                return Err(e);
            }
        };
        since.clear();
        if !report.ok {
            let why = describe_report(&report);
            self.lower(fence, &format!("verification mismatch: {why}"))
                .await?;
            self.trim(&m.source, &drained).await?;
            return Err(Stop::Mismatch(format!("move {}: {why}", m.id)).into());
        }
        if let Some(why) = over("the drain and verification") {
            self.lower(fence, &why).await?;
            self.trim(&m.source, &drained).await?;
            return Ok((Cutover::Aborted(why), Some(drained)));
        }
        failpoint::hit("before_flip");
        let fence_ms = self.flip(fence).await?;
        failpoint::hit("after_flip");
        // Up only after a rollback of this move; the destination now owns the keys.
        set_fence(dst.as_ref(), pair, &m.id, false).await?;
        self.trim(&m.source, &drained).await?;
        Ok((Cutover::Flipped { fence_ms }, Some(drained)))
    }

    /// Raises move `mi`'s fence on its source, state `fencing` first: when the fence went up,
    /// or why not (the fence is down and the reason recorded). A lock wait past its bound or an
    /// abandoned wait is an error.
    async fn raise(&self, mi: usize, max_fence: Duration) -> Result<Result<Raised, String>> {
        let m = &self.moves[mi];
        let pair = self.pairs[mi];
        let src = self.backend(Side::From, &m.source)?;
        self.catalog
            .set_move_state(self.job, &m.id, MoveState::Fencing, None)
            .await?;
        self.catalog.count_fence_attempt(self.job, &m.id).await?;
        // Bounded like every fence statement: an application transaction holding the fence
        // row (one that wrote the move's keys, left idle) is named, waited out between attempts
        // and, past the bound, fails the job as resumable. The fence is up from the attempt
        // that succeeds.
        let raised = crate::lockwait::bounded(
            &format!("shard {}: raising the fence of {}", m.source, m.id),
            || {
                let (src, id) = (&src, &m.id);
                async move {
                    let at = Instant::now();
                    src.raise_fence(pair, id, max_fence)
                        .await
                        .map(|()| Raised { mi, at })
                }
            },
        )
        .await;
        match raised {
            Ok(f) => Ok(Ok(f)),
            Err(e) => {
                // The UPDATE did not commit; lowering is a no-op kept for certainty.
                let why = format!("raising the fence: {e:#}");
                self.lower(
                    Raised {
                        mi,
                        at: Instant::now(),
                    },
                    &why,
                )
                .await?;
                if crate::lockwait::blocked(&e).is_some() || crate::lockwait::is_aborted(&e) {
                    return Err(e);
                }
                Ok(Err(why))
            }
        }
    }

    /// The flip of a raised fence: one catalog transaction, after which the destination owns
    /// the move's keys and the source's fence stays up against writers that still route there.
    /// The fence time in milliseconds.
    async fn flip(&self, fence: Raised) -> Result<u64> {
        let id = &self.moves[fence.mi].id;
        let fence_ms = fence.at.elapsed().as_millis() as u64;
        retry("catalog: flipping", || {
            self.catalog.flip(self.job, id, true, fence_ms)
        })
        .await?;
        Ok(fence_ms)
    }

    /// Lowers a raised fence without a flip: the source keeps the move's keys, and the move
    /// catches up again.
    async fn lower(&self, fence: Raised, why: &str) -> Result<()> {
        let mi = fence.mi;
        let m = &self.moves[mi];
        let src = self.backend(Side::From, &m.source)?;
        set_fence(src.as_ref(), self.pairs[mi], &m.id, false).await?;
        self.catalog
            .event(self.job, Some(&m.id), "fence_aborted", why)
            .await?;
        self.catalog
            .set_move_state(self.job, &m.id, MoveState::CatchingUp, Some(why))
            .await?;
        Ok(())
    }

    async fn trim(&self, shard: &str, d: &Drained) -> Result<()> {
        for (ti, seqs) in &d.seqs {
            if !seqs.is_empty() {
                self.delete_entries(shard, *ti, seqs).await?;
            }
        }
        Ok(())
    }

    /// The checksum engine with chunks small enough that re-checking a touched chunk under
    /// the fence costs milliseconds, not the half second a standalone `verify` aims for.
    fn verifier(&self) -> verify::Verifier<'_> {
        verify::Verifier {
            ctx: self.ctx,
            catalog: self.catalog,
            job: self.job,
            options: verify::Options {
                target_chunk_ms: 30,
                max_chunk_rows: 5000,
                ..verify::Options::default()
            },
            stop: None,
            progress: None,
            paced: false,
        }
    }

    /// Whether `Scope::Full` on move `mi` starts a new pass (every table's last pass finished
    /// or none exists) rather than resuming one.
    async fn pass_is_new(&self, mi: usize) -> Result<bool> {
        for t in &self.ctx.tables {
            let p = self
                .catalog
                .verify_progress(self.job, &self.moves[mi].id, &t.name)
                .await?;
            if p.is_some_and(|p| !p.done) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn add_touched(&self, into: &mut verify::Touched, d: &Drained, mi: usize) {
        for (t, pks) in d.touched.get(&mi).into_iter().flatten() {
            into.entry(self.ctx.tables[*t].name.clone())
                .or_default()
                .extend(pks.iter().cloned());
        }
    }

    /// The verification before a flip back: the move's rows with these keys (those the fenced
    /// reverse drain applied) are the same at both ends. Row by row: the chunk checksums
    /// recorded before the flip are stale by now, and the reverse sync kept the rest in step.
    pub async fn compare_rows(
        &self,
        mi: usize,
        keys: &BTreeMap<usize, Vec<PkValues>>,
    ) -> Result<Mismatches> {
        let mut out = Vec::new();
        for (ti, pks) in keys {
            for (pk, what) in self.compare(mi, *ti, pks).await? {
                out.push((self.ctx.tables[*ti].name.clone(), pk_id(&pk), what));
            }
        }
        Ok(out)
    }

    /// Rows of move `mi` in table `ti` with these keys that differ between source and
    /// destination.
    async fn compare(
        &self,
        mi: usize,
        ti: usize,
        pks: &[PkValues],
    ) -> Result<Vec<(PkValues, &'static str)>> {
        if pks.is_empty() {
            return Ok(Vec::new());
        }
        let m = &self.moves[mi];
        let t = &self.ctx.tables[ti];
        let src = self.backend(Side::From, &m.source)?;
        let dst = self.backend(Side::To, &m.destination)?;
        let schema = self
            .ctx
            .schema(Side::From, &m.source, &t.name)
            .with_context(|| format!("shard {}: table {} not described", m.source, t.name))?;
        let key_i = schema.column_index(&t.key).context("no key column")?;
        let pk_i: Vec<usize> = schema
            .primary_key
            .iter()
            .filter_map(|c| schema.column_index(c))
            .collect();
        let mut uniq = HashSet::new();
        let pks: Vec<PkValues> = pks
            .iter()
            .filter(|p| uniq.insert(pk_id(p)))
            .cloned()
            .collect();
        let index = |rows: Vec<Vec<Value>>| -> Result<HashMap<String, Vec<Value>>> {
            let mut map = HashMap::new();
            for r in rows {
                let ours = match r.get(key_i).and_then(Value::as_key) {
                    Some(k) => self.move_of(&k)? == Some(mi),
                    None => false,
                };
                if ours {
                    let pk: PkValues = pk_i.iter().map(|&i| r[i].clone()).collect();
                    map.insert(pk_id(&pk), r);
                }
            }
            Ok(map)
        };
        let a = index(src.fetch(schema, &pks).await?)?;
        let b = index(dst.fetch(schema, &pks).await?)?;
        let mut bad = Vec::new();
        for pk in pks {
            let id = pk_id(&pk);
            match (a.get(&id), b.get(&id)) {
                (Some(x), Some(y)) if x != y => bad.push((pk, "differs")),
                (Some(_), None) => bad.push((pk, "missing at the destination")),
                (None, Some(_)) => bad.push((pk, "extra at the destination")),
                _ => {}
            }
        }
        Ok(bad)
    }

    /// Rollback of one flipped move: the cutover in reverse. Raise the move's fence on the
    /// destination, drain reverse entries to the source, verify, flip back (one catalog
    /// transaction), then lower the source's fence. The destination's fence stays up so that
    /// writers still routing there are refused until they refresh.
    pub async fn rollback(&mut self, mi: usize, max_fence: Duration) -> Result<Cutover> {
        let m = self.moves[mi].clone();
        let pair = self.pairs[mi];
        let src = self.backend(Side::From, &m.source)?;
        let dst = self.backend(Side::To, &m.destination)?;
        self.catalog
            .set_move_state(self.job, &m.id, MoveState::RollingBack, None)
            .await?;
        let started = Instant::now();
        let lower = |why: String| async {
            set_fence(dst.as_ref(), pair, &m.id, false).await?;
            self.catalog
                .event(self.job, Some(&m.id), "fence_aborted", &why)
                .await?;
            self.catalog
                .set_move_state(self.job, &m.id, MoveState::Flipped, Some(&why))
                .await?;
            anyhow::Ok(Cutover::Aborted(why))
        };
        if let Err(e) = dst.raise_fence(pair, &m.id, max_fence).await {
            return lower(format!("raising the fence: {e:#}")).await;
        }
        failpoint::hit("rollback_fence_raised");
        // Up until the flip back or lowered: an error here must not leave the new owner
        // refusing the move's writers until some later run reconciles.
        let fenced = async {
            if failpoint::triggered("rollback_drain_fails") {
                anyhow::bail!("failpoint rollback_drain_fails");
            }
            let drained = self.drain(&m.destination, true).await?;
            let keys = drained.touched.get(&mi).cloned().unwrap_or_default();
            let bad = self.compare_rows(mi, &keys).await?;
            anyhow::Ok((drained, bad))
        };
        let (drained, bad) = match crate::signals::or_hard_stop(fenced).await {
            Ok(r) => r,
            Err(e) => {
                lower(format!("drain or check failed: {e:#}")).await?;
                return Err(e);
            }
        };
        if !bad.is_empty() {
            self.trim(&m.destination, &drained).await?;
            let why = describe_mismatches(&bad);
            lower(format!("verification mismatch: {why}")).await?;
            return Err(Stop::Mismatch(format!("move {}: {why}", m.id)).into());
        }
        let ms = started.elapsed().as_millis() as u64;
        if ms > max_fence.as_millis() as u64 {
            self.trim(&m.destination, &drained).await?;
            return lower(format!("the drain ran past --max-fence ({ms} ms)")).await;
        }
        failpoint::hit("before_flip_back");
        retry("catalog: flipping back", || {
            self.catalog.flip(self.job, &m.id, false, ms)
        })
        .await?;
        failpoint::hit("after_flip_back");
        self.flipped[mi] = false;
        set_fence(src.as_ref(), pair, &m.id, false).await?;
        self.trim(&m.destination, &drained).await?;
        Ok(Cutover::Flipped { fence_ms: ms })
    }
}

fn describe_report(r: &verify::MoveReport) -> String {
    let parts: Vec<String> = r
        .tables
        .iter()
        .filter(|t| !t.diff.is_empty())
        .map(|t| {
            let d = &t.diff;
            let mut s = format!(
                "{}: {} missing at the destination, {} extra, {} differing",
                t.table, d.missing_count, d.extra_count, d.differing_count
            );
            let first = d
                .missing
                .first()
                .or(d.extra.first())
                .or(d.differing.first().map(|x| &x.pk));
            if let Some(pk) = first {
                s.push_str(&format!(" (first: {pk})"));
            }
            s
        })
        .collect();
    if parts.is_empty() {
        return "checksums differ".into();
    }
    parts.join("; ")
}

fn describe_mismatches(bad: &Mismatches) -> String {
    let shown: Vec<String> = bad
        .iter()
        .take(5)
        .map(|(t, pk, what)| format!("{t} {pk}: {what}"))
        .collect();
    format!(
        "{} row(s) differ: {}{}",
        bad.len(),
        shown.join("; "),
        if bad.len() > 5 { "; ..." } else { "" }
    )
}

/// Move `mi`'s fence, up on its source since `at`. Its only exits are `Online::flip` and
/// `Online::lower`, which consume it; an error that drops it leaves the fence up, as a crash
/// would, for the next run to reconcile (docs/online.md).
#[must_use = "a raised fence is flipped or lowered"]
struct Raised {
    mi: usize,
    at: Instant,
}

/// `Backend::set_fence`, retried: it sets the row outright (idempotent), and a connection
/// dropped while lowering a fence otherwise failed the job with the fence up.
pub(crate) async fn set_fence(
    b: &dyn crate::backend::Backend,
    pair: crate::triggers::FencePair,
    move_id: &str,
    on: bool,
) -> Result<()> {
    if !on && crate::signals::is_hard_stopped() {
        // Lowering after a second signal: one attempt, under the lock timeout, and not
        // abandoned, or the move's writers stay refused until the next run reconciles.
        return b.set_fence(pair, move_id, false).await;
    }
    crate::lockwait::bounded(
        &format!("shard {}: setting the fence of {move_id}", b.shard()),
        || b.set_fence(pair, move_id, on),
    )
    .await
}
