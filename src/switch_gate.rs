//! Which moves of a running job may flip now: every move of a job that flips by itself; of a
//! job started with `apply --switch manual`, those its switch request names
//! (`jobs.switch_request`, src/catalog/requests.rs), none before the first. The run reads the request once when it
//! starts and then each time it polls the job's row, so a later `switch --move` widens it.

use std::sync::Mutex;

use crate::catalog::Switch;

#[derive(Debug)]
pub struct SwitchGate(Mutex<Option<Switch>>);

impl SwitchGate {
    /// Every move may flip.
    pub fn open() -> SwitchGate {
        SwitchGate(Mutex::new(Some(Switch::All)))
    }

    /// The gate of a run of a job that switches manually or not, with its pending request.
    pub fn new(manual: bool, switch: Option<Switch>) -> SwitchGate {
        if !manual {
            return SwitchGate::open();
        }
        SwitchGate(Mutex::new(switch))
    }

    fn get(&self) -> std::sync::MutexGuard<'_, Option<Switch>> {
        // Nothing panics while holding it; a poisoned lock still holds a whole value.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn allows(&self, move_id: &str) -> bool {
        self.get().as_ref().is_some_and(|s| s.allows(move_id))
    }

    /// Widens the gate to what `asked` lets flip; true when that changed it.
    pub fn widen(&self, asked: Switch) -> bool {
        let mut g = self.get();
        let next = match g.clone() {
            Some(before) => before.union(asked),
            None => asked,
        };
        let changed = g.as_ref() != Some(&next);
        *g = Some(next);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(text: &str) -> Switch {
        Switch::parse(text).expect("a switch")
    }

    #[test]
    fn a_manual_job_flips_only_what_was_switched() {
        let g = SwitchGate::new(true, None);
        assert!(!g.allows("m1"));
        assert!(g.widen(sw("switch m1")));
        assert!(g.allows("m1") && !g.allows("m2"));
        assert!(
            !g.widen(sw("switch m1")),
            "the same request again changes nothing"
        );
        assert!(g.widen(sw("switch m2")));
        assert!(g.allows("m1") && g.allows("m2") && !g.allows("m3"));
        assert!(g.widen(sw("switch")));
        assert!(g.allows("m3"));
    }

    #[test]
    fn an_automatic_job_and_a_recorded_switch_open_the_gate() {
        assert!(SwitchGate::new(false, None).allows("m1"));
        assert!(SwitchGate::open().allows("m9"));
        assert!(SwitchGate::new(true, Switch::parse("switch")).allows("m9"));
        let g = SwitchGate::new(true, Switch::parse("switch m2"));
        assert!(g.allows("m2") && !g.allows("m1"));
    }
}
