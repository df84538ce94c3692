//! `node-agent`: the process a compute provider runs. It will register with the coordinator,
//! heartbeat, take jobs over NATS and serve models; the job executor is built
//! ([`aiforge_node_agent::executor`]), the rest is not yet, so the binary only states what it is.

fn main() {
    println!(
        "node-agent {}: the job executor is built; registration, job intake and model serving are not yet",
        env!("CARGO_PKG_VERSION")
    );
}
