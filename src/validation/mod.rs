//! Validation of an engine against reference dumps: the checkpoint table (`spec`), the dumps
//! (`reference`), element-wise comparison (`compare`), our engine as a runner (`runner`), the
//! run → checks → rows pipeline (`run`), the first-failure searches (`search`), the diagnosis
//! of a failing tensor (`diagnose`), the aggregated result (`result`) and its renderers
//! (`report`).

pub mod compare;
pub mod diagnose;
pub mod reference;
pub mod report;
pub mod result;
pub mod run;
pub mod runner;
pub mod search;
pub mod spec;
