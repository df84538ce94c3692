// `sqlx::migrate!` embeds ../migrations at compile time; without this, a new migration file
// does not rebuild the crate on stable Rust (sqlx's documented fix).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
