// `sqlx::migrate!` embeds the migrations at build time, but on stable Rust it cannot tell Cargo to
// watch the directory, so a new migration file would not be picked up without this (the build
// script sqlx's documentation gives for the purpose).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
