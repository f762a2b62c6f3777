//! The planner: a pure function from two maps to a plan. No I/O.

use crate::error::InputError;
use crate::map::Map;
use crate::plan::Plan;

/// Diffs two maps into a plan. Not implemented yet.
pub fn plan(from: &Map, to: &Map) -> Result<Plan, InputError> {
    let _ = (from, to);
    Err(InputError::one("planning is not implemented yet"))
}
