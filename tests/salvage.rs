//! `cellfs-fileserver salvage`: finds damage between redb metadata and data
//! files, repairs it with --repair, and refuses to run beside a server.

mod common;

use cellfs::{Cell, Mount, bin, output_with_timeout};
use common::pattern;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn salvage(data: &Path, repair: bool) -> (Output, String) {
    let mut cmd = Command::new(bin("cellfs-fileserver"));
    cmd.arg("salvage").arg("--data").arg(data);
    if repair {
        cmd.arg("--repair");
    }
    let out = output_with_timeout(&mut cmd, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn salvage_finds_and_repairs_damage_and_refuses_a_served_folder() {
    let mut cell = Cell::new();
    {
        let m = Mount::new(&cell);
        fs::create_dir(m.path().join("d")).unwrap();
        fs::write(m.path().join("d/big"), pattern(64 << 10, 1)).unwrap();
        fs::write(m.path().join("d/small"), b"small").unwrap();
    }
    let (out, text) = salvage(cell.data_dir(), false);
    assert!(
        !out.status.success(),
        "salvage must refuse while the server runs: {text}"
    );
    assert!(text.contains("in use"), "{text}");
    cell.kill();
    let (out, text) = salvage(cell.data_dir(), false);
    assert!(out.status.success() && text.contains("all clean"), "{text}");

    // Damage: an orphan data file, and a data file cut short.
    let data = cell.data_dir().join("volumes/1/data");
    fs::write(data.join("9999.1"), b"junk").unwrap();
    let big = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::metadata(p).unwrap().len() == 64 << 10)
        .expect("the 64 KiB data file");
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(1000)
        .unwrap();

    let (out, text) = salvage(cell.data_dir(), false);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("OrphanDataFile") && text.contains("WrongDataLength"),
        "{text}"
    );
    assert!(data.join("9999.1").exists(), "a check alone changes nothing");

    let (out, text) = salvage(cell.data_dir(), true);
    assert!(out.status.success() && text.contains("all clean now"), "{text}");
    assert!(!data.join("9999.1").exists());
    let (out, text) = salvage(cell.data_dir(), false);
    assert!(out.status.success() && text.contains("all clean"), "{text}");

    // The repaired cell serves: sizes agree with the data that is there.
    cell.start();
    let m = Mount::new(&cell);
    assert_eq!(
        fs::read(m.path().join("d/big")).unwrap(),
        pattern(64 << 10, 1)[..1000].to_vec()
    );
    assert_eq!(fs::read(m.path().join("d/small")).unwrap(), b"small");
}
