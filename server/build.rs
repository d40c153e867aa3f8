//! Stamps `--version` with the commit this binary is built from: sets
//! `PEERDEX_VERSION`, e.g. `0.1.0 (git 7042f62)` (see peerdex-build-info).

fn main() {
    peerdex_build_info::emit();
}
