//! The viewer page in headless Chromium: runs `tests/viewer/viewer.test.mjs` with Node's
//! test runner against this build of auditd.
//!
//! Needs Node.js, Debian's `chromium` (`apt-get install chromium`; or set CHROMIUM to a
//! Chromium binary), and `psql`. Installs playwright-core from the npm registry into
//! `tests/viewer/node_modules` on first use (`npm ci`).

use std::path::Path;
use std::process::Command;

#[test]
fn the_viewer_works_in_a_real_browser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/viewer");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium package (apt-get install chromium) \
         or set CHROMIUM"
    );
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node.js) is needed for the browser test");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec", "viewer.test.mjs"])
        .current_dir(&dir)
        .env("AUDITD_BIN", env!("CARGO_BIN_EXE_auditd"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node is needed for the browser test");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "browser tests failed:\n{report}");
}
