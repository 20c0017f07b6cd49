//! Validation of an engine against reference dumps: the checkpoint table (`spec`), the dumps
//! (`reference`), element-wise comparison (`compare`), our engine as a runner (`runner`), the
//! systematic error below the noise (`systematic`), the run → checks → rows pipeline (`run`), the first-failure searches (`search`), the diagnosis
//! of a failing tensor (`diagnose`), the aggregated result (`result`) and its renderers
//! (`report`).

pub(crate) mod compare;
pub(crate) mod corpus;
pub(crate) mod cost;
pub(crate) mod diagnose;
pub mod reference;
pub(crate) mod report;
pub(crate) mod result;
pub(crate) mod run;
pub(crate) mod runner;
pub(crate) mod search;
pub(crate) mod spec;
pub(crate) mod systematic;
