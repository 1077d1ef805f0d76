//! The `floe` binary run as a user runs it, against a data directory.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub(crate) fn floe(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("FLOE_CONFIG")
        .output()
        .expect("the floe binary runs")
}

/// The standard output of a run that must succeed.
pub(crate) fn ok(data: &Path, args: &[&str]) -> String {
    let out = floe(data, args);
    assert!(
        out.status.success(),
        "floe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("floe prints UTF-8")
}
