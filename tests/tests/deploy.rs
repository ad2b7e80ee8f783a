//! The shipped systemd unit (`ops/systemd/confstore.service`) is one systemd accepts without
//! a warning (`systemd-analyze verify`, with the two binaries it runs replaced by
//! /bin/true) and is hardened: `systemd-analyze security --offline` rates its exposure at
//! most 2.0 ("OK") on its 0-10 scale.

use std::path::Path;
use std::process::Command;

fn unit_with_stand_in_binaries(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/systemd/confstore.service"))
        .expect("ops/systemd/confstore.service");
    let path = dir.join("confstore.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/litestream", "/bin/true").replace("/usr/local/bin/confstore", "/bin/true"),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_stand_in_binaries(dir.path());
    let verify =
        Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (Debian: systemd)");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&security.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for confstore.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}\n{}", String::from_utf8_lossy(&security.stderr)));
    eprintln!("systemd exposure level of ops/systemd/confstore.service: {level}");
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}
