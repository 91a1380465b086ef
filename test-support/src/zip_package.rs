//! Deployment zips as their platform unpacks them: the entries with their Unix modes, extracted
//! with those modes applied (the Functions host and Lambda both run an executable from the
//! unpacked zip; Python's `extractall` would drop the exec bit). Uses `python3`'s zipfile, which
//! the packaging scripts also use.

use std::path::Path;
use std::process::Command;

/// Unpacks `zip` into `dest` and returns its entries as (name, Unix mode bits).
pub fn unpack(zip: &Path, dest: &Path) -> Vec<(String, u32)> {
    let script = r#"
import json, os, sys, zipfile
zip, dest = sys.argv[1], sys.argv[2]
entries = []
with zipfile.ZipFile(zip) as z:
    for info in z.infolist():
        mode = (info.external_attr >> 16) & 0o7777
        entries.append([info.filename, mode])
        path = z.extract(info, dest)
        if mode:
            os.chmod(path, mode)
print(json.dumps(entries))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(zip)
        .arg(dest)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("entries JSON")
}
