//! Build script of the functions that parse no untrusted media in C: their
//! binaries are linked as plain executables (`-no-pie`), not position
//! independent ones. A PIE's loader first applies ~32,000 relocations to its
//! tables, writing ~140 pages that each fault on a cold start; a plain
//! executable needs none (docs/performance.md, "Plain executables"). Traded:
//! the executable's own code sits at a fixed address (its libraries, stack and
//! heap are still randomised). `thumbnails` and `reconcile`, which decode
//! images with libwebp, stay position independent.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
