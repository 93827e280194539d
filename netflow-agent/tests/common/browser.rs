//! Debian's Chromium, headless, for the tests that open the report page.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The browser; `None` (a skip) when it is missing outside CI, a failure
/// under `CI=true`.
pub fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("chromium is not installed (cargo xtask setup installs it)");
    }
    eprintln!("skipping: chromium is not installed");
    None
}

/// Chromium with the flags a machine without network or display needs,
/// and a profile of its own in `profile`.
pub fn command(chromium: &Path, profile: &Path) -> Command {
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// A 1400x1000 screenshot of `page` (after its script ran) into `png`,
/// checked to be a picture.
pub fn screenshot(chromium: &Path, page: &Path, png: &Path) {
    let profile = png.with_extension("profile");
    let output = command(chromium, &profile)
        .args(["--window-size=1400,1000", "--virtual-time-budget=10000"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "{output:?}");
    let bytes = std::fs::read(png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{}: {} bytes",
        png.display(),
        bytes.len()
    );
}
