//! The node agent a compute provider runs. For now: the job executor ([`executor`]), which runs
//! one job in a locked-down container (or, for development only, as a plain process). NATS,
//! registration with the coordinator and model serving arrive in later steps and will live in
//! their own modules; nothing here talks to the network except the container engine's API.

pub mod executor;
