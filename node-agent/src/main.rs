//! `node-agent`: the process a compute provider runs. It will register with the coordinator,
//! heartbeat, take jobs over NATS and serve models; for now it only states what it is, so that
//! the workspace layout of the design card is complete.

fn main() {
    println!(
        "node-agent {}: registration, jobs and model serving are not built yet",
        env!("CARGO_PKG_VERSION")
    );
}
