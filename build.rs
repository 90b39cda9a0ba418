//! Rebuilds the binary when a migration file changes: `sqlx::migrate!` embeds them at compile
//! time and would otherwise keep a stale set.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
