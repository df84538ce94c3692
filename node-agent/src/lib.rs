//! The node agent a compute provider runs: the job executor ([`executor`]), which runs one job
//! in a locked-down container (or, for development only, as a plain process), and the worker
//! ([`worker`]) that takes jobs from the coordinator, runs them and reports. Model serving over
//! NATS lives in `aiforge-inference` (`node-agent serve`); [`placement`] is `serve --auto`: the
//! models the coordinator places on the node, downloaded, verified, loaded and unloaded.

pub mod executor;
pub mod placement;
pub mod worker;
